"""First-Finish, Skeleton-of-Thought and threads on scripted FakeWorkers; streaming events."""

from __future__ import annotations

import asyncio

import pytest

import threadloom as tl
from threadloom import FakeWorker, Problem
from threadloom.strategies.registry import make_strategy
from threadloom.strategies.skeleton import parse_skeleton
from threadloom.strategies.threads import parse_outlines
from threadloom.types import Completion, GenerationRequest, TokenLogprob
from threadloom.verifiers.prm import yes_no_probability as yes_probability
from threadloom.workers.base import StreamDelta

Q = Problem(prompt="What is 6 * 7?", answer_format="number")


# ----- first-finish ----------------------------------------------------------------------


async def test_first_finish_keeps_the_shortest_and_aborts_the_rest() -> None:
    replies = ["long " * 150 + "41", "short 42", "long " * 150 + "43", "long " * 150 + "44"]
    worker = FakeWorker(replies, token_delay_s=0.002)
    result = await tl.arun(Q, "first-finish", n=4, worker=worker)
    assert result.answer == "42"
    assert len(result.candidates) == 1
    best = result.best
    assert best is not None and best.metadata["aborted"] == 3
    assert best.metadata["tokens_after_decision"] <= 3
    assert result.usage.aborted_generations == 3
    # the losers were stopped early, far short of their 151 tokens
    assert result.usage.completion_tokens < 2 + 3 * 20
    await asyncio.sleep(0.05)
    assert worker.in_flight == 0


async def test_first_finish_counts_only_losers_the_abort_actually_stopped() -> None:
    # a worker that lets every request run to its end: nothing was aborted, whatever was asked
    replies = ["long " * 40 + "41", "short 42", "long " * 40 + "43"]
    worker = FakeWorker(replies, token_delay_s=0.001, honours_abort=False)
    result = await tl.arun(Q, "first-finish", n=3, worker=worker)
    best = result.best
    assert best is not None and best.answer == "42"
    assert result.usage.aborted_generations == 0
    assert best.metadata["aborted"] == 0


async def test_adaptive_consistency_counts_only_losers_the_abort_actually_stopped() -> None:
    replies = ["42"] * 5 + ["long " * 40 + "7"] * 3
    worker = FakeWorker(replies, token_delay_s=0.001, honours_abort=False)
    result = await tl.arun(Q, "adaptive-consistency:max_n=8,wave=8,rule=margin", worker=worker)
    stop = result.candidates[0].metadata
    assert stop["stop_reason"] == "settled"
    assert result.usage.aborted_generations == 0
    assert stop["aborted"] == 0


async def test_first_k_finishers_vote() -> None:
    replies = ["a 42", "b 41", "c c 42", "long " * 100 + "40"]
    worker = FakeWorker(replies, token_delay_s=0.002)
    result = await tl.arun(Q, "first-finish", n=4, k=3, worker=worker)
    assert result.answer == "42"
    assert len(result.candidates) == 3


async def test_first_finishers_that_all_differ_go_to_the_surest_sample() -> None:
    # FakeWorker gives "a" a log-probability near 0 and "z" about -1.7: the last of the three
    # finishers is the surest, and with one vote each it wins the tie
    replies = ["z 41", "z z 40", "a a a 42", "long " * 100 + "39"]
    worker = FakeWorker(replies, token_delay_s=0.002)
    result = await tl.arun(Q, "first-finish", n=4, k=3, worker=worker)
    assert [c.metadata["finish_order"] for c in result.candidates] == [2, 0, 1]
    assert result.answer == "42"


def test_first_finish_rejects_k_above_n() -> None:
    with pytest.raises(tl.ConfigError, match="cannot exceed"):
        make_strategy("first-finish", n=2, k=3)


# ----- skeleton-of-thought ------------------------------------------------------------------


def test_parse_skeleton_handles_messy_numbering() -> None:
    assert parse_skeleton("1. Eat well\n2) Sleep\nStep 3: Exercise\n**4.** Relax") == [
        "Eat well",
        "Sleep",
        "Exercise",
        "Relax",
    ]
    assert parse_skeleton("Here: 1. Eat 2. Sleep 3. Run") == ["Eat", "Sleep", "Run"]
    assert parse_skeleton("- a\n- b\n* c\n- a") == ["a", "b", "c"]
    assert parse_skeleton("1. x\n1. x\n2.\n3. y", max_points=5) == ["x", "y"]
    assert parse_skeleton("no list at all") == []
    assert len(parse_skeleton("\n".join(f"{i}. p{i}" for i in range(1, 15)), 6)) == 6


