"""Starting a sandboxed run, feeding it its job, and collecting output, exit status and verdict."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from threadloom.errors import SandboxUnavailable, VerifierError
from threadloom.verifiers.sandbox import bwrap, seccomp
from threadloom.verifiers.sandbox.limits import Isolation, SandboxLimits, SandboxResult, Verdict

__all__ = ["check_isolation", "run_in_sandbox", "run_tests_in_sandbox"]

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_DRAIN_GRACE_S = 2.0
"""How long to wait for the output pipes to close once the run is dead."""
_MAX_VERDICT_BYTES = 16 * 1024
_HERE = Path(__file__).parent
_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    # BLAS thread pools reserve address space per thread, which RLIMIT_AS would refuse.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_HOW_TO_ENABLE = (
    "Code verification runs untrusted code and needs user namespaces: enable them "
    "(`sysctl -w kernel.unprivileged_userns_clone=1` and `sysctl -w user.max_user_namespaces="
    "15000`; in Docker, run with `--security-opt seccomp=unconfined --security-opt "
    "apparmor=unconfined` or `--privileged`), or accept the weaker, bypassable Python guards "
    "explicitly with isolation='guards' (`--sandbox guards`)."
)


@functools.cache
def _source(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


@functools.cache
def check_isolation() -> str:
    """Make sure bwrap isolation works here; run once per process (a trivial sandboxed program).

    Returns:
        A one-line description of the bwrap in use.

    Raises:
        SandboxUnavailable: Why it does not work, and how to enable it.
    """
    tool, python = bwrap.find_bwrap(), bwrap.interpreter()
    program = seccomp.sandbox_filter()
    seccomp.candidate_filter()
    fd = _filter_fd(program)
    try:
        argv = bwrap.bwrap_arguments(tool, python, fd, 1024 * 1024)
        done = subprocess.run(
            [*argv, python.executable, "-I", "-S", "-B", "-c", "print('ok')"],
            capture_output=True,
            text=True,
            timeout=30,
            pass_fds=(fd,),
            env=_ENV,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        message = f"bwrap at {tool.path} could not run ({exc}). {_HOW_TO_ENABLE}"
        raise SandboxUnavailable(message) from None
    finally:
        os.close(fd)
    if done.returncode != 0 or done.stdout.strip() != "ok":
        reason = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()[-1]
        raise SandboxUnavailable(f"bwrap cannot isolate code here: {reason}. {_HOW_TO_ENABLE}")
    version = ".".join(map(str, tool.version))
    return f"bubblewrap {version} at {tool.path}"


def _filter_fd(program: bytes) -> int:
    fd = os.memfd_create("threadloom-seccomp", 0)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


async def run_in_sandbox(
    code: str, limits: SandboxLimits | None = None, *, isolation: Isolation = "bwrap"
) -> SandboxResult:
    """Run a Python program in a fresh, isolated and limited process tree; report what it did.

    Bad code never raises here: crashes, time-outs and refused operations are in the result.
    Many runs may go on at once; none blocks the event loop.

    Args:
        code: The complete program.
        limits: Resource limits; the defaults of `SandboxLimits` when not given.
        isolation: "bwrap" (the operating system's isolation) or "guards" (Python-level
            guards only, which code can get around; logged as a warning on every run).

    Returns:
        The exit status, captured (capped) output and how the run ended.

    Raises:
        SandboxUnavailable: bwrap isolation cannot be set up on this machine.
        VerifierError: The sandbox itself could not be started.
    """
    return await _run({"mode": "program", "code": code}, limits or SandboxLimits(), isolation)


async def run_tests_in_sandbox(
    candidate: str,
    tests: str,
    limits: SandboxLimits | None = None,
    *,
    isolation: Isolation = "bwrap",
) -> SandboxResult:
    """Run `candidate` and `tests` in two processes of one sandbox; the tests call the candidate.

    The tests see the candidate's functions as stand-ins that forward calls (arguments and
    results of exact builtin types only) to the candidate's process, and the tests' process
    alone can report the verdict, in `SandboxResult.verdict`.

    Args:
        candidate: The untrusted code (e.g. a solution).
        tests: Code that uses the candidate's names and raises when a test fails.
        limits: Resource limits for each of the two processes.
        isolation: As for `run_in_sandbox`.

    Raises:
        SandboxUnavailable: bwrap isolation cannot be set up on this machine.
        VerifierError: The sandbox itself could not be started.
    """
    job = {"mode": "tests", "candidate": candidate, "tests": tests}
    return await _run(job, limits or SandboxLimits(), isolation)


@dataclass
class _Sink:
    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _job_limits(limits: SandboxLimits, isolation: Isolation) -> dict[str, int]:
    mib = 1024 * 1024
    return {
        "cpu_s": limits.cpu_s,
        "memory": limits.memory_mb * mib,
        "file_size": limits.file_size_mb * mib,
        "files": limits.max_open_files,
        "processes": limits.max_processes if isolation == "guards" else 0,
    }


async def _run(job: dict[str, Any], limits: SandboxLimits, isolation: Isolation) -> SandboxResult:
    job["limits"] = _job_limits(limits, isolation)
    pass_fds: list[int] = []
    workdir: str | None = None
    if isolation == "bwrap":
        await asyncio.to_thread(check_isolation)
        python = bwrap.interpreter()
        job["candidate_filter"] = seccomp.candidate_filter().hex()
        pass_fds.append(_filter_fd(seccomp.sandbox_filter()))
        disk = limits.disk_mb * 1024 * 1024
        argv = bwrap.bwrap_arguments(bwrap.find_bwrap(), python, pass_fds[0], disk)
        env = dict(_ENV, HOME=bwrap.WORKDIR, TMPDIR=bwrap.WORKDIR)
        cwd = None
    elif isolation == "guards":
        logger.warning(
            "running untrusted code with Python guards only (isolation='guards'): code can get "
            "around them and act as this user; use isolation='bwrap' where it is available"
        )
        python = bwrap.interpreter()
        job["guards"] = _source("guards.py")
        workdir = cwd = await asyncio.to_thread(tempfile.mkdtemp, prefix="threadloom-sandbox-")
        env = dict(_ENV, HOME=workdir, TMPDIR=workdir)
        argv = []
    else:
        raise VerifierError(f"unknown isolation {isolation!r}; use 'bwrap' or 'guards'")
    verdict_r, verdict_w = os.pipe()
    pass_fds.append(verdict_w)
    job["verdict_fd"] = verdict_w
    argv += [python.executable, "-I", "-S", "-B", "-c", _source("harness.py")]
    try:
        return await _execute(argv, job, limits, cwd, env, pass_fds, verdict_r)
    finally:
        for fd in (*pass_fds, verdict_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        if workdir is not None:
            await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)


async def _execute(
    argv: list[str],
    job: dict[str, Any],
    limits: SandboxLimits,
    cwd: str | None,
    env: dict[str, str],
    pass_fds: list[int],
    verdict_r: int,
) -> SandboxResult:
    payload = _job_payload(job)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
            start_new_session=True,
        )
    except OSError as exc:
        raise VerifierError(f"could not start the sandbox ({argv[0]}): {exc}") from exc
    for fd in pass_fds:  # the child has its copies; ours would keep the verdict pipe open
        os.close(fd)
    pass_fds.clear()
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = _Sink(limits.max_output_bytes), _Sink(limits.max_output_bytes)
    tasks = [
        asyncio.create_task(_feed(proc.stdin, payload)),
        asyncio.create_task(_drain(proc.stdout, out)),
        asyncio.create_task(_drain(proc.stderr, err)),
    ]
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), limits.timeout_s)
    except TimeoutError:
        timed_out = True
    finally:
        # Also on normal exit and on cancellation: nothing the code started may outlive the run.
        _kill_group(proc.pid)
        duration = time.monotonic() - started
        await _finish(proc, tasks)
    returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    if cwd is None and 128 < returncode < 160:
        returncode = 128 - returncode  # bwrap reports a child killed by signal N as 128 + N
    return SandboxResult(
        returncode=returncode,
        timed_out=timed_out,
        stdout=out.text(),
        stderr=err.text(),
        truncated=out.truncated or err.truncated,
        killed_by_signal=-returncode if returncode < 0 else None,
        duration_s=duration,
        verdict=None if timed_out else _read_verdict(verdict_r),
    )


def _job_payload(job: dict[str, Any]) -> bytes:
    """The job as length-prefixed JSON parts; the tests, if any, travel in a second part."""
    first = {key: value for key, value in job.items() if key != "tests"}
    parts = [first] if "tests" not in job else [first, {"tests": job["tests"]}]
    payload = b""
    for part in parts:
        data = json.dumps(part, ensure_ascii=True).encode("ascii")
        payload += struct.pack(">I", len(data)) + data
    return payload


def _read_verdict(fd: int) -> Verdict | None:
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError, OSError):
        while len(data) <= _MAX_VERDICT_BYTES and (chunk := os.read(fd, 4096)):
            data += chunk
    if not data:
        return None
    try:
        return Verdict.model_validate_json(data[:_MAX_VERDICT_BYTES])
    except ValidationError:
        logger.warning("the sandbox's judge wrote an invalid verdict (%d bytes)", len(data))
        return None


async def _feed(stream: asyncio.StreamWriter, payload: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        stream.write(payload)
        await stream.drain()
        stream.close()


async def _drain(stream: asyncio.StreamReader, sink: _Sink) -> None:
    # Keep reading past the cap (and drop it) so a chatty program is not stalled on a full pipe.
    while chunk := await stream.read(_CHUNK):
        room = sink.cap - len(sink.data)
        if room > 0:
            sink.data += chunk[:room]
        if len(chunk) > room:
            sink.truncated = True


async def _finish(proc: asyncio.subprocess.Process, tasks: list[asyncio.Task[None]]) -> None:
    _, pending = await asyncio.wait(tasks, timeout=_DRAIN_GRACE_S)
    if pending:
        # Only a process that escaped the kill keeps the pipes open (possible under guards).
        logger.warning("a sandboxed process outlived its run (pid %d)", proc.pid)
        for task in pending:
            task.cancel()
        # asyncio offers no public way to close a running process's pipes; without this the
        # transport would stay open for as long as the stray process lives.
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()
    try:
        await asyncio.wait_for(proc.wait(), _DRAIN_GRACE_S)
    except TimeoutError:
        logger.warning("sandbox process %d did not exit after SIGKILL", proc.pid)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
