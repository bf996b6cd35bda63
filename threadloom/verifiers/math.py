"""math: answer equivalence with the math-verify package, in a process pool.

math-verify bounds its parsing and checking with SIGALRM, which only works in a process's main
thread. Each check therefore runs in a worker process (where it is the main thread), and the
orchestrator adds its own wall-clock limit on top. SIGALRM cannot interrupt a long C call (a
huge integer power in a hostile answer), so a check that overruns that limit has its worker
processes killed and the pool replaced: later checks never queue behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from threadloom.errors import MissingDependencyError
from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.base import passed, unjudged
from threadloom.verifiers.extract import extract_boxed

logger = logging.getLogger(__name__)

_KEPT_VERDICTS = 256
"""Finished checks a verifier remembers, so an answer met again is not checked again."""
_KEPT_CHARS = 4000
"""Checks of longer text (reference and answer together) are shared while they run, but their
verdicts are not kept."""

Check = tuple[str, str]
"""(reference, the text math-verify reads the answer from)."""


def _check(gold: str, output: str) -> tuple[bool, str]:
    """Runs in a worker process."""
    from math_verify import parse, verify

    gold_parsed = parse(gold if "$" in gold or "\\boxed" in gold else f"${gold}$")
    answer_parsed = parse(output)
    if not answer_parsed:
        return False, "no parsable answer"
    return bool(verify(gold_parsed, answer_parsed)), f"parsed {answer_parsed[-1]!s}"[:120]


@dataclass(eq=False)
class _Running:
    task: asyncio.Task[tuple[bool, str]]
    waiting: int = 0


class _SharedChecks:
    """Each distinct check runs once: callers asking for one that is running wait for it, and
    finished verdicts are remembered (samples of a run mostly agree). A running check that all
    its callers gave up on is cancelled, as an unshared one would be."""

    def __init__(self) -> None:
        self._verdicts: dict[Check, tuple[bool, str]] = {}
        self._running: dict[Check, _Running] = {}

    async def check(
        self, reference: str, target: str, run: Callable[[str, str], Awaitable[tuple[bool, str]]]
    ) -> tuple[bool, str]:
        """The verdict of `run(reference, target)`, running it only when no caller has."""
        key = (reference, target)
        verdict = self._verdicts.get(key)
        if verdict is not None:
            return verdict
        running = self._running.get(key)
        if running is None or running.task.get_loop() is not asyncio.get_running_loop():
            running = self._running[key] = _Running(asyncio.ensure_future(run(*key)))
        running.waiting += 1
        try:
            verdict = await asyncio.shield(running.task)
        finally:
            running.waiting -= 1
            if running.task.done() or running.waiting == 0:
                if self._running.get(key) is running:
                    del self._running[key]
                if not running.task.done():
                    running.task.cancel()
        if len(reference) + len(target) <= _KEPT_CHARS:
            if len(self._verdicts) >= _KEPT_VERDICTS:
                del self._verdicts[next(iter(self._verdicts))]
            self._verdicts[key] = verdict
        return verdict


class MathVerifier:
    """Mathematical equivalence of the candidate's final answer and the reference.

    Without a reference it checks only that a final answer is given. Each distinct check
    (reference and answer) runs once per verifier; the verifier remembers the last few hundred
    verdicts (one named by a string is made per run).

    Args:
        timeout_s: Wall-clock limit per check.
        processes: Worker processes in the pool.
    """

    def __init__(self, *, timeout_s: float = 10.0, processes: int = 1, name: str = "math"):
        try:
            import math_verify  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "the math verifier needs math-verify: pip install 'math-verify[antlr4_13_2]'"
            ) from None
        self.timeout_s = timeout_s
        self.processes = processes
        self.name = name
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._checks = _SharedChecks()

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            # spawn: never fork a process that runs llama.cpp threads
            context = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(self.processes, mp_context=context)
        return self._pool

    async def _run(self, *args: Any) -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            pool = self._executor()
            future = loop.run_in_executor(pool, _check, *args)
            try:
                return await asyncio.wait_for(future, self.timeout_s)
            except TimeoutError:
                logger.warning("a math check overran %ss: killing its worker process",
                               self.timeout_s)
                self._kill_pool(pool)
                raise
            except (BrokenProcessPool, asyncio.CancelledError):
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this check itself was cancelled
                if pool is self._pool:
                    self._kill_pool(pool)  # broke on its own: the next check gets a fresh one
                    raise BrokenProcessPool("the math-verify worker process died") from None
                if attempt:
                    raise BrokenProcessPool("the math-verify pool was replaced twice") from None
                # another check's timeout killed the pool under this one: run it again
        raise AssertionError("unreachable")

    def _kill_pool(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        """Kill the pool's worker processes (a check may be stuck in C) and forget the pool."""
        if self._pool is pool:
            self._pool = None
        # ProcessPoolExecutor has no public way to stop a running task; its processes are
        # reachable only through this private mapping (stable since Python 3.8)
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.kill()

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        output = candidate.text
        boxed = extract_boxed(output)
        if problem.reference is None:
            answer = boxed or candidate.answer
            if not answer:
                return passed(False, "no final answer found")
            return unjudged(f"gives {answer[:80]} (no reference to judge it by)")
        # math-verify reads the last answer it can find; point it at the boxed one if present
        target = f"\\boxed{{{boxed}}}" if boxed else output
        try:
            ok, detail = await self._checks.check(problem.reference, target, self._run)
        except TimeoutError:
            return passed(False, f"check timed out after {self.timeout_s}s")
        except Exception as exc:  # a malformed answer must not crash the run
            return passed(False, f"could not check: {exc!r}"[:200])
        return passed(ok, detail)

    def close(self) -> None:
        """Stop the worker processes, including one still inside a check."""
        if self._pool is not None:
            self._kill_pool(self._pool)