def sot_script(request: GenerationRequest, index: int) -> str:
    content = (request.messages or ())[-1].content
    if "key points" in content:
        return " Mix flour\n2. Add eggs\n3. Bake it"
    point = content.rsplit(":", 1)[-1].strip()
    return f"Details about {point.lower()}."


async def test_skeleton_expands_points_in_parallel_and_in_order() -> None:
    worker = FakeWorker(sot_script, token_delay_s=0.01)
    result = await tl.arun(
        Problem(prompt="How do I bake a cake?"), "skeleton-of-thought", worker=worker
    )
    best = result.best
    assert best is not None
    assert best.steps == [
        "1. Details about mix flour.",
        "2. Details about add eggs.",
        "3. Details about bake it.",
    ]
    assert best.metadata["mode"] == "skeleton"
    assert result.usage.generations == 4
    expansion_prompts = [
        r for r in worker.requests if "Explain this point" in (r.messages or ())[-1].content
    ]
    assert len(expansion_prompts) == 3


async def test_malformed_skeleton_falls_back_to_a_direct_answer() -> None:
    worker = FakeWorker(lambda r, i: "just one thing" if i == 0 else "A direct answer.")
    result = await tl.arun(Problem(prompt="Why?"), "skeleton-of-thought", worker=worker)
    assert result.best is not None and result.best.metadata["mode"] == "direct"
    assert result.text == "A direct answer."


class RouterWorker(FakeWorker):
    def __init__(self, p_yes: float) -> None:
        super().__init__(sot_script)
        self.p_yes = p_yes

    async def stream(self, request):  # type: ignore[no-untyped-def, override]
        if "independent points" in (request.messages or ())[-1].content:
            import math

            top = {" Yes": math.log(self.p_yes), " No": math.log(1 - self.p_yes)}
            self.requests.append(request)
            yield StreamDelta(
                text="",
                completion=Completion(
                    text=" Yes",
                    finish_reason="length",
                    logprobs=(TokenLogprob(token=" Yes", logprob=top[" Yes"], top=top),),
                ),
            )
            return
        async for delta in super().stream(request):
            yield delta


async def test_router_decides_between_skeleton_and_direct() -> None:
    problem = Problem(prompt="How do I bake a cake?")
    yes = await tl.arun(problem, "skeleton-of-thought:router=true", worker=RouterWorker(0.9))
    no = await tl.arun(problem, "skeleton-of-thought:router=true", worker=RouterWorker(0.1))
    assert yes.best is not None and yes.best.metadata["mode"] == "skeleton"
    assert no.best is not None and no.best.metadata["mode"] == "direct"


def test_yes_probability_sums_variants_and_floors() -> None:
    import math

    assert yes_probability(
        {" Yes": math.log(0.3), "yes": math.log(0.3), "No": math.log(0.2)}
    ) == pytest.approx(0.75)
    assert yes_probability({"maybe": -0.1}) == pytest.approx(0.5)
    assert yes_probability({"Yes": -0.1}) > 0.99


# ----- threads ---------------------------------------------------------------------------


def test_parse_outlines() -> None:
    text = (
        "reason <Parallel>\n<Outlines>\n<Outline>1: add</Outline>\n"
        "<Outline>2: multiply</Outline>\n<Outline>3: extra</Outline>\n"
    )
    assert parse_outlines(text, 2) == ["add", "multiply"]
    assert parse_outlines("<Parallel> no outlines here", 4) == []
    assert parse_outlines("nothing", 4) == []


def thread_script(request: GenerationRequest, index: int) -> str:
    prefix = request.prefix
    if prefix.endswith("<Thread>\n1:"):
        return " 2 + 3 = 5\n</Thread>"
    if prefix.endswith("<Thread>\n2:"):
        return " 4 + 5 = 9\n</Thread>"
    if "</Parallel>" in prefix:
        return "So 5 * 9 = 45.\nAnswer: 45"
    return (
        "Let me split this.\n<Parallel>\n<Outlines>\n<Outline>1: 2 + 3</Outline>\n"
        "<Outline>2: 4 + 5</Outline>\n</Outlines>\nignored"
    )


