"""rules: instruction-following checks (word counts, required words, JSON keys, case, ...).

A problem lists its rules in `metadata["rules"]` as dicts with a "kind", e.g.
`{"kind": "max_words", "count": 20}`. They are validated against the models below, so a
misspelt kind or field is reported as a dataset error rather than scored.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from threadloom.errors import ConfigError
from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.extract import extract_answer, extract_code

__all__ = ["RULE_KINDS", "Rule", "RuleOutcome", "RulesVerifier", "check_rules", "parse_rules"]

_BULLET = re.compile(r"^[ \t]*(?:[-*•]|\d+\.)[ \t]+\S", re.MULTILINE)
_WORD = re.compile(r"\w+(?:['’-]\w+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s+|$)")
_MAX_JSON_STARTS = 100
"""Positions of "{" tried when looking for a JSON object inside prose."""


@dataclass(frozen=True)
class RuleOutcome:
    """The verdict of one rule on one text."""

    kind: str
    passed: bool
    detail: str


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def check(self, text: str) -> tuple[bool, str]:
        """Whether `text` follows the rule, and why (or why not)."""
        raise NotImplementedError  # abstract: every rule overrides it


class BulletCount(_Rule):
    """Exactly `count` bullet lines ("-", "*", "•" or "1." after optional spaces)."""

    kind: Literal["bullet_count"]
    count: int = Field(ge=0)
    """Number of bullet lines required."""

    def check(self, text: str) -> tuple[bool, str]:
        found = len(_BULLET.findall(text))
        return found == self.count, f"{found} bullet lines, {self.count} required"


class ContainsWord(_Rule):
    """The word (or phrase) appears, case-insensitively, as a whole word."""

    kind: Literal["contains_word"]
    word: str = Field(min_length=1)
    """The word that must appear."""

    def check(self, text: str) -> tuple[bool, str]:
        found = _has_word(text, self.word)
        return found, f"{self.word!r} {'appears' if found else 'is missing'}"


class ExcludesWord(_Rule):
    """The word (or phrase) does not appear as a whole word, in any case."""

    kind: Literal["excludes_word"]
    word: str = Field(min_length=1)
    """The word that must not appear."""

    def check(self, text: str) -> tuple[bool, str]:
        found = _has_word(text, self.word)
        return not found, f"{self.word!r} {'appears' if found else 'is absent'}"


class JsonKeys(_Rule):
    """The text holds a JSON object (fenced or not) with exactly these keys."""

    kind: Literal["json_keys"]
    keys: list[str]
    """The object's keys, in any order."""

    def check(self, text: str) -> tuple[bool, str]:
        obj = _find_json_object(text)
        if obj is None:
            return False, "no JSON object found"
        missing = sorted(set(self.keys) - set(obj))
        extra = sorted(set(obj) - set(self.keys))
        if not missing and not extra:
            return True, f"JSON object with keys {sorted(obj)}"
        return False, f"JSON keys: missing {missing}, unexpected {extra}"


class MaxWords(_Rule):
    """At most `count` words."""

    kind: Literal["max_words"]
    count: int = Field(ge=0)
    """Largest number of words allowed."""

    def check(self, text: str) -> tuple[bool, str]:
        words = _count_words(text)
        return words <= self.count, f"{words} words, at most {self.count} allowed"


class MinWords(_Rule):
    """At least `count` words."""

    kind: Literal["min_words"]
    count: int = Field(ge=0)
    """Smallest number of words required."""

    def check(self, text: str) -> tuple[bool, str]:
        words = _count_words(text)
        return words >= self.count, f"{words} words, at least {self.count} required"


class Lowercase(_Rule):
    """No uppercase letters."""

    kind: Literal["lowercase"]

    def check(self, text: str) -> tuple[bool, str]:
        upper = [c for c in text if c.isupper()]
        return (
            not upper,
            f"uppercase letters: {''.join(upper[:10])!r}" if upper else "all lowercase",
        )


class Uppercase(_Rule):
    """No lowercase letters."""

    kind: Literal["uppercase"]

    def check(self, text: str) -> tuple[bool, str]:
        lower = [c for c in text if c.islower()]
        return (
            not lower,
            f"lowercase letters: {''.join(lower[:10])!r}" if lower else "all uppercase",
        )


class StartsWith(_Rule):
    """The text, stripped of surrounding whitespace, starts with `text`."""

    kind: Literal["starts_with"]
    text: str = Field(min_length=1)
    """The required beginning (case-sensitive)."""

    def check(self, text: str) -> tuple[bool, str]:
        ok = text.strip().startswith(self.text)
        return ok, f"{'starts' if ok else 'does not start'} with {self.text!r}"


class EndsWith(_Rule):
    """The text, stripped of surrounding whitespace, ends with `text`."""

    kind: Literal["ends_with"]
    text: str = Field(min_length=1)
    """The required ending (case-sensitive)."""

    def check(self, text: str) -> tuple[bool, str]:
        ok = text.strip().endswith(self.text)
        return ok, f"{'ends' if ok else 'does not end'} with {self.text!r}"


