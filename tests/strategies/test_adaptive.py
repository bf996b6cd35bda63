"""Adaptive self-consistency and confidence-weighted voting on scripted workers."""

from __future__ import annotations

import math

import pytest

from threadloom import Budget, ConfigError, FakeWorker, Problem
from threadloom.orchestrator.runner import arun
from threadloom.strategies.registry import make_strategy
from threadloom.types import GenerationRequest, Result
from threadloom.verifiers.confidence import (
    confidence,
    group_means,
    keep_most_confident,
    threshold_from_warmup,
)
from threadloom.verifiers.stopping import cannot_be_overtaken, leader_probability, settled

QUESTION = Problem(prompt="What is 17 + 25?", answer_format="number")
SURE = "a a a a a a 42"
"""FakeWorker gives 'a' log-probability 0: a sure sample."""
UNSURE = "perhaps perhaps perhaps perhaps perhaps perhaps 41"
"""'perhaps' has log-probability -2.76: an unsure sample."""


def sample_index(request: GenerationRequest) -> int:
    """The sample number a strategy appended to its request id ('<id>-<i>' or '<id>-<i>-<part>')."""
    parts = request.request_id.split("-")
    return int(parts[1])


def stop_node(result: Result) -> dict[str, object]:
    nodes = [n for n in result.trace.nodes if n.kind == "stop"]
    assert len(nodes) == 1
    return nodes[0].data


# ----- pure rules -----------------------------------------------------------------------------


def test_leader_probability_is_the_beta_posterior_tail() -> None:
    assert leader_probability(0, 0) == 0.5
    assert leader_probability(3, 0) == 15 / 16
    assert leader_probability(4, 0) == 31 / 32
    assert leader_probability(2, 2) == 0.5
    # more agreement, more certainty; a strong runner-up lowers it
    assert leader_probability(6, 1) > leader_probability(5, 1) > leader_probability(5, 3)


def test_margin_and_window_rules() -> None:
    assert cannot_be_overtaken(5, 0, 3)
    assert not cannot_be_overtaken(5, 2, 3)
    assert not cannot_be_overtaken(0, 0, 0)
    same = ["#4", "#4", "#4", "#4"]
    assert settled(same, rule="window", confidence=0.95, window=4, remaining=12)
    assert not settled(["#3", *same[1:]], rule="window", confidence=0.95, window=4, remaining=12)
    assert not settled([None] * 4, rule="window", confidence=0.95, window=4, remaining=12)
    assert not settled(same, rule="margin", confidence=0.95, window=4, remaining=12)
    assert settled(same, rule="beta", confidence=0.95, window=4, remaining=12)
    assert not settled(same[:3], rule="beta", confidence=0.95, window=4, remaining=12)


def test_confidence_measures() -> None:
    values = [-0.1, -0.1, -2.0, -2.0, -0.1, -0.1]
    assert confidence(values, "mean") == pytest.approx(sum(values) / 6)
    assert confidence(values, "lowest-group", 2) == pytest.approx(-2.0)
    assert confidence(values, "tail", 2) == pytest.approx(-0.1)
    assert group_means(values, 4) == pytest.approx([-1.05, -1.05, -1.05])
    assert confidence([], "mean") is None
    assert confidence([-math.inf, 0.0], "mean") == pytest.approx(-50.0)
    with pytest.raises(ConfigError, match="unknown confidence measure"):
        confidence(values, "median")  # type: ignore[arg-type]
    assert threshold_from_warmup([-0.1, -0.5, -0.3, -2.0], keep=0.5) == -0.3
    assert threshold_from_warmup([-0.1, -0.5], keep=1.0) == -0.5


# ----- adaptive self-consistency ------------------------------------------------------------


