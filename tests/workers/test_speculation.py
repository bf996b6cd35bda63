"""Speculative decoding: the prompt-lookup drafter, the adaptive controller on synthetic timings,
and prompt-lookup speculation on the real llama.cpp worker (output identical to plain decoding)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import llama_cpp
import numpy as np
import pytest

import threadloom as tl
from threadloom.errors import ConfigError
from threadloom.types import ChatMessage, GenerationRequest, SamplingParams
from threadloom.workers.llamacpp.speculation import (
    DraftPacer,
    PromptLookup,
    SpeculationConfig,
    SpeculationController,
    SpeculationState,
)
from threadloom.workers.llamacpp.worker import LlamaCppWorker

# ----- prompt lookup ------------------------------------------------------------------------


def lookup(tokens: list[int], limit: int = 8, max_n: int = 3, min_n: int = 1) -> list[int]:
    return PromptLookup(max_n, min_n).propose(np.asarray(tokens, dtype=np.int32), limit)


def test_prompt_lookup_continues_the_most_recent_earlier_match() -> None:
    #           0  1  2  3  4  5  6  7  8  9
    history = [1, 2, 3, 4, 5, 1, 2, 3, 9, 1, 2]
    # the tail (1, 2) occurs at 0 and 5; the later occurrence is followed by 3, 9, 1, 2
    assert lookup(history) == [3, 9, 1, 2]
    assert lookup(history, limit=2) == [3, 9]


def test_prompt_lookup_prefers_longer_ngrams_and_respects_the_minimum() -> None:
    # the bigram (7, 8) matches at 0 (then 5); the unigram 8 alone matches later, at 4 (then 6)
    history = [7, 8, 5, 0, 8, 6, 3, 7, 8]
    assert lookup(history, max_n=2) == [5, 0, 8, 6, 3, 7, 8]
    assert lookup([4, 8, 6, 1, 8], max_n=2, min_n=1) == [6, 1, 8]
    assert lookup([4, 8, 6, 1, 8], max_n=2, min_n=2) == []


def test_prompt_lookup_without_a_match_or_room_drafts_nothing() -> None:
    assert lookup([1, 2, 3, 4]) == []
    assert lookup([5]) == []
    assert lookup([1, 2, 1, 2], limit=0) == []


# ----- the controller on synthetic timings --------------------------------------------------

Goodput = Callable[[bool, int], float]
"""(speculating, step) -> tokens per second for that step."""


def drive(controller: SpeculationController, goodput: Goodput, steps: int, start: int = 0) -> int:
    """Feed `steps` decode steps with the given goodput; returns the next step number."""
    for step in range(start, start + steps):
        on = controller.speculating
        rate = goodput(on, step)
        controller.record(
            speculative=on,
            tokens=8,
            seconds=8 / rate,
            drafted=6 if on else 0,
            accepted=3 if on else 0,
            verifications=2 if on else 0,
        )
    return start + steps


def adaptive(**options: object) -> SpeculationController:
    config = SpeculationConfig(mode="adaptive", window_steps=4, probe_every=2, **options)
    return SpeculationController(config)


def test_adaptive_switches_on_when_speculation_pays_and_off_when_it_stops_paying() -> None:
    controller = adaptive(max_probe_every=8)
    state = controller.state()
    assert state.mode == "adaptive" and not state.speculating and state.goodput_on is None
    # speculation doubles goodput: after measuring both modes it turns on
    step = drive(controller, lambda on, _: 200.0 if on else 100.0, 40)
    state = controller.state()
    assert state.preferred == "on" and state.switches == 1
    assert state.goodput_on is not None and state.goodput_off is not None
    assert state.goodput_on > state.goodput_off
    assert state.last_decision.startswith(("switched on", "kept on"))
    # the traffic changes and drafts stop being accepted: speculation halves goodput
    step = drive(controller, lambda on, _: 50.0 if on else 100.0, 200, step)
    state = controller.state()
    assert state.preferred == "off" and state.switches == 2
    assert state.speedup is not None and state.speedup < 1
    assert state.last_decision.startswith(("switched off", "kept off"))
    # and it recovers: speculation is turned back on by a later probe
    drive(controller, lambda on, _: 300.0 if on else 100.0, 400, step)
    state = controller.state()
    assert state.preferred == "on" and state.switches == 3


def test_a_margin_below_the_hysteresis_never_switches() -> None:
    controller = adaptive(hysteresis=0.1)
    drive(controller, lambda on, _: 105.0 if on else 100.0, 2000)
    state = controller.state()
    assert state.switches == 0 and state.preferred == "off"
    assert state.speedup == pytest.approx(1.05, rel=1e-3)
    assert state.last_decision.startswith("kept off")


def test_noise_around_break_even_does_not_flap() -> None:
    rng = np.random.default_rng(0)
    noise = rng.uniform(0.92, 1.08, size=20000)
    controller = adaptive()
    drive(controller, lambda on, step: 100.0 * noise[step], 20000)
    state = controller.state()
    assert state.switches <= 1
    assert state.probes > 3


def test_machine_stalls_do_not_decide() -> None:
    # 3% of steps stall 50x (another process took the cores), in both modes alike
    stalled = np.random.default_rng(1).random(20000) < 0.03
    for speedup, preferred in ((1.5, "on"), (0.5, "off")):

        def goodput(on: bool, step: int, speedup: float = speedup) -> float:
            return (100 * speedup if on else 100.0) / (50 if stalled[step] else 1)

        controller = SpeculationController(SpeculationConfig())  # default windows
        drive(controller, goodput, 20000)
        state = controller.state()
        assert state.preferred == preferred and state.switches <= 1
        assert state.speedup == pytest.approx(speedup, rel=0.15)


def test_probes_back_off_while_they_confirm_the_choice() -> None:
    controller = adaptive(max_probe_every=64)
    drive(controller, lambda on, _: 50.0 if on else 100.0, 4000)
    state = controller.state()
    # 1000 windows: probing every 2 windows would be ~330 probes; doubling up to 64 keeps it small
    assert state.probes < 25
    assert state.steps_on < 0.1 * (state.steps_on + state.steps_off)
    assert state.preferred == "off"


def test_a_sudden_drop_is_probed_soon_not_after_the_backed_off_interval() -> None:
    controller = adaptive(max_probe_every=64)
    step = drive(controller, lambda on, _: 200.0 if on else 100.0, 3000)
    assert controller.state().preferred == "on"
    # probes have backed off to every 64 windows (256 steps); the drop is seen in a few windows
    drop = step
    while controller.state().preferred == "on":
        step = drive(controller, lambda on, _: 40.0 if on else 100.0, 1, step)
        assert step - drop <= 40
    assert controller.state().switches == 2


def test_the_ratio_of_adjacent_windows_ignores_load_changes() -> None:
    # the load (and with it absolute throughput) swings 5x every 50 steps; speculation always
    # costs half: comparing long-run averages from different loads would be fooled, adjacent
    # windows are not
    def goodput(on: bool, step: int) -> float:
        load = 5.0 if (step // 50) % 2 else 1.0
        return load * (30.0 if on else 60.0)

    controller = adaptive()
    drive(controller, goodput, 5000)
    state = controller.state()
    assert state.switches == 0 and state.preferred == "off"


def test_a_probe_is_judged_against_the_windows_on_both_sides_of_it() -> None:
    # a batch that drains: throughput falls steadily as its sequences finish, then the batch
    # refills. Speculation costs 20%. A probe compared with the window before it alone sees the
    # drain as its own cost (probing plain decoding from "on" makes "on" look better, and the
    # other way round), so the first choice sticks; bracketing the probe cancels the drift.
    def goodput(on: bool, step: int) -> float:
        drained = (step % 32) / 32
        return (0.8 if on else 1.0) * 400.0 * (1.0 - 0.9 * drained)

    controller = adaptive(max_probe_every=4)
    # speculation pays at first, so the controller turns it on
    step = drive(controller, lambda on, _: 300.0 if on else 100.0, 200)
    assert controller.state().preferred == "on"
    drive(controller, goodput, 6000, step)
    state = controller.state()
    assert state.preferred == "off"
    assert state.speedup is not None and state.speedup < 0.9


def test_fixed_modes_measure_but_never_switch() -> None:
    for mode, speculating in (("on", True), ("off", False)):
        controller = SpeculationController(SpeculationConfig(mode=mode, window_steps=4))
        drive(controller, lambda on, _: 50.0 if on else 100.0, 200)
        state = controller.state()
        assert state.speculating is speculating and state.switches == 0 and state.probes == 0
        measured = state.goodput_on if speculating else state.goodput_off
        unmeasured = state.goodput_off if speculating else state.goodput_on
        assert measured is not None and unmeasured is None


def test_counters_and_unmeasured_steps() -> None:
    controller = SpeculationController(SpeculationConfig(mode="on", window_steps=2))
    controller.record(speculative=True, tokens=100, seconds=0.01, drafted=10, accepted=4,
                      verifications=2, measured=False)  # fmt: skip
    state = controller.state()
    assert state.goodput_on is None and state.steps_on == 0
    assert (state.drafted_tokens, state.accepted_tokens) == (10, 4)
    assert state.acceptance_rate == pytest.approx(0.4)
    assert state.mean_accepted_length == pytest.approx(2.0)
    for _ in range(2):
        controller.record(speculative=True, tokens=10, seconds=0.1)
    assert controller.state().goodput_on == pytest.approx(100.0)


def test_a_pacer_shrinks_rejected_drafts_pauses_and_regrows() -> None:
    pacer = DraftPacer(first_room=8, most_pause=4)
    assert pacer.room(8) == 8
    pacer.verified(8, 2, 8)  # partly accepted: twice what was taken
    assert pacer.room(8) == 4
    pacer.verified(4, 4, 8)  # fully accepted: doubles, up to the most
    assert pacer.room(8) == 8
    pacer.verified(8, 5, 8)
    assert pacer.room(8) == 8
    pauses = []
    for _ in range(4):  # rejected in a row: 1, 2, 4, 4 steps without a draft
        pacer.verified(pacer.room(8) or 1, 0, 8)
        skipped = 0
        while pacer.room(8) == 0:
            skipped += 1
        pauses.append(skipped)
    assert pauses == [1, 2, 4, 4]
    assert pacer.room(8) == 1
    pacer.verified(1, 1, 8)  # an accepted token ends the backoff and regrows the room
    assert pacer.room(8) == 2
    pacer.verified(2, 0, 8)
    assert [pacer.room(8), pacer.room(8)] == [0, 1]


def test_a_pacer_starts_small_and_doubles_while_drafts_are_taken() -> None:
    pacer = DraftPacer()
    rooms = []
    for _ in range(4):
        rooms.append(pacer.room(8))
        pacer.verified(rooms[-1], rooms[-1], 8)
    assert rooms == [2, 4, 8, 8]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SpeculationConfig(min_ngram_size=4, max_ngram_size=2)
    with pytest.raises(ValueError):
        SpeculationConfig(mode="sometimes")  # type: ignore[arg-type]


# ----- the real llama.cpp worker --------------------------------------------------------------

CODE = """class Counter:
    def __init__(self):
        self.count = 0

    def increment(self):
        self.count += 1
        return self.count

    def reset(self):
        self.count = 0