class NoCommas(_Rule):
    """No commas at all."""

    kind: Literal["no_commas"]

    def check(self, text: str) -> tuple[bool, str]:
        commas = text.count(",")
        return commas == 0, f"{commas} commas" if commas else "no commas"


class SentenceCount(_Rule):
    """Exactly `count` sentences (split after . ! or ? followed by a space or the end)."""

    kind: Literal["sentence_count"]
    count: int = Field(ge=0)
    """Number of sentences required."""

    def check(self, text: str) -> tuple[bool, str]:
        pieces = _SENTENCE_END.split(text.strip())
        found = sum(1 for piece in pieces if any(c.isalnum() for c in piece))
        return found == self.count, f"{found} sentences, {self.count} required"


Rule = Annotated[
    BulletCount
    | ContainsWord
    | ExcludesWord
    | JsonKeys
    | MaxWords
    | MinWords
    | Lowercase
    | Uppercase
    | StartsWith
    | EndsWith
    | NoCommas
    | SentenceCount,
    Field(discriminator="kind"),
]
"""One instruction-following rule; the "kind" field picks the model."""

_RULE_LIST: TypeAdapter[list[Rule]] = TypeAdapter(list[Rule])
RULE_KINDS: tuple[str, ...] = tuple(
    get_args(model.model_fields["kind"].annotation)[0] for model in get_args(get_args(Rule)[0])
)
"""Every valid rule kind."""


def parse_rules(rules: Sequence[Mapping[str, Any] | _Rule]) -> list[Rule]:
    """Validate rule dicts into rule models.

    Raises:
        ConfigError: A rule has an unknown kind, a missing or unexpected field, or a bad value.
    """
    if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Sequence):
        raise ConfigError(f"rules must be a list of rule dicts, got {type(rules).__name__}")
    try:
        return _RULE_LIST.validate_python(list(rules))
    except ValidationError as exc:
        raise ConfigError(_explain(exc, rules)) from None


def check_rules(text: str, rules: Sequence[Mapping[str, Any] | _Rule]) -> list[RuleOutcome]:
    """Check `text` against each rule, in order.

    Args:
        text: The response to check.
        rules: Rule dicts such as `{"kind": "max_words", "count": 20}` (or rule models).

    Returns:
        One outcome per rule.

    Raises:
        ConfigError: A rule is malformed or of an unknown kind (a dataset bug, not a failed
            check).
    """
    outcomes = []
    for rule in parse_rules(rules):
        ok, detail = rule.check(text)
        outcomes.append(RuleOutcome(kind=rule.kind, passed=ok, detail=detail))
    return outcomes


class RulesVerifier:
    """Scores how many of the problem's rules (`metadata["rules"]`) the candidate follows.

    `Score.value` is the fraction of rules followed and `Score.passed` whether all are. A
    problem without rules scores 0 with a detail saying so; malformed rules raise
    `ConfigError`.

    Args:
        name: The verifier's name in `Candidate.scores`.
    """

    def __init__(self, *, name: str = "rules") -> None:
        self.name = name

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        rules = problem.metadata.get("rules")
        if not rules:
            return Score(value=0.0, passed=False, detail="the problem has no rules to check")
        outcomes = check_rules(candidate.text, rules)
        failed = [o for o in outcomes if not o.passed]
        value = (len(outcomes) - len(failed)) / len(outcomes)
        if not failed:
            return Score(value=1.0, passed=True, detail=f"all {len(outcomes)} rules followed")
        reasons = "; ".join(f"{o.kind}: {o.detail}" for o in failed)
        detail = f"failed {len(failed)}/{len(outcomes)}: {reasons}"
        return Score(value=value, passed=False, detail=detail)


def _explain(exc: ValidationError, rules: Sequence[Any]) -> str:
    problems = []
    bad_kind = False
    for error in exc.errors():
        loc = error["loc"]
        index = loc[0] if loc and isinstance(loc[0], int) else None
        rule = rules[index] if index is not None and index < len(rules) else None
        where = f"rule {index} {rule!r}" if index is not None else "rules"
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            bad_kind = True
            problems.append(f"{where} has a missing or unknown 'kind'")
        else:
            field_path = ".".join(str(part) for part in loc[2:]) or "rule"
            problems.append(f"{where}: {field_path}: {error['msg']}")
    message = "invalid rules: " + "; ".join(problems)
    if bad_kind:
        message += f" (valid kinds: {', '.join(RULE_KINDS)})"
    return message


def _has_word(text: str, word: str) -> bool:
    pattern = rf"(?<!\w){re.escape(word.strip())}(?!\w)"
    return re.search(pattern, text, re.IGNORECASE) is not None


def _count_words(text: str) -> int:
    return len(_WORD.findall(text))


def _find_json_object(text: str) -> dict[str, Any] | None:
    sources = [extract_code(text), text, extract_answer(text, "json") or ""]
    for source in sources:
        try:
            value = json.loads(source.strip())
        except (ValueError, RecursionError):  # RecursionError: '[' nested past the stack
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for match in itertools.islice(re.finditer(r"\{", text), _MAX_JSON_STARTS):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None
