"""Strategies that order candidates by a vote use the one vote ordering: the winning answer's
samples first, the surest (highest mean log-probability) first among them, the answerless last."""

from __future__ import annotations

import threadloom as tl
from threadloom.types import GenerationRequest

# FakeWorker's per-token log-probabilities: "a" is near 0, "z" about -1.7, so "a 42" is the
# surer of the two samples that answer 42
_REPLIES = {"0": "z 42", "1": "a 42", "2": ""}


def _by_sample(request: GenerationRequest, _: int) -> str:
    return _REPLIES[request.request_id.rsplit("-", 1)[1]]


async def test_first_finish_orders_its_finishers_by_the_vote() -> None:
    result = await tl.arun(
        "What is 6 * 7?", "first-finish", n=3, k=3, worker=tl.FakeWorker(_by_sample)
    )
    assert [c.text for c in result.candidates] == ["a 42", "z 42", ""]
    assert [c.answer for c in result.candidates] == ["42", "42", None]
    first, second, _ = result.candidates
    assert first.mean_logprob is not None and second.mean_logprob is not None
    assert first.mean_logprob > second.mean_logprob
    assert [c.votes for c in result.candidates[:2]] == [2, 2]