async def test_threads_fork_at_the_block_and_join_in_order() -> None:
    worker = FakeWorker(thread_script, token_delay_s=0.002)
    result = await tl.arun(Problem(prompt="(2+3)*(4+5)?"), "threads", worker=worker)
    best = result.best
    assert best is not None and best.metadata["blocks"] == 1
    text = best.text
    assert text.index("1: 2 + 3 = 5") < text.index("2: 4 + 5 = 9") < text.index("</Parallel>")
    assert result.answer == "45"
    thread_requests = [r for r in worker.requests if r.prefix.endswith(":")]
    assert len(thread_requests) == 2
    assert len({r.affinity_key for r in thread_requests}) == 1
    kinds = [e.kind for e in result.trace.edges]
    assert kinds.count("join") == 2 and "fork" in kinds


async def test_threads_without_a_block_decode_sequentially() -> None:
    worker = FakeWorker(["I just answer directly. Answer: 7"])
    result = await tl.arun(Problem(prompt="3+4?"), "threads", worker=worker)
    assert result.best is not None and result.best.metadata["mode"] == "sequential"
    assert result.answer == "7"
    assert len(worker.requests) == 1


async def test_malformed_block_continues_without_forking() -> None:
    def script(request: GenerationRequest, index: int) -> str:
        if index == 0:
            return "<Parallel>\n<Outlines>\nno outline tags\n</Outlines>"
        return "fine. Answer: 3"

    worker = FakeWorker(script)
    result = await tl.arun(Problem(prompt="1+2?"), "threads", worker=worker)
    assert result.best is not None and result.best.metadata["blocks"] == 0
    assert result.answer == "3"


async def test_block_limit_is_respected() -> None:
    def script(request: GenerationRequest, index: int) -> str:
        if request.prefix.endswith(":"):
            return " part\n</Thread>"
        return (
            "<Parallel>\n<Outlines>\n<Outline>1: a</Outline>\n<Outline>2: b</Outline>\n</Outlines>"
        )

    worker = FakeWorker(script)
    result = await tl.arun(Problem(prompt="go"), "threads:max_blocks=2", worker=worker)
    assert result.best is not None and result.best.metadata["blocks"] == 2


# ----- streaming -------------------------------------------------------------------------


async def test_stream_yields_branch_events_then_the_result() -> None:
    worker = FakeWorker(["a b 42", "c 41"], token_delay_s=0.001)
    events = [e async for e in tl.stream(Q, "best-of-n", n=2, worker=worker)]
    types = [e.type for e in events]
    assert types.count("branch_start") == 2 and types.count("branch_end") == 2
    assert types.index("branch_start") < types.index("delta") < types.index("branch_end")
    assert types[-2:] == ["answer", "result"]
    assert events[-1].result is not None and events[-1].result.usage.generations == 2
    deltas = "".join(e.text for e in events if e.type == "delta")
    assert "42" in deltas


async def test_closing_the_stream_early_aborts_the_run() -> None:
    worker = FakeWorker(["tok " * 300], token_delay_s=0.002)
    stream = tl.stream(Q, "best-of-n", n=3, worker=worker)
    async for event in stream:
        if event.type == "delta":
            break
    await stream.aclose()
    await asyncio.sleep(0.05)
    assert worker.in_flight == 0
    assert worker.tokens_emitted < 3 * 300


async def test_first_finish_races_nested_strategies() -> None:
    def script(request: GenerationRequest, index: int) -> str:
        content = (request.messages or ())[-1].content
        if "key points" in content:
            # one skeleton is short, the others long
            return " a\n2. b" if index == 0 else " a\n2. b\n3. c\n4. d"
        return "word " * (3 if index < 3 else 60)

    worker = FakeWorker(script, token_delay_s=0.003)
    result = await tl.arun(
        Problem(prompt="Explain."),
        {"kind": "first-finish", "n": 4, "strategy": "skeleton-of-thought"},
        worker=worker,
    )
    best = result.best
    assert best is not None and best.metadata["mode"] == "skeleton"
    assert best.metadata["aborted"] == 3
    await asyncio.sleep(0.05)
    assert worker.in_flight == 0
    assert result.usage.aborted_generations >= 1