async def test_settled_vote_stops_after_the_first_wave() -> None:
    worker = FakeWorker(["The answer is 42"])
    result = await arun(QUESTION, "adaptive-consistency:max_n=16,wave=4", worker=worker)
    assert result.answer == "42"
    assert len(worker.requests) == 4
    assert result.usage.generations == 4
    stop = stop_node(result)
    assert stop["stopped_after"] == 4 and stop["stop_reason"] == "settled"
    assert result.best is not None and result.best.metadata["stopped_after"] == 4


async def test_split_vote_uses_the_whole_budget() -> None:
    worker = FakeWorker(["41", "42", "43", "44"])
    result = await arun(QUESTION, "adaptive-consistency:max_n=12,wave=4", worker=worker)
    assert len(worker.requests) == 12
    assert stop_node(result)["stop_reason"] == "max_n"
    assert stop_node(result)["stopped_after"] == 12


async def test_samples_in_flight_are_aborted_when_the_rule_fires() -> None:
    slow = " ".join(["thinking"] * 60) + " 43"

    def script(request: GenerationRequest, _: int) -> str:
        return "42" if sample_index(request) < 5 else slow

    def delay(request: GenerationRequest) -> float:
        return 0.0 if sample_index(request) < 5 else 0.02

    worker = FakeWorker(script, token_delay_s=delay)
    result = await arun(
        QUESTION, "adaptive-consistency:max_n=8,wave=8,rule=margin", worker=worker
    )
    # 5 agreeing answers of 8 cannot be overtaken by the 3 still decoding
    assert result.answer == "42"
    assert len(worker.aborted) == 3
    assert worker.in_flight == 0
    assert worker.tokens_emitted < 5 + 3 * 61
    stop = stop_node(result)
    assert stop["aborted"] == 3 and stop["stopped_after"] == 5
    assert result.usage.aborted_generations == 3


async def test_a_vote_that_never_settles_early_stops_for_max_n() -> None:
    worker = FakeWorker(["41", "42", "42", "42", "43", "42", "42", "42"])
    result = await arun(QUESTION, "adaptive-consistency:max_n=8,wave=4", worker=worker)
    assert result.answer == "42"
    assert stop_node(result)["stop_reason"] == "max_n"
    assert len(worker.requests) == 8


async def test_window_rule_stops_when_the_last_answers_agree() -> None:
    worker = FakeWorker(["41", "42", "42", "42", "42"])
    result = await arun(
        QUESTION, "adaptive-consistency:max_n=16,wave=1,rule=window,window=4", worker=worker
    )
    assert len(worker.requests) == 5
    assert result.answer == "42"


def test_votes_rule_fires_on_the_leaders_count_alone() -> None:
    split = ["41", "43", "44", "41"]
    assert settled(split, rule="votes", confidence=0.95, window=4, remaining=12, votes=2)
    assert not settled(split[:3], rule="votes", confidence=0.95, window=4, remaining=12, votes=2)
    assert not settled(split, rule="votes", confidence=0.95, window=4, remaining=12, votes=3)
    assert not settled([None, None], rule="votes", confidence=0.95, window=4, remaining=12)


async def test_votes_rule_stops_at_the_first_repeated_answer() -> None:
    worker = FakeWorker(["41", "43", "42", "43", "42", "42"])
    result = await arun(
        QUESTION, "adaptive-consistency:max_n=16,wave=1,rule=votes,votes=2", worker=worker
    )
    assert len(worker.requests) == 4
    assert result.answer == "43"
    assert stop_node(result)["stop_reason"] == "settled"


async def test_adaptive_returns_what_it_has_when_the_budget_runs_out() -> None:
    worker = FakeWorker(["41", "42", "43"])
    result = await arun(
        QUESTION,
        "adaptive-consistency:max_n=16,wave=2",
        worker=worker,
        budget=Budget(max_generations=5),
    )
    assert result.truncated
    assert len(worker.requests) == 5
    assert stop_node(result)["stop_reason"] == "budget"


