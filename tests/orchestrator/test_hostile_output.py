"""Anything a model writes is hostile input: property-based checks that none of it escapes.

Arbitrary replies (any Unicode, lone surrogates, control characters, rich markup, chat-template
tokens, huge numbers and exponents, long text) go through every extractor, the rule verifiers,
voting, a whole run on a scripted worker, and the CLI's printers. Nothing may raise, and every
number read from the text stays bounded. The examples are derandomized (a fixed seed) and
bounded in number, so CI runs the same cases every time; a hang is caught by the test timeout.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from threadloom import Candidate, Problem
from threadloom.cli.display import graph_tree, trace_tree
from threadloom.cli.progress import LiveRun
from threadloom.cli.results import print_result, result_json
from threadloom.errors import ConfigError
from threadloom.graph import graph_from_dict
from threadloom.orchestrator.events import TraceEvent, event_line
from threadloom.orchestrator.runner import arun
from threadloom.types import AnswerFormat, Score
from threadloom.verifiers.extract import (
    MAX_EXPONENT,
    MAX_NUMBER_CHARS,
    extract_answer,
    extract_answer_line,
    extract_boxed,
    extract_code,
    extract_last_number,
    normalize_number,
    parse_number,
)
from threadloom.verifiers.registry import make_verifier
from threadloom.verifiers.rules import RULE_KINDS
from threadloom.verifiers.voting import answer_key, vote
from threadloom.workers.fake import FakeWorker

FORMATS: tuple[AnswerFormat, ...] = (
    "auto", "text", "number", "boxed", "expression", "code", "json",
)
FUZZ = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# the largest value parse_number may return: MAX_NUMBER_CHARS digits times 10**MAX_EXPONENT
NUMBER_BITS = math.ceil((MAX_NUMBER_CHARS + MAX_EXPONENT) * math.log2(10)) + 1

_ANY_CHARACTER = st.characters(codec=None, exclude_categories=())  # surrogates included
_TRICKY = st.sampled_from(
    [
        "[/INST]", "[bold]", "[/]", "[/bold red]", "[link=https://example.com]x[/link]",
        ":smile:", "\\", "\\[", "\\boxed{", "\\fbox{", "}", "{", "\\boxed{1e999999999}",
        "\\boxed{1e5000}", "1e-999999999", "Answer: ", "The answer is ", "#### ", "final answer",
        "```python\n", "```", '{"a": ', "<|im_end|>", "<|im_start|>system\n", "\x00", "\x1b[31m",
        "\r", "\n", "\t", "\u202e", "\u200b", "\ud800", "\udcff", "$", ",", "/", "0/0", "1/0",
        "-", ".", "=", "= 24", "×", "÷", "(", ")", "\\frac{1}{2}", "nan", "inf", "-inf", "1_000",
        "٣", "𝟗", "½", "e", "E+",
    ]
)
_HUGE_NUMBERS = st.one_of(
    st.integers(1, 6000).map(lambda n: "7" * n),
    st.tuples(st.integers(1, 50), st.integers(-(10**12), 10**12)).map(
        lambda pair: f"{'9' * pair[0]}e{pair[1]}"
    ),
    st.tuples(st.integers(1, 2000), st.integers(1, 2000)).map(
        lambda pair: f"{'1' * pair[0]}.{'5' * pair[1]}"
    ),
    st.integers(-(10**400), 10**400).map(str),
)
_PIECE = st.one_of(st.text(_ANY_CHARACTER, max_size=30), _TRICKY, _HUGE_NUMBERS)
MODEL_TEXT = st.one_of(
    st.lists(_PIECE, max_size=25).map("".join),
    st.tuples(st.one_of(_TRICKY, _HUGE_NUMBERS), st.integers(1, 20_000)).map(
        lambda pair: (pair[0] * pair[1])[:200_000]
    ),
)
"""What a model may reply: fragments glued together, or one fragment repeated at length."""


@FUZZ
@given(text=MODEL_TEXT)
def test_extractors_take_any_text_and_bound_numbers(text: str) -> None:
    for fmt in FORMATS:
        answer = extract_answer(text, fmt)
        assert answer is None or isinstance(answer, str)
    for extractor in (extract_boxed, extract_answer_line, extract_last_number):
        found = extractor(text)
        assert found is None or isinstance(found, str)
    assert isinstance(extract_code(text), str)
    for candidate in (text, text[:MAX_NUMBER_CHARS], extract_answer(text, "boxed") or ""):
        value = parse_number(candidate)
        if value is not None:
            assert isinstance(value, Fraction)
            assert value.numerator.bit_length() <= NUMBER_BITS
            assert value.denominator.bit_length() <= NUMBER_BITS
        normalized = normalize_number(candidate)
        assert normalized is None or parse_number(normalized) is not None


@FUZZ
@given(texts=st.lists(MODEL_TEXT, min_size=1, max_size=6), fmt=st.sampled_from(FORMATS))
def test_voting_groups_any_answers(texts: list[str], fmt: AnswerFormat) -> None:
    candidates = [Candidate(text=t, answer=extract_answer(t, fmt)) for t in texts]
    voters = [c for c in candidates if answer_key(c.answer, fmt) is not None]
    groups = vote(candidates, fmt)
    assert sum(len(group.members) for group in groups) == len(voters)
    assert len({group.key for group in groups}) == len(groups)
    for group in groups:
        assert all(member.votes == len(group.members) for member in group.members)


RULE_EXAMPLES: list[dict[str, Any]] = [
    {"kind": "bullet_count", "count": 2},
    {"kind": "contains_word", "word": "answer"},
    {"kind": "excludes_word", "word": "INST"},
    {"kind": "json_keys", "keys": ["a"]},
    {"kind": "max_words", "count": 50},
    {"kind": "min_words", "count": 2},
    {"kind": "lowercase"},
    {"kind": "uppercase"},
    {"kind": "starts_with", "text": "["},
    {"kind": "ends_with", "text": "}"},
    {"kind": "no_commas"},
    {"kind": "sentence_count", "count": 1},
]


def test_the_rule_examples_cover_every_rule_kind() -> None:
    assert {rule["kind"] for rule in RULE_EXAMPLES} == set(RULE_KINDS)


@pytest.mark.slow
@FUZZ
@given(text=MODEL_TEXT, reference=st.one_of(st.none(), _HUGE_NUMBERS, _TRICKY, MODEL_TEXT))
def test_rule_verifiers_score_any_answer(text: str, reference: str | None) -> None:
    problem = Problem(
        prompt="q",
        reference=reference,
        metadata={"numbers": [4, 6, 1, 1], "rules": RULE_EXAMPLES},
    )
    specs = ["numeric", "regex:\\d+", "contains:answer,[/INST]", "game24", "rules"]
    for fmt in ("auto", "number", "expression"):
        candidate = Candidate(text=text, answer=extract_answer(text, fmt))  # type: ignore[arg-type]
        for spec in specs:
            score = asyncio.run(make_verifier(spec).score(problem, candidate))
            assert isinstance(score, Score)
            assert 0.0 <= score.value <= 1.0
            assert score.passed in (True, False, None)


@pytest.fixture(scope="module")
def math_verifier() -> Any:
    verifier = make_verifier("math", timeout_s=10)
    yield verifier
    verifier.close()  # type: ignore[attr-defined]


@settings(FUZZ, max_examples=12)
@given(text=MODEL_TEXT)
def test_math_verifier_scores_any_answer(math_verifier: Any, text: str) -> None:
    problem = Problem(prompt="q", reference="\\frac{1}{2}", answer_format="boxed")
    candidate = Candidate(text=text, answer=extract_answer(text, "boxed"))
    score = asyncio.run(math_verifier.score(problem, candidate))
    assert isinstance(score, Score)
    assert score.passed in (True, False)


def _render(renderable: Any) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system="truecolor").print(renderable)
    printed = buffer.getvalue()
    printed.encode("utf-8")  # what a strict UTF-8 terminal must accept: no lone surrogates
    return printed


@pytest.mark.slow
@FUZZ
@given(replies=st.lists(MODEL_TEXT, min_size=1, max_size=3))
def test_a_run_on_hostile_replies_completes_and_prints(replies: list[str]) -> None:
    events: list[TraceEvent] = []
    result = asyncio.run(
        arun(
            "What is 6 * 7?",
            "self-consistency",
            worker=FakeWorker(tuple(replies)),
            verifier="numeric",
            n=3,
            on_event=events.append,
        )
    )
    assert len(result.candidates) == 3

    buffer = io.StringIO()
    print_result(result, Console(file=buffer, width=150))
    printed = buffer.getvalue()
    printed.encode("utf-8")
    assert "answer:" in printed
    assert printed.count("\n") >= 3 + 4  # three candidate rows plus the table's frame

    dumped = json.loads(result_json(result))
    assert len(dumped["candidates"]) == 3

    lines = [event_line(event) for event in events]
    tree = trace_tree([json.loads(line) for line in lines])
    assert "thought graph" in _render(tree)

    live = LiveRun(Console(file=io.StringIO(), width=100), title="[/INST] best-of-n")
    for event in events:
        live(event)
    assert "branches done" in _render(live._render())


@FUZZ
@given(name=st.text(_ANY_CHARACTER, min_size=1, max_size=40).filter(lambda n: n.strip() != ""))
def test_plan_node_names_print_as_written(name: str) -> None:
    try:
        plan = graph_from_dict({"nodes": {name: {"strategy": "single"}}})
    except ConfigError:
        return  # refused with a typed error is fine too
    assert "strategy graph" in _render(graph_tree(plan))


def test_markup_in_an_answer_prints_as_written() -> None:
    result = asyncio.run(arun("q", "best-of-n", worker=FakeWorker(("Sure [/INST] 4",)), n=1))
    buffer = io.StringIO()
    print_result(result, Console(file=buffer, width=150))
    assert "Sure [/INST] 4" in buffer.getvalue()


async def test_lone_surrogates_reach_an_openai_server_as_replacement_characters() -> None:
    from openai_server import Reply, ScriptedServer, chat_reply

    from threadloom.types import ChatMessage, GenerationRequest
    from threadloom.workers.openai.worker import OpenAIWorker

    request = GenerationRequest(
        messages=(ChatMessage(role="user", content="bad \udcff byte"),), prefix="so \ud800"
    )
    # the reply itself spells a lone surrogate in JSON, as a server may
    with ScriptedServer([Reply(200, chat_reply("ok \udcff"))]) as server:
        worker = OpenAIWorker(base_url=server.base_url, model="m")
        try:
            completion = await worker.generate(request)
        finally:
            await worker.close()
    sent = server.posts[0].body["messages"]
    assert [m["content"] for m in sent] == ["bad \ufffd byte", "so \ufffd"]
    assert completion.text.startswith("ok")
