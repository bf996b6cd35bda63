"""Verifier kinds by name, resolved lazily: 'numeric', 'math', 'regex:PATTERN', 'contains:a,b',
'code' (or 'code:guards' for the weaker sandbox)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from threadloom.errors import ConfigError
from threadloom.verifiers.base import Verifier, make_total

VERIFIERS: dict[str, str] = {
    "numeric": "threadloom.verifiers.numeric:NumericVerifier",
    "math": "threadloom.verifiers.math:MathVerifier",
    "regex": "threadloom.verifiers.patterns:RegexVerifier",
    "contains": "threadloom.verifiers.patterns:ContainsVerifier",
    "code": "threadloom.verifiers.code:CodeVerifier",
    "game24": "threadloom.verifiers.game24:Game24Verifier",
    "rules": "threadloom.verifiers.rules:RulesVerifier",
    "self-judge": "threadloom.verifiers.prm:SelfJudgePRM",
    "json-schema": "threadloom.verifiers.json_schema:JsonSchemaVerifier",
    "llm-judge": "threadloom.verifiers.llm_judge:LLMJudge",
}
"""name -> 'module:Class'. A new verifier registers here; nothing else changes."""

_NEEDS_ARGUMENT = {"regex": "regex:^\\d+$", "contains": "contains:Paris,France"}


def make_verifier(spec: str | Verifier, **options: Any) -> Verifier:
    """Build a verifier from 'name' or 'name:argument', or pass an instance through.

    Either way its `score` is made total (see `make_total`): an untyped exception raised on a
    hostile answer becomes a failed Score instead of ending the run.
    """
    if not isinstance(spec, str):
        if not isinstance(spec, Verifier):
            raise ConfigError(
                f"a verifier must be a name such as 'numeric' or an object with a name and an "
                f"async score(problem, candidate); got {type(spec).__name__}"
            )
        return make_total(spec)
    return make_total(_build(spec, **options))


def _build(spec: str, **options: Any) -> Verifier:
    name, _, argument = spec.partition(":")
    name = name.strip().lower().replace("_", "-")
    target = VERIFIERS.get(name)
    if target is None:
        raise ConfigError(
            f"unknown verifier {spec!r}; valid verifiers: {', '.join(sorted(VERIFIERS))} "
            "(regex and contains take an argument, e.g. regex:^\\d+$ or contains:Paris)"
        )
    module, _, attr = target.partition(":")
    cls = getattr(import_module(module), attr)
    if name in _NEEDS_ARGUMENT:
        if not argument:
            raise ConfigError(
                f"the {name} verifier needs an argument, e.g. {_NEEDS_ARGUMENT[name]}"
            )
        if name == "regex":
            return cls(argument, **options)  # type: ignore[no-any-return]
        return cls([k for k in argument.split(",")], **options)  # type: ignore[no-any-return]
    if name == "llm-judge" and argument:
        # 'llm-judge:openai:http://host/v1#model=judge': judge with that worker
        return cls(worker=argument, **options)  # type: ignore[no-any-return]
    if name == "json-schema" and argument:
        # 'json-schema:schema.json' or the schema inline: 'json-schema:{"type": "object"}'
        return cls(argument, **options)  # type: ignore[no-any-return]
    if name == "code" and argument:
        # 'code:guards' opts in to the weaker Python-guard sandbox; 'code:bwrap' is the default
        return cls(isolation=argument.strip().lower(), **options)  # type: ignore[no-any-return]
    if argument:
        raise ConfigError(f"the {name} verifier takes no argument (got {argument!r})")
    return cls(**options)  # type: ignore[no-any-return]
