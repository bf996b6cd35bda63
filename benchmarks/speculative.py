"""Speculative decoding: tokens per second with speculation off, on and adaptive, side by side.

For each backend available here (the embedded llama.cpp worker; vLLM when it imports), three
workers run the same greedy requests: speculation off, always on (prompt lookup), and adaptive
(on only while it measures faster). Workloads: copy-heavy prompts (rewrite this code with one
change, copy a list, fix one word in a paragraph), where prompt lookup finds long drafts, and
free-form prompts, where it finds few; each one stream at a time and as a batch of concurrent
requests. The modes take turns in every repeat, so a load change on the machine hits them alike.

Prints completion tokens per second of wall time, the ratio to speculation off, the drafts,
the tokens decoded per model call, and what the adaptive controller measured and chose. "same
text" compares the single-stream greedy texts of the first repeat with plain decoding's (they
run before any concurrent batch: on llama.cpp's CPU kernels a batch of more than a few dozen
tokens rounds differently, so a prefix cached from a large batch can tip a near tie later).

    python benchmarks/speculative.py [--max-tokens 128] [--repeats 2] [--batch 4]
        [--backend all|llamacpp|vllm] [--vllm-model HF_FOLDER]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from threadloom.types import ChatMessage, Completion, GenerationRequest, SamplingParams
from threadloom.workers.base import SupportsStats, Worker
from threadloom.workers.llamacpp.speculation import SpeculationMode, SpeculationState
from threadloom.workers.llamacpp.worker import LlamaCppWorker

CODE = """def mean(values):
    total = 0
    for value in values:
        total += value
    return total / len(values)


def variance(values):
    m = mean(values)
    return sum((v - m) ** 2 for v in values) / len(values)
