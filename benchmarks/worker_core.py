"""Cost of the shared worker core on the streaming hot path, measured side by side.

Three pairs, each run in alternation so that machine noise hits both sides alike:

- thread bridge: items handed from a producer thread to the event loop through `ThreadBridge`
  (with its abort-on-early-exit generator) against the bare `call_soon_threadsafe` + queue loop
  that backends wrote inline before;
- completion builder: `CompletionBuilder.add` per delta against appending to a list and adding
  to a counter;
- FakeWorker: deltas per second through `FakeWorker.stream` (no token delay), the strategy tests'
  hot path, against a bare async generator that yields the same deltas.

Prints the rate of each side and their ratio (core / bare). Usage:
    python benchmarks/worker_core.py [--items 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from threadloom.types import GenerationRequest, SamplingParams
from threadloom.workers.base import StreamDelta
from threadloom.workers.core import CompletionBuilder, ThreadBridge
from threadloom.workers.fake import FakeWorker

_END = object()


def _produce(put: Callable[[object], None], items: int) -> None:
    for i in range(items):
        put(i)
    put(_END)


async def bridged(items: int) -> float:
    bridge: ThreadBridge[object] = ThreadBridge(abort=lambda: None, is_last=lambda x: x is _END)
    started = time.perf_counter()
    producer = threading.Thread(target=_produce, args=(bridge.put, items))
    producer.start()
    async for _ in bridge.drain():
        pass
    producer.join()
    return items / (time.perf_counter() - started)


async def bare_queue(items: int) -> float:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    started = time.perf_counter()
    producer = threading.Thread(target=_produce, args=(put, items))
    producer.start()
    while await queue.get() is not _END:
        pass
    producer.join()
    return items / (time.perf_counter() - started)


async def built(items: int) -> float:
    result = CompletionBuilder(GenerationRequest(text="x"), "bench")
    started = time.perf_counter()
    for _ in range(items):
        result.add(" word", 1)
    result.finish("length")
    return items / (time.perf_counter() - started)


async def bare_accumulation(items: int) -> float:
    parts: list[str] = []
    counts = [0]
    started = time.perf_counter()
    for _ in range(items):
        parts.append(" word")
        counts[0] += 1
    "".join(parts)
    return items / (time.perf_counter() - started)


def _long_request(items: int) -> GenerationRequest:
    return GenerationRequest(text="go", params=SamplingParams(max_tokens=items))


async def fake_worker(items: int) -> float:
    worker = FakeWorker((" ".join(["word"] * items),))
    started = time.perf_counter()
    async for _ in worker.stream(_long_request(items)):
        pass
    return items / (time.perf_counter() - started)


async def bare_generator(items: int) -> float:
    async def deltas() -> AsyncIterator[StreamDelta]:
        for _ in range(items):
            await asyncio.sleep(0)
            yield StreamDelta(text=" word", tokens=1)

    started = time.perf_counter()
    async for _ in deltas():
        pass
    return items / (time.perf_counter() - started)


async def side_by_side(
    core: Callable[[int], Awaitable[float]],
    bare: Callable[[int], Awaitable[float]],
    items: int,
    rounds: int,
) -> tuple[float, float]:
    cores, bares = [], []
    for _ in range(rounds):
        cores.append(await core(items))
        bares.append(await bare(items))
    return statistics.median(cores), statistics.median(bares)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pairs = {
        "thread bridge vs bare queue": (bridged, bare_queue),
        "completion builder vs list+counter": (built, bare_accumulation),
        "FakeWorker.stream vs bare generator": (fake_worker, bare_generator),
    }
    print(f"{'pair':40} {'core/s':>12} {'bare/s':>12} {'ratio':>7}")
    for name, (core, bare) in pairs.items():
        core_rate, bare_rate = await side_by_side(core, bare, args.items, args.rounds)
        print(f"{name:40} {core_rate:12.0f} {bare_rate:12.0f} {core_rate / bare_rate:7.2f}")


if __name__ == "__main__":
    asyncio.run(main())