"""
COPY_PROMPTS = (
    "Repeat this code exactly, but rename the class Counter to Tally:\n\n" + CODE,
    "Copy this list exactly: apple, banana, cherry, date, elderberry, fig, grape, honeydew.",
)
FREE_PROMPTS = (
    "Write a short story about a robot who learns to paint.",
    "What is the capital of France? Explain briefly.",
)


def chat(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=text),), params=SamplingParams(**params)
    )


Workers = dict[str, LlamaCppWorker]


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    """A plain and a speculating worker on the bundled model, fed the same requests in order.

    Equality is checked on single streams with flash attention on: then one token, or one token
    plus its draft, take the same llama.cpp CPU kernels and give the same logits bit for bit
    (without flash attention the attention products of several query rows round differently),
    while larger batches (many sequences at once) switch kernels with or without speculation.
    """
    made = {
        "off": LlamaCppWorker(
            n_slots=8, speculation="off", flash_attention=True, worker_id="spec-off"
        ),
        "on": LlamaCppWorker(
            n_slots=8, speculation="on", flash_attention=True, worker_id="spec-on"
        ),
    }
    yield made
    for worker in made.values():
        asyncio.run(worker.close())


async def both(workers: Workers, request: GenerationRequest) -> tuple[tl.Completion, ...]:
    plain = await workers["off"].generate(request)
    fast = await workers["on"].generate(request)
    return plain, fast


def assert_cache_matches_slots(worker: LlamaCppWorker) -> None:
    """Every sequence id holds exactly the cells its slot records: no rejected draft is left."""
    engine = worker._engine
    for slot in engine._slots:
        low = llama_cpp.llama_memory_seq_pos_min(engine._memory, slot.seq_id)
        high = llama_cpp.llama_memory_seq_pos_max(engine._memory, slot.seq_id)
        if slot.kv_tokens:
            assert (low, high) == (0, len(slot.kv_tokens) - 1)
        else:
            assert high == -1


@pytest.mark.slow
@pytest.mark.parametrize("prompt", COPY_PROMPTS + FREE_PROMPTS)
async def test_greedy_output_with_speculation_is_identical(workers: Workers, prompt: str) -> None:
    plain, fast = await both(workers, chat(prompt, temperature=0, max_tokens=48))
    assert fast.text == plain.text
    assert fast.finish_reason == plain.finish_reason
    assert fast.usage.completion_tokens == plain.usage.completion_tokens
    assert plain.drafted_tokens == plain.accepted_tokens == 0
    assert fast.accepted_tokens <= fast.drafted_tokens


@pytest.mark.slow
async def test_a_copy_task_drafts_and_accepts(workers: Workers) -> None:
    before = workers["on"].stats()
    plain, fast = await both(workers, chat(COPY_PROMPTS[0], temperature=0, max_tokens=48))
    after = workers["on"].stats()
    assert fast.text == plain.text
    assert 0 < fast.accepted_tokens <= fast.drafted_tokens
    assert fast.accepted_tokens < fast.usage.completion_tokens
    # accepted drafts are tokens decoded without a forward pass of their own
    assert after["steps"] - before["steps"] < fast.usage.completion_tokens
    state = after["speculation"]
    assert state["mode"] == "on" and state["drafted_tokens"] >= fast.drafted_tokens
    assert workers["on"].capabilities.speculative_decoding
    assert not workers["off"].capabilities.speculative_decoding


@pytest.mark.slow
async def test_seeded_sampling_is_unchanged_by_speculation(workers: Workers) -> None:
    # the acceptance rule samples the target distribution at every position, so a seeded
    # sampler draws the same tokens with or without drafts
    for prompt in COPY_PROMPTS:
        plain, fast = await both(workers, chat(prompt, temperature=0.8, seed=5, max_tokens=40))
        assert fast.text == plain.text


@pytest.mark.slow
async def test_max_tokens_stop_strings_and_logprobs_with_speculation(
    workers: Workers,
) -> None:
    short = chat(COPY_PROMPTS[1], temperature=0, max_tokens=5, logprobs=2)
    plain, fast = await both(workers, short)
    assert fast.finish_reason == plain.finish_reason == "length"
    assert fast.usage.completion_tokens == 5
    assert fast.logprobs is not None and plain.logprobs is not None
    assert [t.token for t in fast.logprobs] == [t.token for t in plain.logprobs]
    for a, b in zip(fast.logprobs, plain.logprobs, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
    counting = chat("Count from 1 to 20 separated by commas.", temperature=0, max_tokens=60)
    stopped = counting.model_copy(
        update={"params": counting.params.model_copy(update={"stop": ("9",)})}
    )
    plain, fast = await both(workers, stopped)
    assert fast.finish_reason == plain.finish_reason == "stop"
    assert fast.stop_reason == "9"
    assert fast.text == plain.text and "9" not in fast.text and "8" in fast.text


@pytest.mark.slow
async def test_abort_with_speculation_leaves_a_consistent_cache(
    workers: Workers,
) -> None:
    worker = workers["on"]
    request = chat(COPY_PROMPTS[0] * 3, temperature=0, max_tokens=400)
    task = asyncio.create_task(worker.generate(request))
    while worker.stats()["decoded_tokens"] == 0 or worker.stats()["live_sequences"] == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert await worker.abort(request.request_id)
    aborted = await task
    assert aborted.finish_reason == "abort"
    assert aborted.usage.completion_tokens < 400
    assert worker.stats()["live_sequences"] == 0
    assert_cache_matches_slots(worker)
    # the retained prefix (with its rejected drafts removed) serves the next request
    params = request.params.model_copy(update={"max_tokens": 24})
    again = await worker.generate(request.model_copy(update={"params": params}))
    assert again.usage.cached_prompt_tokens == again.usage.prompt_tokens - 1
    assert again.usage.completion_tokens == 24 and again.finish_reason == "length"
    assert_cache_matches_slots(worker)


@pytest.mark.slow
def test_a_request_whose_event_loop_closed_is_dropped(workers: Workers) -> None:
    worker = workers["on"]
    stream = worker.stream(chat(COPY_PROMPTS[0], temperature=0, max_tokens=300))
    gone = asyncio.new_event_loop()
    gone.run_until_complete(anext(stream))  # decoding has started; then the loop goes away
    gone.close()

    async def afterwards() -> None:
        for _ in range(500):
            if worker.stats()["live_sequences"] == 0:
                break
            await asyncio.sleep(0.01)
        assert worker.stats()["live_sequences"] == 0
        ok = await worker.generate(chat("Say hi.", temperature=0, max_tokens=4))
        assert ok.usage.completion_tokens >= 1

    asyncio.run(afterwards())
    assert_cache_matches_slots(worker)


@pytest.mark.slow
async def test_many_concurrent_sequences_with_speculation(workers: Workers) -> None:
    prompts = [p for p in COPY_PROMPTS + FREE_PROMPTS for _ in range(2)]
    requests = [chat(p, temperature=0.7, seed=i, max_tokens=32) for i, p in enumerate(prompts)]
    fast = await asyncio.gather(*(workers["on"].generate(r) for r in requests))
    for completion, request in zip(fast, requests, strict=True):
        assert 0 < completion.usage.completion_tokens <= 32
        assert completion.accepted_tokens <= completion.drafted_tokens
        assert completion.request_id == request.request_id
    assert sum(c.drafted_tokens for c in fast) > 0
    assert_cache_matches_slots(workers["on"])


@pytest.mark.slow
async def test_adaptive_worker_measures_both_modes() -> None:
    config = SpeculationConfig(mode="adaptive", window_steps=4, probe_every=1, max_probe_every=2)
    worker = LlamaCppWorker(n_slots=4, speculation=config)
    try:
        for prompt in COPY_PROMPTS * 2:
            await worker.generate(chat(prompt, temperature=0, max_tokens=48))
        state = SpeculationState.model_validate(worker.stats()["speculation"])
    finally:
        await worker.close()
    assert state.mode == "adaptive"
    assert state.goodput_on is not None and state.goodput_off is not None
    assert state.goodput_on > 0 and state.goodput_off > 0
    assert state.speedup is not None and state.probes >= 1
    assert state.steps_on > 0 and state.steps_off > 0
    assert state.last_decision.startswith(("kept", "switched"))


@pytest.mark.slow
async def test_speculation_counters_reach_usage_and_trace(workers: Workers) -> None:
    params = SamplingParams(temperature=0, max_tokens=32)
    result = await tl.arun(COPY_PROMPTS[0], "single", worker=workers["on"], params=params)
    assert result.usage.drafted_tokens > 0
    generations = [n for n in result.trace.nodes if n.kind == "generation"]
    assert generations and generations[0].data["drafted_tokens"] == result.usage.drafted_tokens
    assert generations[0].data["accepted_tokens"] == result.usage.accepted_tokens


def test_worker_rejects_bad_speculation_settings() -> None:
    with pytest.raises(ConfigError, match="not a mode"):
        LlamaCppWorker(speculation="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="inside the SpeculationConfig"):
        LlamaCppWorker(speculation=SpeculationConfig(), num_pred_tokens=4)
    with pytest.raises(ConfigError, match="invalid speculation"):
        LlamaCppWorker(speculation="on", num_pred_tokens=0)


@pytest.mark.slow
def test_cli_workers_shows_the_measured_speculation_state() -> None:
    from typer.testing import CliRunner

    from threadloom.cli.application import app

    result = CliRunner().invoke(app, ["workers", "--speculation"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for field in ("preferred", "goodput_on", "goodput_off", "acceptance_rate", "switches"):
        assert field in result.output
    assert "plain decoding" in result.output  # the last decision names the measured ratio
