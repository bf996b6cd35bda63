"""One vote ranking for every voting strategy: the order of the candidates it returns and the
'vote' node it records."""

from __future__ import annotations

import threadloom as tl
from threadloom import FakeWorker, Problem
from threadloom.orchestrator.context import RunContext
from threadloom.strategies.tally import rank_by_vote
from threadloom.types import Candidate, Score
from threadloom.verifiers.voting import order_by_vote, vote

Q = Problem(prompt="What is 6 * 7?", answer_format="number")


def cand(answer: str | None, logprob: float = -1.0, node: str | None = None) -> Candidate:
    return Candidate(text=str(answer), answer=answer, mean_logprob=logprob, node_id=node)


def test_order_by_vote_puts_groups_by_rank_surest_first_and_non_voters_last() -> None:
    cands = [
        cand("7", -0.1),
        cand(None, -0.01),
        cand("42", -2.0),
        cand("42.0", -0.5),
        cand("", -0.2),
        cand("42", -1.0),
    ]
    ordered = order_by_vote(cands, vote(cands, "number"))
    assert ordered == [cands[3], cands[5], cands[2], cands[0], cands[1], cands[4]]
    assert [c.votes for c in ordered[:4]] == [3, 3, 3, 1]


def test_order_by_vote_keeps_every_candidate_when_all_voted() -> None:
    cands = [cand("1", -3.0), cand("2"), cand("1", -0.5)]
    assert order_by_vote(cands, vote(cands)) == [cands[2], cands[0], cands[1]]


async def test_self_consistency_records_the_vote_as_counts() -> None:
    worker = FakeWorker(["41", "42", "42.0", "Answer: 42", "43"])
    result = await tl.arun(Q, "self-consistency", n=5, worker=worker)
    [node] = [n for n in result.trace.nodes if n.kind == "vote"]
    assert node.label == "#42 with 3 of 5 samples"
    assert node.data["votes"] == {"42": 3, "41": 1, "43": 1}
    assert all(isinstance(v, int) for v in node.data["votes"].values())
    winners = {e.source for e in result.trace.edges if e.target == node.id and e.kind == "join"}
    assert winners == {c.node_id for c in result.candidates[:3]}
    assert [c.answer for c in result.candidates[3:]] == ["41", "43"]


async def test_weighted_votes_are_recorded_rounded() -> None:
    ctx = RunContext(Q, FakeWorker())
    scores = {"a": 0.25, "b": 0.3333333333}
    cands = [cand("1", node=ctx.root_node), cand("2"), cand("2")]
    for c, key in zip(cands, ("a", "b", "b"), strict=True):
        c.scores["w"] = Score(value=scores[key])
    ranked = rank_by_vote(ctx, cands, weight=lambda c: c.score_value("w") or 0.0, source="test")
    assert ranked[0].answer == "2"
    [node] = [d for _, d in ctx.trace.graph.nodes(data=True) if d["kind"] == "vote"]
    assert node["data"]["votes"] == {"2": 0.666667, "1": 0.25}
    assert node["data"]["source"] == "test"


async def test_a_verifier_breaks_a_tied_vote_by_summed_score() -> None:
    worker = FakeWorker(["41", "42"])
    result = await tl.arun(
        Q.model_copy(update={"reference": "42"}), "self-consistency", n=2, worker=worker,
        verifier="numeric",
    )
    assert [c.answer for c in result.candidates] == ["42", "41"]