def test_adaptive_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="confidence"):
        make_strategy("adaptive-consistency:confidence=0.3")
    with pytest.raises(ConfigError, match="rule"):
        make_strategy("adaptive-consistency:rule=vibes")


# ----- confidence-weighted voting -----------------------------------------------------------


async def test_confidence_weighting_outvotes_an_unsure_majority() -> None:
    replies = [SURE, UNSURE, SURE, UNSURE, UNSURE]
    plain = await arun(QUESTION, "self-consistency:n=5", worker=FakeWorker(replies))
    assert plain.answer == "41"
    weighted = await arun(QUESTION, "confidence-vote:n=5", worker=FakeWorker(replies))
    assert weighted.answer == "42"
    assert all(c.metadata["confidence"] is not None for c in weighted.candidates)


async def test_confidence_filter_keeps_only_the_surest_share() -> None:
    replies = [SURE, UNSURE, UNSURE, UNSURE, UNSURE]
    result = await arun(
        QUESTION, "confidence-vote:n=5,select=filtered,keep=0.2", worker=FakeWorker(replies)
    )
    assert result.answer == "42"
    voted = [c for c in result.candidates if c.metadata["voted"]]
    assert [c.answer for c in voted] == ["42"]
    assert len(result.candidates) == 5


def test_keep_most_confident_ranks_unknown_last() -> None:
    from threadloom.types import Candidate

    pool = [
        Candidate(text="x", metadata={"confidence": None}),
        Candidate(text="y", metadata={"confidence": -0.2}),
        Candidate(text="z", metadata={"confidence": -1.0}),
    ]
    assert [c.text for c in keep_most_confident(pool, 0.5)] == ["y", "z"]
    with pytest.raises(ConfigError):
        keep_most_confident(pool, 0.0)


async def test_online_filter_cuts_an_unsure_sample_on_the_worker() -> None:
    unsure_words = ["perhaps"] * 40 + ["41"]
    sure_words = ["a"] * 10 + ["42"]

    def script(request: GenerationRequest, _: int) -> str:
        words = unsure_words if sample_index(request) == 5 else sure_words
        full = " ".join(words)
        return full[len(request.prefix) :]

    worker = FakeWorker(script)
    result = await arun(
        QUESTION,
        "confidence-vote:n=6,online=true,warmup=4,group=4,segment=4,keep=0.9",
        worker=worker,
    )
    assert result.answer == "42"
    cut_requests = [r for r in worker.requests if sample_index(r) == 5]
    # the unsure sample got one segment (4 tokens) and no continuation
    assert len(cut_requests) == 1
    assert worker.tokens_emitted == 4 * 11 + 11 + 4
    assert len(result.candidates) == 5
    assert all(c.answer == "42" for c in result.candidates)
    cut = [n for n in result.trace.nodes if n.data.get("cut")]
    assert len(cut) == 1
    # the sure online sample was continued segment by segment to its end
    assert len([r for r in worker.requests if sample_index(r) == 4]) == 3


class NoLogprobWorker(FakeWorker):
    """A worker whose completions carry no log-probabilities (some servers send none)."""

    async def stream(self, request: GenerationRequest):  # type: ignore[no-untyped-def,override]
        async for delta in super().stream(request):
            if delta.completion is not None:
                delta = delta.model_copy(
                    update={"completion": delta.completion.model_copy(update={"logprobs": None})}
                )
            yield delta


async def test_confidence_vote_without_logprobs_counts_votes_and_samples_all() -> None:
    replies = [SURE, UNSURE, SURE, UNSURE, UNSURE, UNSURE]
    worker = NoLogprobWorker(replies)
    result = await arun(
        QUESTION, "confidence-vote:n=6,online=true,warmup=2", worker=worker
    )
    assert len(worker.requests) == 6
    assert result.answer == "41"
    [tally] = [n for n in result.trace.nodes if n.kind == "vote"]
    assert tally.data["weighted"] is False
