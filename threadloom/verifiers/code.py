"""code: run the candidate's program against the problem's unit tests, in a sandbox.

The problem's metadata carries the tests, in one of two shapes:

* HumanEval style: "test" (source defining `check(candidate)`), "entry_point" (the function
  to check) and optionally "prompt_code" (signature and docstring, for answers that give only
  the function body);
* "tests": a list of assert statements, run after the candidate's code.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
import signal
import textwrap
import weakref
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from threadloom.errors import ConfigError
from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.base import passed
from threadloom.verifiers.extract import extract_code
from threadloom.verifiers.sandbox import SandboxLimits, SandboxResult, run_in_sandbox

__all__ = ["CodeVerifier", "build_program", "describe_failure"]

_DONE_LOW, _DONE_HIGH = 10, 100
"""Range of the exit status that marks a completed test run (below the 128+signal codes)."""


class CodeVerifier:
    """Passes when the candidate's code runs its problem's tests without error.

    The code is the last fenced block of the candidate's text (or all of it). Every run is a
    separate, resource-limited interpreter (see `threadloom.verifiers.sandbox`); a wrong,
    crashing, hanging or misbehaving program is a failed score, never an exception.

    Args:
        limits: Sandbox limits per run, as `SandboxLimits` or a dict of its fields.
        max_concurrency: Programs running at once (per event loop); defaults to the CPU count,
            so that wall-clock limits are not spent waiting for a core.
        max_detail_chars: Longest `Score.detail`.
        name: The verifier's name in `Candidate.scores`.
    """

    def __init__(
        self,
        *,
        limits: SandboxLimits | Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        max_detail_chars: int = 300,
        name: str = "code",
    ) -> None:
        try:
            self.limits = SandboxLimits.model_validate(limits or {})
        except ValidationError as exc:
            raise ConfigError(f"invalid sandbox limits for the code verifier: {exc}") from None
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
            program = build_program(problem.metadata, code)
        except ConfigError as exc:
            return passed(False, str(exc))
        # The tests end by exiting with a status drawn for this run, so code that exits early
        # with status 0 (skipping the tests) does not pass. Only code that reads its own
        # program file while running could learn the status.
        done = secrets.choice(range(_DONE_LOW, _DONE_HIGH))
        async with self._gate():
            result = await run_in_sandbox(f"{program}\nraise SystemExit({done})\n", self.limits)
        if result.returncode == done and not result.timed_out:
            return passed(True, "passed (output truncated)" if result.truncated else "passed")
        if result.returncode == 0 and not result.timed_out:
            return passed(False, "exited before the tests finished (exit status 0)")
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


def build_program(metadata: Mapping[str, Any], code: str) -> str:
    """The program to run: the candidate's code followed by the problem's tests.

    Args:
        metadata: The problem's metadata ("test" + "entry_point" [+ "prompt_code"], or "tests").
        code: The candidate's code.

    Returns:
        The program source.

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
            return f"{code}\n\n{test}\n\ncheck({entry_point})\n"
        if re.search(r"^def\s+check\s*\(", test, re.MULTILINE):
            raise ConfigError("the problem's test defines check() but names no entry_point")
        return f"{code}\n\n{test}\n"
    if isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests):
        return code + "\n\n" + "\n".join(tests) + "\n"
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
