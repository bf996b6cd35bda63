"""The math verifier runs each distinct check once: agreeing samples share it, a verdict met
again is remembered, and a check every caller gave up on is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from threadloom import Candidate, Problem
from threadloom.verifiers.extract import extract_answer
from threadloom.verifiers.math import MathVerifier

HALF = Problem(prompt="q", reference="\\frac{1}{2}", answer_format="boxed")


def _candidate(text: str) -> Candidate:
    return Candidate(text=text, answer=extract_answer(text, "boxed"))


class Spied:
    """A MathVerifier whose checks (each a round trip to its worker process) are recorded."""

    def __init__(self) -> None:
        self.verifier = MathVerifier(timeout_s=60)
        self.checks: list[tuple[str, str]] = []
        self.cancelled: list[tuple[str, str]] = []
        run = self.verifier._run

        async def recorded(reference: str, target: str) -> tuple[bool, str]:
            self.checks.append((reference, target))
            try:
                return await run(reference, target)
            except asyncio.CancelledError:
                self.cancelled.append((reference, target))
                raise

        self.verifier._run = recorded  # type: ignore[method-assign]


@pytest.fixture
def spied() -> Iterator[Spied]:
    made = Spied()
    try:
        yield made
    finally:
        made.verifier.close()


async def test_agreeing_samples_share_one_check_and_it_is_remembered(spied: Spied) -> None:
    texts = ["so \\boxed{0.5}"] * 6 + ["so \\boxed{3}"] * 2
    scores = await asyncio.gather(*(spied.verifier.score(HALF, _candidate(t)) for t in texts))
    assert [s.passed for s in scores] == [True] * 6 + [False] * 2
    assert sorted(target for _, target in spied.checks) == ["\\boxed{0.5}", "\\boxed{3}"]
    again = await spied.verifier.score(HALF, _candidate("it is \\boxed{0.5}"))
    assert again.passed is True and len(spied.checks) == 2
    other = Problem(prompt="q", reference="3", answer_format="boxed")
    assert (await spied.verifier.score(other, _candidate("so \\boxed{3}"))).passed is True
    assert len(spied.checks) == 3  # another reference is another check


async def test_a_check_all_its_callers_left_is_cancelled_then_runs_again(spied: Spied) -> None:
    waiting = asyncio.ensure_future(spied.verifier.score(HALF, _candidate("\\boxed{0.5}")))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    for _ in range(100):  # the check stops at its next step
        if spied.cancelled:
            break
        await asyncio.sleep(0.01)
    assert spied.cancelled == [("\\frac{1}{2}", "\\boxed{0.5}")]
    assert (await spied.verifier.score(HALF, _candidate("\\boxed{0.5}"))).passed is True
    assert len(spied.checks) == 2


async def test_a_caller_leaving_does_not_stop_the_check_for_the_others(spied: Spied) -> None:
    leaving = asyncio.ensure_future(spied.verifier.score(HALF, _candidate("\\boxed{0.5}")))
    staying = asyncio.ensure_future(spied.verifier.score(HALF, _candidate("\\boxed{0.5}")))
    await asyncio.sleep(0.05)
    leaving.cancel()
    assert (await staying).passed is True
    assert leaving.cancelled()
    assert spied.checks == [("\\frac{1}{2}", "\\boxed{0.5}")] and spied.cancelled == []
