"""Step-wise search on scripted workers and a scripted PRM: beam, DVTS, A*, particles, voting."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

import threadloom as tl
from threadloom import FakeWorker, Problem
from threadloom.strategies.particles import resample, softmax_weights
from threadloom.strategies.registry import make_strategy
from threadloom.strategies.stepwise import is_complete_step
from threadloom.types import Budget, Candidate, GenerationRequest, Score
from threadloom.verifiers.base import StepAggregation, aggregate_steps

Q = Problem(prompt="What is 6 * 7?", answer_format="number")


class ScriptedPRM:
    """Scores a step by the first table key found in it (default 0.5); counts its calls."""

    def __init__(self, table: dict[str, float], aggregation: StepAggregation = "last") -> None:
        self.name = "scripted"
        self.aggregation: StepAggregation = aggregation
        self.table = table
        self.calls = 0
        self.judged: list[list[str]] = []

    def value(self, step: str) -> float:
        return next((v for k, v in self.table.items() if k in step), 0.5)

    async def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        self.calls += 1
        self.judged.append(list(steps))
        return [self.value(s) for s in steps]

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        scores = [self.value(s) for s in candidate.steps]
        return Score(value=aggregate_steps(scores, self.aggregation))


def depth(request: GenerationRequest) -> int:
    return request.prefix.count("\n\n")


# ----- step generation ---------------------------------------------------------------------


def test_complete_step_detection() -> None:
    assert is_complete_step("so \\boxed{42}", "number")
    assert is_complete_step("Answer: 42", "number")
    assert not is_complete_step("Answer: 42", "boxed")
    assert not is_complete_step("6 * 7 = 42", "number")


async def test_steps_stop_at_the_delimiter_and_solutions_end_at_an_answer() -> None:
    replies = ["First step.\n\nnot reached", "Second step.\n\nnot reached", "Answer: 42"]
    worker = FakeWorker(lambda req, i: replies[min(depth(req), 2)])
    prm = ScriptedPRM({})
    result = await tl.arun(Q, "beam-search", width=1, expansions=1, prm="scripted",
                           worker=worker, verifier=prm)
    assert result.answer == "42"
    best = result.best
    assert best is not None and best.steps == ["First step.", "Second step.", "Answer: 42"]
    assert best.metadata["complete"]
    assert [r.prefix for r in worker.requests] == ["", "First step.\n\n",
                                                    "First step.\n\nSecond step.\n\n"]
    # every generation stops at the delimiter and is capped at step_tokens
    assert all(r.params.stop == ("\n\n",) and r.params.max_tokens == 96 for r in worker.requests)
    assert result.usage.verifier_calls == 3  # one PRM pass per new step, cached ones are free


async def test_custom_delimiter_and_step_cap() -> None:
    worker = FakeWorker(lambda req, i: f"step {req.prefix.count('##')} ## more")
    prm = ScriptedPRM({})
    result = await tl.arun(Q, "beam-search", width=1, expansions=1, prm="scripted",
                           delimiter="##", max_steps=3, worker=worker, verifier=prm)
    best = result.best
    assert best is not None and len(best.steps) == 3
    assert best.metadata["complete"]  # max_steps ends a solution
    assert len(worker.requests) == 3


# ----- beam search and DVTS -----------------------------------------------------------------


def good_or_bad(request: GenerationRequest, index: int) -> str:
    if depth(request) >= 2:
        return "Answer: 42" if "bad" not in request.prefix else "Answer: 41"
    return ("good" if index % 2 == 0 else "bad") + f" {depth(request)}.{index}\n\nrest"


async def test_beam_search_keeps_the_best_beams() -> None:
    worker = FakeWorker(good_or_bad)
    prm = ScriptedPRM({"good": 0.9, "bad": 0.1, "Answer": 0.8})
    result = await tl.arun(Q, "beam-search", width=2, expansions=2, prm="scripted",
                           worker=worker, verifier=prm)
    assert result.answer == "42"
    first_round = [r for r in worker.requests if depth(r) == 0]
    assert len(first_round) == 4  # the root is expanded width * expansions times
    later = [r for r in worker.requests if depth(r) > 0]
    assert later and all("bad" not in r.prefix for r in later)
    assert len([r for r in later if depth(r) == 1]) == 4  # 2 beams x 2 expansions
    assert len(result.candidates) == 2
    assert all(c.metadata["complete"] and "bad" not in c.text for c in result.candidates)


async def test_dvts_runs_independent_subtrees() -> None:
    worker = FakeWorker(good_or_bad)
    prm = ScriptedPRM({"good": 0.9, "bad": 0.1, "Answer": 0.8})
    result = await tl.arun(Q, "dvts", n=8, m=4, prm="scripted", worker=worker, verifier=prm)
    assert len(result.candidates) == 2  # n // m subtrees, one solution each
    assert len([r for r in worker.requests if depth(r) == 0]) == 8  # m first steps per subtree
    keys = {r.affinity_key for r in worker.requests}
    assert any(k and k.startswith("tree0.") for k in keys)
    assert any(k and k.startswith("tree1.") for k in keys)
    assert result.answer == "42"


def test_dvts_needs_n_at_least_m() -> None:
    with pytest.raises(tl.ConfigError, match="at least m"):
        make_strategy("dvts", n=2, m=4)


async def test_beam_search_stops_within_a_generation_budget() -> None:
    worker = FakeWorker(lambda req, i: f"step {i}\n\n")  # never finishes by itself
    prm = ScriptedPRM({})
    result = await tl.arun(Q, "beam-search", width=2, expansions=2, prm="scripted",
                           worker=worker, verifier=prm, budget=Budget(max_generations=6))
    assert result.usage.generations <= 6
    assert result.truncated
    assert result.candidates  # the best partial solutions come back, nothing raised


# ----- A* -------------------------------------------------------------------------------------

TREE = {
    "": ["s1", "s2", "s3"],
    "s2": ["s2a", "s2b", "s2c"],
    "s1": ["s1a", "Answer: 42 s1b", "s1c"],
}
SCORES = {"s1a": 0.2, "s1b": 0.7, "s1c": 0.1, "s1": 0.5, "s2a": 0.3, "s2b": 0.25, "s2c": 0.35,
          "s2": 0.9, "s3": 0.2}


def tree_worker() -> FakeWorker:
    """Replies with the children of the prefix's last step, one after another."""
    seen: Counter[str] = Counter()

    def reply(request: GenerationRequest, index: int) -> str:
        last = request.prefix.strip().split("\n\n")[-1] if request.prefix else ""
        children = TREE.get(last, ["Answer: 0 dead end"])
        seen[request.prefix] += 1
        return children[(seen[request.prefix] - 1) % len(children)] + "\n\n"

    return FakeWorker(reply)


