"""VLLMWorker on vLLM's CPU engine with the bundled SmolLM2-135M (converted to safetensors).

The engine tests need the [vllm] extra plus `gguf` and `accelerate` (for the conversion) and are
skipped without them; the settings checks at the top run everywhere. One engine serves most
tests; speculation and the pooling (reward) runner start engines of their own and close them.
Startup, conversion and engine times are printed in the terminal summary.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import threadloom as tl
from threadloom import (
    ConfigError,
    GenerationRequest,
    MissingDependencyError,
    ModelNotFoundError,
    SamplingParams,
)
from threadloom.errors import ContextLengthError, WorkerDead
from threadloom.types import ChatMessage
from threadloom.workers.vllm.config import VLLMConfig, build_config

KV_CACHE = 256 * 1024 * 1024
ENGINE = {
    "dtype": "float32",
    "enforce_eager": True,
    "max_model_len": 1024,
    "kv_cache_memory_bytes": KV_CACHE,
    "max_num_seqs": 16,
}
COPY_TASK = (
    "Repeat this code exactly:\n"
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\n"
    "def mul(a, b):\n    return a * b\n"
)


def chat(text: str, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=text),), params=SamplingParams(**params)
    )


# ----- settings: checked before any engine starts (no vLLM needed) --------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_ctx": 4096}, "n_ctx: unknown option"),
        ({"engine_kwargs": {"dtype": "half"}}, "engine_kwargs sets dtype"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"speculative_config": {"method": "ngram"}}, "num_speculative_tokens: Field required"),
        (
            {"speculative_config": {"method": "ngram", "num_speculative_tokens": 4,
                                    "prompt_lookup_min": 5, "prompt_lookup_max": 2}},
            "prompt_lookup_min=5 is above prompt_lookup_max=2",
        ),
        ({"speculative_config": {"method": "medusa"}}, "method must be one of ngram"),
        ({"speculative_config": {"method": "eagle3"}}, "eagle3.model: Field required"),
        (
            {"runner": "pooling",
             "speculative_config": {"method": "ngram", "num_speculative_tokens": 2}},
            "does not apply to runner='pooling'",
        ),
    ],
)  # fmt: skip
def test_bad_settings_name_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_config("org/model", options)


def test_settings_map_to_engine_arguments() -> None:
    spec = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3}
    config = build_config("org/model", {"max_model_len": 512}, speculation=spec)
    args = config.engine_arguments(on_cpu=True)
    assert args["speculative_config"] == {
        "method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3,
    }  # fmt: skip
    assert args["per_request_spec_decode_metrics"] == "summary"
    assert args["enable_chunked_prefill"] is False  # seeded requests crash chunked CPU prefill
    assert args["enable_prefix_caching"] is True and args["max_model_len"] == 512
    assert "enable_chunked_prefill" not in config.engine_arguments(on_cpu=False)
    chunked = VLLMConfig(model="m", enable_chunked_prefill=True)
    assert not chunked.seeds_supported(on_cpu=True) and chunked.seeds_supported(on_cpu=False)
    with pytest.raises(ConfigError, match="not both"):
        build_config("m", {"speculative_config": spec}, speculation=spec)
    with pytest.raises(ConfigError, match="needs a model"):
        build_config(None, {})
    with pytest.raises(ConfigError, match="'adaptive' is not available on vLLM"):
        build_config("m", {}, speculation="adaptive")
    assert build_config("m", {}, speculation="off").speculative_config is None


def test_missing_local_model_folder_fails_first() -> None:
    from threadloom.workers.vllm.worker import VLLMWorker

    with pytest.raises(ModelNotFoundError, match="model folder not found"):
        VLLMWorker("/nonexistent/model-folder")


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadloom.workers.vllm.worker import VLLMWorker

    before = set(threading.enumerate())
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'threadloom\[vllm\]'"):
        VLLMWorker("org/model")
    # the engine thread is gone again (threads of earlier tests may have ended meanwhile)
    assert not set(threading.enumerate()) - before


def test_logprob_conversion_keeps_the_sampled_token_apart() -> None:
    from types import SimpleNamespace as NS

    from threadloom.workers.vllm.outputs import convert_logprobs

    position = {
        5: NS(logprob=-0.1, rank=1, decoded_token=" a"),
        7: NS(logprob=-2.5, rank=2, decoded_token=" b"),
        9: NS(logprob=-4.0, rank=40, decoded_token=" z"),  # sampled, outside the top 2
    }
    (sampled,) = convert_logprobs([9], [position], top=2)
    assert (sampled.token, sampled.logprob) == (" z", -4.0)
    assert sampled.top == {" a": -0.1, " b": -2.5}
    (greedy,) = convert_logprobs([5], [position], top=0)
    assert greedy.token == " a" and greedy.top == {}


# ----- the engine ---------------------------------------------------------------------------


def _timings(config: pytest.Config) -> dict[str, float]:
    return config.stash.setdefault(_TIMINGS, {})


_TIMINGS = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def model_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The bundled GGUF converted to a safetensors folder once (cached across sessions)."""
    pytest.importorskip("vllm", reason="needs the [vllm] extra")
    for package in ("gguf", "accelerate", "safetensors"):
        pytest.importorskip(package, reason="converting the bundled GGUF needs it")
    from vllm_model import converted_model_dir

    path, seconds = converted_model_dir()
    if seconds:
        _timings(request.config)["model conversion"] = seconds
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # 2 cores: use both for the engine
        yield path
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            for name, value in _timings(request.config).items():
                reporter.write_line(f"vllm timing: {name} {value:.1f} s")