"""
PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff for over a hundred years. Every night "
    "its beam swept across the dark water, guiding fishing boats safely back to the harbour. "
    "The keeper climbed the spiral stairs each evening to light the lamp and wind the clock."
)
COPY = (
    f"Rewrite this code with one change: rename the function mean to average.\n\n{CODE}",
    "Copy this list exactly, then add one more fruit: apple, banana, cherry, date, "
    "elderberry, fig, grape, honeydew, kiwi, lemon, mango, nectarine.",
    f"Repeat this paragraph, replacing the word 'old' with 'ancient':\n\n{PARAGRAPH}",
)
FREE = (
    "Write a short story about a robot who learns to paint.",
    "Explain why the sky is blue.",
    "Give three tips for better sleep.",
)
MODES: tuple[SpeculationMode, ...] = ("off", "on", "adaptive")


@dataclass
class Tally:
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    drafted: int = 0
    accepted: int = 0
    steps: int = 0
    decoded: int = 0
    same: int = 0
    compared: int = 0

    @property
    def rate(self) -> float:
        return statistics.median(t / s for t, s in zip(self.tokens, self.seconds, strict=True))


def chat(prompt: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=prompt),),
        params=SamplingParams(temperature=0, max_tokens=max_tokens),
    )


def engine_counts(worker: Worker) -> tuple[int, int]:
    data = worker.stats() if isinstance(worker, SupportsStats) else {}
    return int(data.get("steps", 0)), int(data.get("decoded_tokens", 0))


async def run_workload(
    worker: Worker, prompts: tuple[str, ...], batch: int, max_tokens: int
) -> tuple[float, list[Completion]]:
    requests = [chat(p, max_tokens) for p in prompts]
    started = time.perf_counter()
    if batch == 1:
        outs = [await worker.generate(r) for r in requests]
    else:
        copies = [r.model_copy(update={"request_id": f"{r.request_id}-{i}"}) for r in requests
                  for i in range(batch)]  # fmt: skip
        outs = list(await asyncio.gather(*(worker.generate(r) for r in copies)))
    return time.perf_counter() - started, outs


async def bench_backend(
    name: str, workers: dict[str, Worker], args: argparse.Namespace, console: Console
) -> None:
    workloads = {
        "copy-heavy, 1 stream": (COPY, 1),
        "free-form, 1 stream": (FREE, 1),
        f"copy-heavy, {args.batch} concurrent": (COPY, args.batch),
        f"free-form, {args.batch} concurrent": (FREE, args.batch),
    }
    for worker in workers.values():  # warm-up: page in the weights, let adaptive take a look
        await run_workload(worker, COPY + FREE, 1, 32)
    modes = [m for m in MODES if m in workers]
    tallies: dict[tuple[str, str], Tally] = {(w, m): Tally() for w in workloads for m in modes}
    for repeat in range(args.repeats):
        for workload, (prompts, batch) in workloads.items():
            reference: list[str] = []
            for mode, worker in workers.items():
                steps0, decoded0 = engine_counts(worker)
                seconds, outs = await run_workload(worker, prompts, batch, args.max_tokens)
                steps1, decoded1 = engine_counts(worker)
                tally = tallies[(workload, mode)]
                tally.seconds.append(seconds)
                tally.tokens.append(sum(o.usage.completion_tokens for o in outs))
                tally.drafted += sum(o.drafted_tokens for o in outs)
                tally.accepted += sum(o.accepted_tokens for o in outs)
                tally.steps += steps1 - steps0
                tally.decoded += decoded1 - decoded0
                texts = [o.text for o in outs]
                if mode == "off":
                    reference = texts
                elif batch == 1 and repeat == 0:
                    tally.same += sum(a == b for a, b in zip(texts, reference, strict=True))
                    tally.compared += len(texts)
    title = f"{name}: speculation off / on / adaptive (greedy, max_tokens={args.max_tokens})"
    table = Table(title=title)
    for column in ("workload", "mode", "tok/s", "vs off", "drafted", "accepted", "accept %",
                   "tok/step", "same text"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("workload", "mode") else "right")
    for workload in workloads:
        base = tallies[(workload, "off")].rate
        for mode in modes:
            tally = tallies[(workload, mode)]
            rate = tally.accepted / tally.drafted if tally.drafted else 0.0
            per_step = tally.decoded / tally.steps if tally.steps else 0.0
            same = f"{tally.same}/{tally.compared}" if tally.compared else ""
            table.add_row(
                workload if mode == "off" else "",
                mode,
                f"{tally.rate:.1f}",
                f"{tally.rate / base:.2f}x",
                str(tally.drafted),
                str(tally.accepted),
                f"{100 * rate:.0f}" if tally.drafted else "-",
                f"{per_step:.2f}" if tally.steps else "-",
                same,
            )
        table.add_section()
    console.print(table)
    adaptive = workers.get("adaptive")
    if isinstance(adaptive, SupportsStats) and "preferred" in adaptive.stats()["speculation"]:
        state = SpeculationState.model_validate(adaptive.stats()["speculation"])
        console.print(
            f"adaptive controller: prefers {state.preferred}; goodput on {state.goodput_on} vs "
            f"off {state.goodput_off} tok/s, speculation {state.speedup}x; {state.probes} probes, "
            f"{state.switches} switches; {state.last_decision}"
        )


def vllm_workers(model: str | None, console: Console) -> dict[str, Worker] | None:
    """vLLM workers: off, and on with vLLM's n-gram (prompt-lookup) proposer; adaptive too
    when the vLLM worker accepts `speculation="adaptive"`. None when vLLM is missing.

    The vLLM model must be a Hugging Face folder or id (vLLM's CPU build reads no GGUF)."""
    if importlib.util.find_spec("vllm") is None:
        console.print("vLLM: not installed here, skipped")
        return None
    if model is None:
        console.print("vLLM: give --vllm-model (a Hugging Face model folder or id), skipped")
        return None
    from threadloom.errors import ConfigError
    from threadloom.workers.vllm.worker import VLLMWorker

    ngram = {
        "method": "ngram",
        "num_speculative_tokens": 8,
        "prompt_lookup_max": 3,
        "prompt_lookup_min": 2,
    }
    # settings that run well on a CPU (and keep two engines' KV caches small)
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    cpu = {
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 2048,
        "kv_cache_memory_bytes": 1 << 30,
    }
    workers: dict[str, Worker] = {
        "off": VLLMWorker(model, worker_id="vllm-off", **cpu),
        "on": VLLMWorker(model, worker_id="vllm-on", speculation=ngram, **cpu),
    }
    try:
        workers["adaptive"] = VLLMWorker(
            model, worker_id="vllm-adaptive", speculation="adaptive", **cpu
        )
    except ConfigError as exc:
        console.print(f"vLLM: no adaptive mode ({exc})")
    return workers


async def bench_llamacpp(args: argparse.Namespace, console: Console) -> None:
    llama: dict[str, Worker] = {
        mode: LlamaCppWorker(n_slots=16, speculation=mode, worker_id=f"spec-{mode}")
        for mode in MODES
    }
    model = llama["off"].capabilities.model
    try:
        await bench_backend(f"llama.cpp ({model})", llama, args, console)
    finally:
        for worker in llama.values():
            await worker.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--vllm-model", help="Model for the vLLM rows (when vLLM is installed).")
    parser.add_argument("--backend", choices=("all", "llamacpp", "vllm"), default="all")
    args = parser.parse_args()
    console = Console(width=150)
    if args.backend != "vllm":
        await bench_llamacpp(args, console)
    if args.backend == "llamacpp":
        return
    others = vllm_workers(args.vllm_model, console)
    if others is None:
        return
    try:
        await bench_backend("vLLM", others, args, console)
    finally:
        for worker in others.values():
            await worker.close()


if __name__ == "__main__":
    asyncio.run(main())