async def test_a_star_pops_in_score_order_and_stops_at_the_first_solution() -> None:
    worker = tree_worker()
    prm = ScriptedPRM(SCORES)
    result = await tl.arun(Q, "a-star", k=3, prm="scripted", worker=worker, verifier=prm)
    expanded: list[str] = []
    for request in worker.requests:
        if request.prefix not in expanded:
            expanded.append(request.prefix)
    # root, then s2 (0.9), then s1 (0.5 beats every child of s2), whose child s1b finishes
    assert expanded == ["", "s2\n\n", "s1\n\n"]
    assert result.answer == "42"
    assert len(worker.requests) == 9
    assert len(result.candidates) == 1


async def test_a_star_respects_the_prm_budget() -> None:
    worker = tree_worker()
    prm = ScriptedPRM(SCORES)
    result = await tl.arun(Q, "a-star", k=3, prm="scripted", worker=worker, verifier=prm,
                           budget=Budget(max_verifier_calls=4))
    assert result.usage.verifier_calls == 4  # admitted with reservations: never past the limit
    assert len(worker.requests) == 6  # root and s2 expanded; then the PRM budget stops it
    assert result.truncated
    assert result.candidates and result.candidates[0].metadata["complete"] is False


async def test_a_star_max_expansions() -> None:
    worker = FakeWorker(lambda req, i: f"step {i}\n\n")
    prm = ScriptedPRM({})
    result = await tl.arun(Q, "a-star", k=2, max_expansions=3, prm="scripted",
                           worker=worker, verifier=prm)
    assert len(worker.requests) == 6
    assert result.candidates


# ----- particle filtering ---------------------------------------------------------------------


def test_softmax_weights_are_normalised_and_temperature_sharpens() -> None:
    flat = softmax_weights([0.2, 0.8], 10.0)
    sharp = softmax_weights([0.2, 0.8], 0.1)
    assert sum(flat) == pytest.approx(1.0) and sum(sharp) == pytest.approx(1.0)
    assert sharp[1] > flat[1] > 0.5
    assert softmax_weights([1000.0, 999.0], 0.01)[0] == pytest.approx(1.0)  # no overflow


def test_resampling_follows_the_weights() -> None:
    weights = softmax_weights([0.1, 0.5, 0.9], 0.5)
    draws = 20_000
    counts = Counter(resample(weights, draws, random.Random(7)))
    chi2 = sum((counts[i] - draws * w) ** 2 / (draws * w) for i, w in enumerate(weights))
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, p = 0.001


def alternating(request: GenerationRequest, index: int) -> str:
    if depth(request) >= 1:
        return "Answer: 42" if request.prefix.startswith("good") else "Answer: 41"
    return ("good" if index % 2 == 0 else "bad") + f" {index}\n\n"


async def test_particle_filtering_resamples_by_softmax_of_rewards() -> None:
    worker = FakeWorker(alternating)
    prm = ScriptedPRM({"good": 0.9, "bad": 0.1, "Answer": 0.5})
    n, temperature = 400, 0.5
    result = await tl.arun(Q, "particle-filtering", n=n, resample_temperature=temperature,
                           prm="scripted", worker=worker, verifier=prm, seed=3)
    second = [r for r in worker.requests if depth(r) == 1]
    assert len(second) == n
    good = sum(r.prefix.startswith("good") for r in second)
    ratio = math.exp((0.9 - 0.1) / temperature)
    expected = n * ratio / (1 + ratio)
    spread = math.sqrt(n * (ratio / (1 + ratio)) * (1 / (1 + ratio)))
    assert abs(good - expected) < 4 * spread
    assert result.answer == "42"


