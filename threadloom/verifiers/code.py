"""code: run the candidate's program against the problem's unit tests, in a sandbox.

The problem's metadata carries the tests, in one of two shapes:

* HumanEval style: "test" (source defining `check(candidate)`), "entry_point" (the function
  to check) and optionally "prompt_code" (signature and docstring, for answers that give only
  the function body);
* "tests": a list of assert statements, which may use the names the candidate defines.

The candidate's code and the tests run in two processes of one sandbox (see
`threadloom.verifiers.sandbox`): the tests call the candidate's functions through a pipe that
carries only values of exact builtin types, and only the tests' process can report a pass. A
wrong solution cannot pass by exiting early, by reading or guessing a token, or by returning an
object that compares equal to everything. What remains trusted is the problem's own test code,
and any helper the candidate defines that the tests call (its answers are taken as given).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import textwrap
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import ValidationError

from threadloom.errors import ConfigError
from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.base import passed
from threadloom.verifiers.extract import extract_code
from threadloom.verifiers.sandbox import (
    Isolation,
    SandboxLimits,
    SandboxResult,
    check_isolation,
    run_tests_in_sandbox,
)

__all__ = ["CodeVerifier", "TestJob", "build_test_job", "describe_failure"]


class CodeVerifier:
    """Passes when the candidate's code runs its problem's tests without error.

    The code is the last fenced block of the candidate's text (or all of it). Every run is a
    separate, isolated and resource-limited sandbox (see `threadloom.verifiers.sandbox`); a
    wrong, crashing, hanging or misbehaving program is a failed score, never an exception.

    Args:
        limits: Sandbox limits per run, as `SandboxLimits` or a dict of its fields.
        isolation: "bwrap" (default): the operating system isolates the code, and where it
            cannot, the constructor raises `SandboxUnavailable`. "guards": Python-level guards
            only, which deliberate code gets around; a warning is logged on every run.
        max_concurrency: Programs running at once (per event loop); defaults to the CPU count,
            so that wall-clock limits are not spent waiting for a core.
        max_detail_chars: Longest `Score.detail`.
        name: The verifier's name in `Candidate.scores`.

    Raises:
        ConfigError: Invalid limits, isolation or concurrency.
        SandboxUnavailable: isolation="bwrap" cannot be set up here (the message says how to
            enable it).
    """

    def __init__(
        self,
        *,
        limits: SandboxLimits | Mapping[str, Any] | None = None,
        isolation: Isolation = "bwrap",
        max_concurrency: int | None = None,
        max_detail_chars: int = 300,
        name: str = "code",
    ) -> None:
        try:
            self.limits = SandboxLimits.model_validate(limits or {})
        except ValidationError as exc:
            raise ConfigError(f"invalid sandbox limits for the code verifier: {exc}") from None
        if isolation not in get_args(Isolation):
            raise ConfigError(f"unknown sandbox isolation {isolation!r}; use 'bwrap' or 'guards'")
        if isolation == "bwrap":
            check_isolation()
        self.isolation: Isolation = isolation
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency or os.cpu_count() or 1
        self.max_detail_chars = max_detail_chars
        self.name = name
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        code = extract_code(candidate.text)
        if not code.strip():
            return passed(False, "no code in the answer")
        try:
            job = build_test_job(problem.metadata, code)
        except ConfigError as exc:
            return passed(False, str(exc))
        async with self._gate():
            result = await run_tests_in_sandbox(
                job.candidate, job.tests, self.limits, isolation=self.isolation
            )
        verdict = result.verdict
        if verdict is not None and verdict.passed:
            return passed(True, "passed (output truncated)" if result.truncated else "passed")
        if verdict is not None:
            return passed(False, self._cap(verdict.detail))
        return passed(False, self._cap(describe_failure(result, self.limits)))

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self.max_concurrency)
        return gate

    def _cap(self, text: str) -> str:
        limit = self.max_detail_chars
        return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


@dataclass(frozen=True)
class TestJob:
    """The two programs of one verification."""

    __test__ = False  # not a pytest test class

    candidate: str
    """The candidate's code (completed with the problem's signature when it gave a body only)."""
    tests: str
    """The problem's tests, ending with the call that runs them."""


def build_test_job(metadata: Mapping[str, Any], code: str) -> TestJob:
    """Split a verification into the candidate's program and the problem's tests.

    Args:
        metadata: The problem's metadata ("test" + "entry_point" [+ "prompt_code"], or "tests").
        code: The candidate's code.

    Returns:
        The candidate's code and the tests that call it.

    Raises:
        ConfigError: The metadata holds no usable tests.
    """
    test, tests = metadata.get("test"), metadata.get("tests")
    entry_point = metadata.get("entry_point")
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        entry_point = None
    prompt_code = metadata.get("prompt_code")
    if entry_point and isinstance(prompt_code, str) and not _defines(code, entry_point):
        code = prompt_code.rstrip() + "\n" + _as_body(code)
    if isinstance(test, str) and test.strip():
        if entry_point:
            return TestJob(code, f"{test}\n\ncheck({entry_point})\n")
        if re.search(r"^def\s+check\s*\(", test, re.MULTILINE):
            raise ConfigError("the problem's test defines check() but names no entry_point")
        return TestJob(code, test)
    if isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests):
        return TestJob(code, "\n".join(tests) + "\n")
    raise ConfigError(
        "the problem has no tests (metadata needs 'test' and 'entry_point', or 'tests')"
    )


def describe_failure(result: SandboxResult, limits: SandboxLimits) -> str:
    """A one-line reason why a sandboxed run failed."""
    if result.timed_out:
        return f"timed out after {limits.timeout_s:g}s"
    error = _last_error(result.stderr)
    if result.killed_by_signal is not None:
        reason = f"killed by {_signal_name(result.killed_by_signal)}"
        if result.killed_by_signal == signal.SIGXCPU:
            reason += f" (CPU limit of {limits.cpu_s}s)"
        return f"{reason}: {error}" if error else reason
    return error or f"exit code {result.returncode}"


def _defines(code: str, name: str) -> bool:
    pattern = rf"^\s*(?:async\s+def|def|class)\s+{re.escape(name)}\b|^\s*{re.escape(name)}\s*="
    return re.search(pattern, code, re.MULTILINE) is not None


def _as_body(code: str) -> str:
    """Indent a function body that was written without its `def` line."""
    lines = textwrap.dedent(code).strip("\n").splitlines()
    rest = [line for line in lines[1:] if line.strip()]
    if lines and rest and not lines[0].rstrip().endswith(":"):
        # e.g. "total = 0\n    for x in xs: ..." where only the first line lost its indent
        indent = min(len(line) - len(line.lstrip()) for line in rest)
        lines = [lines[0]] + [line[indent:] for line in lines[1:]]
    return textwrap.indent("\n".join(lines), "    ")


def _last_error(stderr: str) -> str:
    """The exception line of a traceback, with the failing source line for a bare assert."""
    lines = [line.rstrip() for line in stderr.splitlines()]
    nonblank = [line for line in lines if line.strip()]
    if not nonblank:
        return ""
    error = nonblank[-1].strip()
    if error.startswith("AssertionError"):
        source = ""
        for before, line in itertools.pairwise(lines):
            if before.lstrip().startswith('File "') and line.strip():
                source = line.strip()
        if source:
            return f"{error} in `{source}`"
    return error


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