@pytest.fixture(scope="session")
def worker(model_dir: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    from threadloom.workers.vllm.worker import VLLMWorker

    before = engine_processes()
    started = time.perf_counter()
    worker = VLLMWorker(model_dir, worker_id="test-vllm", **ENGINE)
    _timings(request.config)["engine start"] = time.perf_counter() - started
    try:
        yield worker
    finally:
        asyncio.run(worker.close())
        assert engine_processes() <= before, "the engine left processes behind"


def engine_processes() -> set[int]:
    """This process's descendants that are vLLM engine processes (by command line)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    stack = [os.getpid()]
    while stack:
        for pid in children.get(stack.pop(), []):
            found.add(pid)
            stack.append(pid)
    engines = set()
    for pid in found:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"VLLM" in cmdline or b"multiprocessing.spawn" in cmdline:
            engines.add(pid)
    return engines


@pytest.mark.vllm
def test_engine_options_are_checked_against_the_installed_vllm(model_dir: Path) -> None:
    from threadloom.workers.vllm.worker import VLLMWorker

    before = engine_processes()
    with pytest.raises(ConfigError, match=r"'max_num_seq'.*did you mean max_num_seqs"):
        VLLMWorker(model_dir, engine_kwargs={"max_num_seq": 4})
    spec = {"method": "ngram", "num_speculative_tokens": 2, "lookup_window": 3}
    with pytest.raises(ConfigError, match="speculative_config option 'lookup_window'"):
        VLLMWorker(model_dir, speculation=spec)
    with pytest.raises(ConfigError, match="vLLM rejected the engine settings"):
        VLLMWorker(model_dir, max_model_len=10**6, **{k: v for k, v in ENGINE.items()
                                                       if k != "max_model_len"})  # fmt: skip
    assert engine_processes() == before  # nothing was started


@pytest.mark.vllm
async def test_greedy_chat_generation(worker: Any) -> None:
    first = await worker.generate(chat("Which animal says meow?", temperature=0, max_tokens=24))
    second = await worker.generate(chat("Which animal says meow?", temperature=0, max_tokens=24))
    assert "cat" in first.text.lower()
    assert first.text == second.text and first.finish_reason == "stop"
    assert first.usage.prompt_tokens > 10 and 0 < first.usage.completion_tokens <= 24
    assert first.timings.total_s >= first.timings.first_token_s > 0
    assert first.worker_id == "test-vllm"
    caps = worker.capabilities
    assert caps.max_context == 1024 and caps.max_batch == 16 and caps.prefix_caching


@pytest.mark.vllm
async def test_prefix_continuation_and_plain_text(worker: Any) -> None:
    prefix = 'The animal that says "meow" is a'  # the start of its greedy answer
    request = chat("Which animal says meow?", temperature=0, max_tokens=6)
    continued = await worker.generate(request.model_copy(update={"prefix": prefix}))
    assert worker.render(request.model_copy(update={"prefix": prefix})).endswith(prefix)
    assert "cat" in continued.text.lower()
    plain = await worker.generate(
        GenerationRequest(text="1, 2, 3, 4,", params=SamplingParams(temperature=0, max_tokens=6))
    )
    assert plain.text.strip().startswith("5")
    with pytest.raises(ContextLengthError):
        await worker.generate(GenerationRequest(text="word " * 1100))


@pytest.mark.vllm
async def test_concurrent_requests_share_the_engine(worker: Any) -> None:
    requests = [chat(f"Name an animal that starts with {c}.", max_tokens=24) for c in "ABCDEFGH"]
    started = time.perf_counter()
    outs = await asyncio.gather(*(worker.generate(r) for r in requests))
    batched = time.perf_counter() - started
    assert [o.request_id for o in outs] == [r.request_id for r in requests]
    assert all(o.text and o.finish_reason in ("stop", "length") for o in outs)
    one = await worker.generate(requests[0].model_copy(update={"request_id": "single"}))
    # eight sequences decode together: far less than eight times one sequence's time
    assert batched < 4 * max(one.timings.total_s, 0.5)


@pytest.mark.vllm
async def test_stream_deltas_add_up_and_stop_strings_never_leak(worker: Any) -> None:
    deltas: list[str] = []
    final = None
    request = chat("Count from 1 to 20 separated by commas.", temperature=0, max_tokens=60,
                   stop=["5"])  # fmt: skip
    async for delta in worker.stream(request):
        deltas.append(delta.text)
        if delta.completion is not None:
            final = delta.completion
    assert final is not None
    assert "".join(deltas) == final.text
    assert len([d for d in deltas if d]) >= 3
    assert final.finish_reason == "stop" and final.stop_reason == "5"
    assert "5" not in final.text and "4" in final.text


@pytest.mark.vllm
async def test_logprobs(worker: Any) -> None:
    out = await worker.generate(chat("Say hello.", temperature=0, max_tokens=8, logprobs=3))
    assert out.logprobs is not None and len(out.logprobs) == out.usage.completion_tokens
    for token in out.logprobs:
        assert token.logprob <= 0 and 1 <= len(token.top) <= 3
        # greedy: the chosen token is the most likely one
        assert max(token.top.values()) == pytest.approx(token.logprob, abs=1e-4)
    assert "".join(t.token for t in out.logprobs).strip() == out.text.strip()
    none = await worker.generate(chat("Say hello.", max_tokens=4))
    assert none.logprobs is None


@pytest.mark.vllm
async def test_seeded_sampling_reproduces(worker: Any) -> None:
    long = "Here is a story. " + "The fox ran over the hill and back. " * 60
    requests = [chat(long + f"Name fruit number {i}.", temperature=1.0, max_tokens=12, seed=7)
                for i in range(3)]  # fmt: skip
    first = await asyncio.gather(*(worker.generate(r) for r in requests))
    again = await asyncio.gather(
        *(worker.generate(r.model_copy(update={"request_id": f"again-{i}"}))
          for i, r in enumerate(requests))
    )  # fmt: skip
    assert [o.text for o in first] == [o.text for o in again]


@pytest.mark.vllm
async def test_chunked_prefill_on_cpu_drops_seeds_instead_of_crashing(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A seeded request whose prefill is split kills vLLM's CPU engine; the worker drops seeds."""
    from threadloom.workers.vllm.worker import VLLMWorker

    chunked = VLLMWorker(
        model_dir,
        enable_chunked_prefill=True,
        engine_kwargs={"max_num_batched_tokens": 64},  # a 200-token prompt takes 4 chunks
        **{**ENGINE, "max_model_len": 512, "kv_cache_memory_bytes": 64 * 1024 * 1024},
    )
    try:
        request = GenerationRequest(
            text="word " * 200, params=SamplingParams(temperature=1.0, max_tokens=4, seed=3)
        )
        with caplog.at_level(logging.WARNING, logger="threadloom.workers.vllm.worker"):
            first = await chunked.generate(request)
            second = await chunked.generate(request.model_copy(update={"request_id": "again"}))
        assert first.finish_reason == second.finish_reason == "length"
        assert "per-request seeds are dropped" in caplog.text
    finally:
        await chunked.close()


@pytest.mark.vllm
async def test_abort_mid_generation(worker: Any) -> None:
    request = chat("Write a very long essay about the history of Rome.", max_tokens=400)
    seen: list[str] = []

    async def consume() -> Any:
        async for delta in worker.stream(request):
            seen.append(delta.text)
            if delta.completion is not None:
                return delta.completion
        return None

    task = asyncio.create_task(consume())
    while len(seen) < 5:
        await asyncio.sleep(0.05)
    assert await worker.abort(request.request_id)
    out = await asyncio.wait_for(task, 30)
    assert out.finish_reason == "abort"
    assert 5 <= out.usage.completion_tokens < 100
    assert out.text == "".join(seen)
    assert not await worker.abort(request.request_id)
    assert not await worker.abort("never-submitted")
    # a cancelled caller aborts its request in the engine too
    cancelled = asyncio.create_task(worker.generate(chat("Tell me a long story.", max_tokens=400)))
    await asyncio.sleep(1.0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    for _ in range(100):
        if worker._engine.get_num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.05)
    assert worker._engine.get_num_unfinished_requests() == 0
    assert worker.stats()["live_requests"] == 0


@pytest.mark.vllm
async def test_prefix_cache_serves_a_shared_long_prefix(worker: Any) -> None:
    shared = "Background: " + " ".join(f"item{i} is filed under shelf {i % 7}." for i in range(60))
    first = await worker.generate(chat(shared + "\nWhere is item3?", temperature=0, max_tokens=4))
    second = await worker.generate(chat(shared + "\nWhere is item9?", temperature=0, max_tokens=4))
    assert first.usage.prompt_tokens > 300
    # vLLM's CPU engine caches whole 128-token blocks
    assert second.usage.cached_prompt_tokens >= 256
    assert worker.stats()["prefix_cache_hits"] >= second.usage.cached_prompt_tokens


@pytest.mark.vllm
def test_best_of_n_run_on_the_vllm_worker(worker: Any) -> None:
    result = tl.run("What is 17 + 25? Give only the number.", strategy="best-of-n", n=4,
                    worker=worker, seed=1)  # fmt: skip
    assert len(result.candidates) == 4
    assert result.usage.generations == 4 and result.usage.completion_tokens > 0
    assert result.best is not None and result.text


@pytest.mark.vllm
async def test_ngram_speculation_keeps_greedy_output_and_counts(
    worker: Any, model_dir: Path, request: pytest.FixtureRequest
) -> None:
    from threadloom.workers.registry import make_worker

    baseline = await worker.generate(chat(COPY_TASK, temperature=0, max_tokens=60))
    before = engine_processes()
    started = time.perf_counter()
    spec = make_worker(
        f"vllm:{model_dir}",
        speculation={"method": "ngram", "num_speculative_tokens": 4,
                     "prompt_lookup_min": 2, "prompt_lookup_max": 3},
        worker_id="test-vllm-spec",
        **ENGINE,
    )  # fmt: skip
    _timings(request.config)["engine start (ngram speculation)"] = time.perf_counter() - started
    try:
        assert spec.capabilities.speculative_decoding
        out = await spec.generate(chat(COPY_TASK, temperature=0, max_tokens=60))
        assert out.text == baseline.text
        assert out.drafted_tokens > 0 and 0 < out.accepted_tokens <= out.drafted_tokens
        stats = spec.stats()["speculation"]
        assert stats["method"] == "ngram" and stats["requests"] == 1
        assert stats["drafted_tokens"] >= out.drafted_tokens > 0
        assert stats["accepted_tokens"] >= out.accepted_tokens
        assert stats["acceptance_rate"] is not None and 0 < stats["acceptance_rate"] <= 1
        assert stats["mean_accepted_length"] is not None and stats["mean_accepted_length"] > 0
        assert worker.stats()["speculation"]["drafted_tokens"] == 0
    finally:
        await spec.close()
    assert engine_processes() <= before
    with pytest.raises(WorkerDead):
        await spec.generate(chat("hi"))


@pytest.mark.vllm
async def test_pooling_runner_hosts_a_step_reward_model(model_dir: Path) -> None:
    """SmolLM2 as a Math-Shepherd-style PRM: p('+') vs p('-') at each step tag."""
    from transformers import AutoTokenizer

    from threadloom.verifiers.vllm_prm import SHEPHERD_TAG, VLLMProcessRewardModel
    from threadloom.workers.vllm.worker import VLLMWorker

    tag_id = AutoTokenizer.from_pretrained(str(model_dir)).encode(
        SHEPHERD_TAG, add_special_tokens=False
    )[-1]  # the tag's last token marks each step
    before = engine_processes()
    prm_worker = VLLMWorker(
        model_dir,
        runner="pooling",
        worker_id="test-vllm-prm",
        dtype="float32",
        enforce_eager=True,
        max_model_len=512,
        kv_cache_memory_bytes=64 * 1024 * 1024,
        engine_kwargs={
            "convert": "classify",
            "hf_overrides": {"classifier_from_token": ["+", "-"], "method": "no_post_processing"},
            "pooler_config": {"tok_pooling_type": "STEP", "step_tag_id": tag_id},
        },
    )
    try:
        assert prm_worker.tokenize(SHEPHERD_TAG, add_special_tokens=False)[-1] == tag_id
        prm = VLLMProcessRewardModel(worker=prm_worker, fmt="shepherd")
        problem = tl.Problem(prompt="What is 6 * 7?")
        scores = await prm.score_steps(problem, ["6 * 7 = 42", "The answer is 42"])
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
        rows = await prm_worker.encode("What is 1 + 1? 1 + 1 = 2" + SHEPHERD_TAG)
        assert len(rows) == 1 and sum(rows[0]) == pytest.approx(1.0, abs=1e-4)
        with pytest.raises(ConfigError, match="pooling model"):
            await prm_worker.generate(chat("hi"))
    finally:
        await prm_worker.close()
    assert engine_processes() <= before
