"""json-schema: the candidate's answer is a JSON value that satisfies a JSON schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from threadloom.errors import ConfigError
from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.base import passed
from threadloom.verifiers.extract import extract_answer

MAX_JSON_CHARS = 100_000
"""Longer answers are not parsed (a model can write any amount of text)."""
_SHOWN_CHARS = 160

__all__ = ["JsonSchemaVerifier", "parse_json_answer"]


def parse_json_answer(text: str) -> tuple[Any, str | None]:
    """The JSON value written in `text` (the whole text, else its outermost braces).

    Returns:
        The value and None, or None and why it could not be read.
    """
    if len(text) > MAX_JSON_CHARS:
        return None, f"the answer is {len(text)} characters, over {MAX_JSON_CHARS}"
    error = "no JSON found"
    for source in (text.strip(), extract_answer(text, "json")):
        if not source:
            continue
        try:
            return json.loads(source), None
        except RecursionError:
            return None, "the JSON is nested too deeply to read"
        except ValueError as exc:
            error = f"not JSON ({str(exc)[:_SHOWN_CHARS]})"
    return None, error


class JsonSchemaVerifier:
    """Scores 1.0 when the answer is JSON that satisfies the schema, else 0.0 with the reason.

    Args:
        schema: A JSON schema (a dict), a path to a JSON file holding one, or its JSON text.
            None uses each problem's `metadata["json_schema"]`, and without one only checks
            that the answer is JSON.
        name: The score's name.

    Raises:
        ConfigError: the schema cannot be read or is not a valid JSON schema.
    """

    def __init__(
        self, schema: dict[str, Any] | str | Path | None = None, *, name: str = "json-schema"
    ) -> None:
        self.name = name
        self.schema = _load_schema(schema) if schema is not None else None

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        value, error = parse_json_answer(candidate.text)
        if error is not None:
            return passed(False, error)
        schema = self.schema
        if schema is None and "json_schema" in problem.metadata:
            schema = _checked(problem.metadata["json_schema"], "the problem's json_schema")
        if schema is None:
            return passed(True, "valid JSON (no schema to check against)")
        import jsonschema

        validator = jsonschema.validators.validator_for(schema)(schema)
        try:
            failure = jsonschema.exceptions.best_match(validator.iter_errors(value))
        except RecursionError:
            return passed(False, "the JSON is nested too deeply to check")
        if failure is None:
            return passed(True, "satisfies the schema")
        where = "/".join(str(p) for p in failure.absolute_path) or "the top level"
        return passed(False, f"at {where}: {failure.message[:_SHOWN_CHARS]}")


def _load_schema(schema: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(schema, dict):
        return _checked(schema, "the schema")
    text = str(schema).strip()
    if not text.startswith("{"):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the JSON schema file {str(path)!r} ({exc.strerror}); pass a path "
                "to a .json file or the schema itself as JSON text"
            ) from None
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"the JSON schema is not valid JSON ({exc})") from None
    return _checked(loaded, "the schema")


def _checked(schema: Any, what: str) -> dict[str, Any]:
    import jsonschema

    if not isinstance(schema, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(schema).__name__}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise ConfigError(f"{what} is not a valid JSON schema: {exc.message}") from None
    return schema
