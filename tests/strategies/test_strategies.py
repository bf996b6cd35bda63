"""Strategy logic on the scripted FakeWorker."""

from __future__ import annotations

import pytest

from threadloom import Budget, ConfigError, FakeWorker, Problem
from threadloom.orchestrator.runner import arun
from threadloom.strategies.registry import make_strategy, parse_spec

QUESTION = Problem(prompt="What is 17 + 25?", answer_format="number", reference="42")


async def test_single_draws_one_sample() -> None:
    worker = FakeWorker(["The answer is 42"])
    result = await arun(QUESTION, "single", worker=worker, verifier="numeric")
    assert result.answer == "42"
    assert len(result.candidates) == 1
    assert result.usage.generations == 1
    assert result.best is not None and result.best.scores["numeric"].passed is True


async def test_best_of_n_picks_the_verified_answer() -> None:
    worker = FakeWorker(["it is 41", "it is 40", "so 42", "maybe 43"])
    result = await arun(QUESTION, "best-of-n", n=4, worker=worker, verifier="numeric")
    assert result.answer == "42"
    assert next(c.answer for c in result.candidates) == "42"
    assert result.usage.generations == 4
    assert result.usage.verifier_calls == 4
    assert {c.scores["numeric"].passed for c in result.candidates} == {True, False}


async def test_best_of_n_without_verifier_breaks_ties_by_logprob() -> None:
    replies = ["alpha 1", "zzzz 2", "beta 3"]
    result = await arun(QUESTION.without_reference(), "best-of-n", n=3, worker=FakeWorker(replies))
    logprobs = [c.mean_logprob for c in result.candidates]
    assert logprobs == sorted(logprobs, reverse=True)
    assert len(result.candidates) == 3


async def test_self_consistency_majority() -> None:
    worker = FakeWorker(["41", "42", "42.0", "Answer: 42", "43"])
    result = await arun(QUESTION.without_reference(), "self-consistency", n=5, worker=worker)
    assert result.answer in {"42", "42.0"}
    assert result.best is not None and result.best.votes == 3
    vote_nodes = [n for n in result.trace.nodes if n.kind == "vote"]
    assert len(vote_nodes) == 1


async def test_self_consistency_tie_broken_by_verifier() -> None:
    worker = FakeWorker(["41", "42"])
    result = await arun(QUESTION, "self-consistency", n=2, worker=worker, verifier="numeric")
    assert result.answer == "42"


async def test_generation_budget_truncates_without_raising() -> None:
    worker = FakeWorker(["42"])
    result = await arun(QUESTION, "best-of-n", n=8, worker=worker, budget=Budget(max_generations=3))
    assert len(result.candidates) == 3
    assert result.truncated
    assert result.usage.generations == 3


async def test_token_budget_is_never_exceeded() -> None:
    worker = FakeWorker(["one two three four five six seven eight nine ten"])
    result = await arun(
        QUESTION, "best-of-n", n=8, worker=worker, budget=Budget(max_completion_tokens=25)
    )
    assert result.usage.completion_tokens <= 25
    assert result.truncated


async def test_seeded_runs_send_the_same_seeds() -> None:
    seeds = []
    for _ in range(2):
        worker = FakeWorker(["42"])
        await arun(QUESTION, "best-of-n", n=3, worker=worker, seed=5)
        seeds.append([r.params.seed for r in worker.requests])
    assert seeds[0] == seeds[1]
    assert len(set(seeds[0])) == 3


async def test_trace_links_generations_to_the_prompt() -> None:
    result = await arun(QUESTION, "best-of-n", n=2, worker=FakeWorker(["42"]), verifier="numeric")
    kinds = [n.kind for n in result.trace.nodes]
    assert kinds.count("generation") == 2 and kinds.count("score") == 2
    assert kinds[0] == "prompt"
    assert any(e.kind == "select" for e in result.trace.edges)


def test_spec_parsing_and_errors() -> None:
    assert parse_spec("best_of_n:n=8,temperature=0.5") == (
        "best-of-n",
        {"n": 8, "temperature": 0.5},
    )
    assert make_strategy("self-consistency:n=3").n == 3  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"valid strategies: a-star, .*beam-search, best-of-n"):
        make_strategy("beam-me-up")
    with pytest.raises(ConfigError, match="greater than or equal to 1"):
        make_strategy("best-of-n", n=0)
    with pytest.raises(ConfigError, match="has no option"):
        make_strategy("best-of-n:width=3")
    with pytest.raises(ConfigError, match="key=value"):
        make_strategy("best-of-n:8")


def test_empty_prompt_is_rejected() -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        Problem(prompt="   ")
