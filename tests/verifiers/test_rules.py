"""Instruction-following rules: each kind passing and failing, validation, scores."""

from __future__ import annotations

from typing import Any

import pytest

from threadloom import ConfigError
from threadloom.types import Candidate, Problem
from threadloom.verifiers.base import Verifier
from threadloom.verifiers.registry import make_verifier
from threadloom.verifiers.rules import RULE_KINDS, RulesVerifier, check_rules, parse_rules

CASES: list[tuple[dict[str, Any], str, str]] = [
    # (rule, text that follows it, text that breaks it)
    (
        {"kind": "bullet_count", "count": 3},
        "Items:\n- one\n  * two\n3. three\n",
        "- one\n- two\n-not a bullet\n**bold** is not one either",
    ),
    ({"kind": "bullet_count", "count": 2}, "• first\n1. second", "• only one"),
    ({"kind": "contains_word", "word": "ocean"}, "The Ocean is deep.", "Oceanic trenches."),
    ({"kind": "contains_word", "word": "new york"}, "I love New York!", "I love York."),
    ({"kind": "excludes_word", "word": "very"}, "Every day is fine.", "It is Very good."),
    (
        {"kind": "json_keys", "keys": ["a", "b"]},
        'Here you go:\n```json\n{"b": 2, "a": 1}\n```',
        '```json\n{"a": 1, "b": 2, "c": 3}\n```',
    ),
    ({"kind": "json_keys", "keys": ["name"]}, 'Result: {"name": "x"} done.', "name: x"),
    ({"kind": "json_keys", "keys": ["a"]}, '{"a": {"nested": true}}', "[1, 2]"),
    ({"kind": "max_words", "count": 5}, "one two three four five", "one two three four five six"),
    ({"kind": "min_words", "count": 3}, "don't stop now", "too short"),
    ({"kind": "lowercase"}, "all quiet here, 42.", "Not quiet"),
    ({"kind": "uppercase"}, "LOUD AND CLEAR!", "LOUD and clear"),
    ({"kind": "starts_with", "text": "Yes"}, "  Yes, indeed.", "yes, indeed"),
    ({"kind": "ends_with", "text": "Done."}, "All finished. Done.\n", "Done. All finished."),
    ({"kind": "no_commas"}, "No commas here.", "One, two."),
    ({"kind": "sentence_count", "count": 2}, "It works. Does it?", "One. Two! Three?"),
    ({"kind": "sentence_count", "count": 1}, "Pi is 3.14 roughly", "Hi. There."),
]


@pytest.mark.parametrize(("rule", "good", "bad"), CASES, ids=[c[0]["kind"] for c in CASES])
def test_each_kind_passes_and_fails(rule: dict[str, Any], good: str, bad: str) -> None:
    (passing,) = check_rules(good, [rule])
    assert passing.passed, passing.detail
    assert passing.kind == rule["kind"]
    (failing,) = check_rules(bad, [rule])
    assert not failing.passed, failing.detail
    assert failing.detail


def test_every_kind_is_covered() -> None:
    assert {rule["kind"] for rule, _, _ in CASES} == set(RULE_KINDS)
    assert len(RULE_KINDS) == 12


def test_unknown_kind_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        check_rules("text", [{"kind": "max_sentences", "count": 2}])
    message = str(info.value)
    assert "max_sentences" in message
    assert all(kind in message for kind in RULE_KINDS)


@pytest.mark.parametrize(
    "rules",
    [
        [{"kind": "max_words"}],
        [{"kind": "max_words", "count": "many"}],
        [{"kind": "max_words", "count": 3, "extra": 1}],
        [{"count": 3}],
        [{"kind": "contains_word", "word": ""}],
        ["max_words"],
        {"kind": "max_words", "count": 3},
    ],
    ids=["missing-field", "bad-type", "extra-field", "no-kind", "empty-word", "string", "not-list"],
)
def test_malformed_rules_are_config_errors(rules: Any) -> None:
    with pytest.raises(ConfigError, match="rule"):
        parse_rules(rules)


def test_outcomes_keep_rule_order() -> None:
    rules: list[dict[str, Any]] = [
        {"kind": "no_commas"},
        {"kind": "lowercase"},
        {"kind": "max_words", "count": 1},
    ]
    outcomes = check_rules("hello, world", rules)
    assert [o.kind for o in outcomes] == ["no_commas", "lowercase", "max_words"]
    assert [o.passed for o in outcomes] == [False, True, False]


def problem(*rules: dict[str, Any]) -> Problem:
    return Problem(prompt="Describe the sea.", metadata={"rules": list(rules)})


async def test_verifier_scores_the_fraction_followed() -> None:
    verifier = RulesVerifier()
    p = problem(
        {"kind": "contains_word", "word": "ocean"},
        {"kind": "max_words", "count": 4},
        {"kind": "lowercase"},
        {"kind": "no_commas"},
    )
    full = await verifier.score(p, Candidate(text="the ocean is wide"))
    assert full.value == 1.0 and full.passed is True
    half = await verifier.score(p, Candidate(text="The ocean is very, very wide"))
    assert half.value == 0.25 and half.passed is False
    assert "max_words" in half.detail and "lowercase" in half.detail
    assert "no_commas" in half.detail and "contains_word" not in half.detail
    none = await verifier.score(p, Candidate(text="The Sea, honestly, is a lot of water."))
    assert none.value == 0.0 and none.passed is False


async def test_verifier_without_rules_and_with_bad_rules() -> None:
    verifier = RulesVerifier()
    score = await verifier.score(Problem(prompt="q"), Candidate(text="anything"))
    assert score.passed is False and "no rules" in score.detail
    with pytest.raises(ConfigError):
        await verifier.score(problem({"kind": "shout"}), Candidate(text="x"))


def test_protocol_and_registry() -> None:
    verifier = make_verifier("rules")
    assert isinstance(verifier, RulesVerifier) and isinstance(verifier, Verifier)
    assert verifier.name == "rules"
