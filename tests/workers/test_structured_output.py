"""Structured output: grammars on the real bundled model, the json-schema verifier, JSON votes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from threadloom.errors import ConfigError
from threadloom.types import (
    Candidate,
    ChatMessage,
    GenerationRequest,
    Problem,
    SamplingParams,
    StructuredOutputs,
)
from threadloom.verifiers.json_schema import JsonSchemaVerifier
from threadloom.verifiers.registry import make_verifier
from threadloom.verifiers.voting import answer_key, vote, vote_fields
from threadloom.workers.llamacpp.grammar import gbnf_for
from threadloom.workers.llamacpp.worker import LlamaCppWorker

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "population": {"type": "integer"},
    },
    "required": ["city", "population"],
    "additionalProperties": False,
}
PROBLEM = Problem(prompt="Name a city and its population as JSON.", answer_format="json")


def _candidate(text: str) -> Candidate:
    return Candidate(text=text, answer=text)


# ----- the json-schema verifier -------------------------------------------------------------


async def test_json_schema_verifier_passes_valid_and_names_what_is_wrong() -> None:
    verifier = JsonSchemaVerifier(SCHEMA)
    good = await verifier.score(PROBLEM, _candidate('{"city": "Oslo", "population": 709000}'))
    assert good.passed is True and good.value == 1.0
    wrong = await verifier.score(PROBLEM, _candidate('{"city": "Oslo", "population": "many"}'))
    assert wrong.passed is False and "population" in wrong.detail
    prose = await verifier.score(PROBLEM, _candidate("Oslo has about 700k people."))
    assert prose.passed is False and "JSON" in prose.detail
    wrapped = await verifier.score(
        PROBLEM, _candidate('Here: {"city": "Rome", "population": 2800000} done')
    )
    assert wrapped.passed is True


async def test_json_schema_verifier_survives_hostile_answers() -> None:
    verifier = JsonSchemaVerifier(SCHEMA)
    deep = "[" * 100_000 + "]" * 100_000
    for text in (deep[:99_000], '{"city": ' + '"x' * 60_000 + '"}', "{" * 5000):
        score = await verifier.score(PROBLEM, _candidate(text))
        assert score.passed is False


async def test_json_schema_from_the_registry_and_from_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    from_file = make_verifier(f"json-schema:{path}")
    inline = make_verifier('json-schema:{"type": "array"}')
    answer = _candidate('{"city": "Oslo", "population": 1}')
    assert (await from_file.score(PROBLEM, answer)).passed is True
    assert (await inline.score(PROBLEM, answer)).passed is False
    per_problem = PROBLEM.model_copy(update={"metadata": {"json_schema": {"type": "array"}}})
    assert (await make_verifier("json-schema").score(per_problem, answer)).passed is False
    with pytest.raises(ConfigError, match="not a valid JSON schema"):
        make_verifier('json-schema:{"type": 5}')
    with pytest.raises(ConfigError, match="cannot read the JSON schema file"):
        make_verifier(f"json-schema:{tmp_path / 'missing.json'}")


# ----- voting on JSON answers ---------------------------------------------------------------


def test_equal_json_answers_vote_together_whatever_their_spelling() -> None:
    a = answer_key('{"b": 2, "a": [1.0, "x"]}', "json")
    b = answer_key('{ "a": [1, "x"],\n "b": 2.0 }', "json")
    assert a is not None and a == b
    groups = vote(
        [_candidate('{"a":1}'), _candidate('{"a": 2}'), _candidate('{ "a" : 1.0 }')], "json"
    )
    assert len(groups) == 2 and len(groups[0].members) == 2


def test_field_votes_combine_the_majority_of_each_field() -> None:
    answers = [
        '{"city": "Oslo", "population": 700000}',
        '{"city": "Oslo", "population": 650000, "country": "Norway"}',
        '{"city": "Bergen", "population": 650000}',
        "not json at all",
        '["a list", "does not vote"]',
    ]
    outcome = vote_fields([_candidate(a) for a in answers])
    assert outcome.voters == 3
    # no single candidate says Oslo with 650000, but each field's majority does
    assert outcome.answer == {"city": "Oslo", "population": 650000}
    assert outcome.votes["city"] == {'"Oslo"': 2, '"Bergen"': 1}
    assert "country" not in outcome.answer  # held by one of three


# ----- grammars -----------------------------------------------------------------------------


def test_every_constraint_becomes_a_grammar() -> None:
    choice = gbnf_for(StructuredOutputs(choice=("yes", "no")))
    assert choice.strip() == 'root ::= "yes" | "no"'
    regex = gbnf_for(StructuredOutputs(regex="[0-9]{3}"))
    assert regex.startswith("root ::=") and "[0-9]" in regex
    schema = gbnf_for(StructuredOutputs(json_schema=SCHEMA))
    assert "population" in schema
    assert "root" in gbnf_for(StructuredOutputs(json_object=True))
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputs(regex="a", choice=("b",))


def _chat(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=text),), params=SamplingParams(**params)
    )


@pytest.mark.slow
async def test_json_schema_answers_parse_every_time_on_the_real_model(
    llama_worker: LlamaCppWorker,
) -> None:
    import asyncio

    structured = StructuredOutputs(json_schema=SCHEMA)
    replies = await asyncio.gather(
        *(
            llama_worker.generate(
                _chat(
                    "Name a city and its population as JSON.",
                    temperature=1.0,
                    seed=seed,
                    max_tokens=64,
                    structured_outputs=structured,
                )
            )
            for seed in range(16)
        )
    )
    verifier = JsonSchemaVerifier(SCHEMA)
    for reply in replies:
        assert reply.finish_reason == "stop", reply.text
        value = json.loads(reply.text)
        assert set(value) == {"city", "population"} and isinstance(value["population"], int)
        assert (await verifier.score(PROBLEM, _candidate(reply.text))).passed is True
    assert len({r.text for r in replies}) > 1  # still sampled, not one forced reply


@pytest.mark.slow
async def test_choice_regex_and_grammar_on_the_real_model(llama_worker: LlamaCppWorker) -> None:
    question = "Is the sky green? Answer yes or no."
    for seed in range(3):
        chosen = await llama_worker.generate(
            _chat(question, seed=seed, max_tokens=8, structured_outputs={"choice": ["yes", "no"]})
        )
        assert chosen.text in ("yes", "no")
    code = await llama_worker.generate(
        _chat(
            "Give a code.", seed=1, max_tokens=12, structured_outputs={"regex": "[A-Z]{2}-[0-9]{3}"}
        )
    )
    assert re.fullmatch(r"[A-Z]{2}-[0-9]{3}", code.text)
    counted = await llama_worker.generate(
        _chat(
            "Count.",
            temperature=0,
            max_tokens=20,
            structured_outputs={"grammar": 'root ::= "1, 2, 3"'},
        )
    )
    assert counted.text == "1, 2, 3"
    with pytest.raises(ConfigError, match="grammar"):
        await llama_worker.generate(_chat("x", structured_outputs={"grammar": "root ::= ("}))
    continued = _chat("x", structured_outputs={"choice": ["a"]}).model_copy(
        update={"prefix": "The answer"}
    )
    with pytest.raises(ConfigError, match="cannot apply structured_outputs"):
        await llama_worker.generate(continued)