def finish_early(request: GenerationRequest, index: int) -> str:
    if depth(request) == 0:
        return "Answer: 42" if index % 2 == 0 else f"thinking {index}\n\n"
    return f"more {index}\n\n"


async def test_finished_particles_are_never_extended() -> None:
    worker = FakeWorker(finish_early)
    prm = ScriptedPRM({"Answer": 0.95, "thinking": 0.2, "more": 0.2})
    result = await tl.arun(Q, "particle-filtering", n=8, max_steps=4, prm="scripted",
                           worker=worker, verifier=prm, seed=1)
    assert all("Answer" not in r.prefix for r in worker.requests)
    assert result.answer == "42"
    assert result.best is not None and result.best.metadata["complete"]


async def test_particle_filtering_is_reproducible_with_a_seed() -> None:
    def noisy(request: GenerationRequest, index: int) -> str:
        if depth(request) >= 2:
            return f"Answer: {request.prefix.count('a')}"
        return random.Random(request.params.seed).choice(["a step", "b step", "ab step"]) + "\n\n"

    async def once(seed: int) -> list[str]:
        prm = ScriptedPRM({"ab": 0.7, "a step": 0.5, "b step": 0.3})
        result = await tl.arun(Q, "particle-filtering", n=6, prm="scripted", seed=seed,
                               worker=FakeWorker(noisy), verifier=prm)
        return [c.text for c in result.candidates]

    assert await once(5) == await once(5)


async def test_particles_pick_by_weighted_vote() -> None:
    def replies(request: GenerationRequest, index: int) -> str:
        return ["Answer: 42 strong", "Answer: 41 weak", "Answer: 41 weak", "Answer: 41 weak"][
            index % 4]

    async def pick(select: str) -> str | None:
        prm = ScriptedPRM({"strong": 0.9, "weak": 0.35})
        result = await tl.arun(Q, "particle-filtering", n=4, select=select, prm="scripted",
                               worker=FakeWorker(replies), verifier=prm, seed=0)
        return result.answer

    assert await pick("best") == "42"  # the single strongest particle
    assert await pick("weighted-vote") == "41"  # 3 x 0.35 outweighs 0.9


# ----- weighted majority and outcome rewards ------------------------------------------------


async def test_weighted_majority_outweighs_a_plain_majority() -> None:
    replies = ["check\n\nAnswer: 42", "guess\n\nAnswer: 41", "guess\n\nAnswer: 41",
               "guess\n\nAnswer: 41"]
    prm = ScriptedPRM({"check": 0.95, "guess": 0.2, "Answer": 0.9}, aggregation="min")
    result = await tl.arun(Q, "weighted-majority", n=4, prm="scripted",
                           worker=FakeWorker(replies), verifier=prm)
    assert result.answer == "42"  # 0.95 against 3 x 0.2
    plain = await tl.arun(Q, "self-consistency", n=4, worker=FakeWorker(replies))
    assert plain.answer == "41"
    assert result.usage.verifier_calls == 4


async def test_outcome_verifier_ranks_complete_solutions() -> None:
    worker = FakeWorker(["Answer: 41\n\n", "Answer: 42\n\n"])
    prm = ScriptedPRM({})
    beams = make_strategy("beam-search", width=2, expansions=1, prm="scripted",
                          outcome_verifier="numeric")
    problem = Problem(prompt="What is 6 * 7?", answer_format="number", reference="42")
    from threadloom.orchestrator.context import RunContext
    from threadloom.verifiers.numeric import NumericVerifier

    ctx = RunContext(problem, worker, verifiers={"scripted": prm, "numeric": NumericVerifier()})
    ranked = await beams.run(ctx, [])
    assert [c.answer for c in ranked] == ["42", "41"]


def test_unknown_prm_is_a_clear_error() -> None:
    with pytest.raises(tl.ConfigError, match="cannot score steps"):
        tl.run(Q, "beam-search", prm="numeric", worker=FakeWorker(["x"]))


async def test_searches_are_graph_nodes_with_their_own_budgets() -> None:
    from threadloom.orchestrator.plan import StrategyGraph

    worker = FakeWorker(good_or_bad)
    prm = ScriptedPRM({"good": 0.9, "bad": 0.1, "Answer": 0.8})
    plan = (
        StrategyGraph()
        .add("beam", {"kind": "beam-search", "width": 2, "expansions": 2, "prm": "scripted"})
        .add("particles", "particle-filtering:n=4,prm=scripted",
             budget=Budget(max_generations=3))
        .add("final", "vote", inputs=["beam", "particles"])
        .build()
    )
    result = await tl.arun(Q, plan, worker=worker, verifier=prm, seed=2)
    assert result.answer == "42"
    particle_requests = [r for r in worker.requests if r.affinity_key
                         and r.affinity_key.startswith("particle")]
    assert len(particle_requests) == 3  # the node's own budget stopped it
    assert result.truncated
