"""The program that runs inside the sandbox (standard library only; never imported by threadloom).

It is started as `python -I -S -B -c <this source>` and reads its job from standard input, as
length-prefixed JSON parts. Two modes:

* ``program``: confine this process (resource limits, optional Python guards, the candidate
  seccomp filter) and run the code as ``__main__``; the exit status is the program's.
* ``tests``: the *judge* (this process) forks the *candidate* process before any untrusted code
  runs. The candidate confines itself, runs the candidate's code and then answers calls to its
  functions over a pair of pipes. Only then does the judge read the tests (the second part of
  the job), so they are never in the candidate's memory; the judge is not dumpable, so its
  memory cannot be read through /proc. It runs the tests with stand-ins for those
  functions, so the tests never share a process, memory or exit status with untrusted code.
  Values cross the pipes as tagged JSON of exact builtin types only, so an object whose
  ``__eq__`` always answers True cannot reach the tests. The judge alone holds the verdict pipe
  (the descriptor named ``verdict_fd`` in the job, closed in the candidate before its code runs)
  and writes ``{"passed": ..., "detail": ...}`` there once the tests have returned.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import importlib
import json
import linecache
import os
import resource
import signal
import struct
import sys
import traceback
from typing import Any

_FRAME = struct.Struct(">I")
_MAX_FRAME = 16 * 1024 * 1024
_MAX_DETAIL = 1000
_MAX_SHARED_NAMES = 1000
_CANDIDATE_FILE = "solution.py"
_TESTS_FILE = "tests.py"
_SHAREABLE_MODULES = frozenset(
    (
        "bisect", "cmath", "collections", "copy", "datetime", "decimal", "fractions", "functools",
        "hashlib", "heapq", "itertools", "json", "math", "operator", "random", "re", "statistics",
        "string", "typing",
    )
)  # fmt: skip
"""Modules the candidate imported that the tests may use too (imported again by the judge)."""
_PR_SET_DUMPABLE = 4
_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_MODE_FILTER = 2


class ProtocolError(Exception):
    """The other side of the call pipes sent something that is not a valid message."""


class CandidateGone(BaseException):
    """The candidate's process ended while the tests still needed it."""


# ---- confinement ---------------------------------------------------------------------------------


def _set_limit(kind: int, value: int) -> None:
    _, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        value = min(value, current)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(kind, (value, value))


def _apply_limits(limits: dict[str, int]) -> None:
    _set_limit(resource.RLIMIT_CORE, 0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _set_limit(resource.RLIMIT_FSIZE, limits["file_size"])
    _set_limit(resource.RLIMIT_NOFILE, limits["files"])
    _set_limit(resource.RLIMIT_AS, limits["memory"])
    soft_cpu = limits["cpu_s"]
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CPU, (soft_cpu, soft_cpu + 1))
    if limits.get("processes"):
        _set_limit(resource.RLIMIT_NPROC, limits["processes"])


def _install_filter(program: bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "installing the seccomp filter failed")


def _confine(job: dict[str, Any]) -> None:
    """Everything that must hold before untrusted code runs in this process."""
    _apply_limits(job["limits"])
    if job.get("candidate_filter"):
        _install_filter(bytes.fromhex(job["candidate_filter"]))
    if job.get("guards"):
        scope: dict[str, Any] = {"__name__": "threadloom_guards"}
        exec(compile(job["guards"], "guards.py", "exec"), scope)
        scope["install"](os.path.realpath(os.getcwd()))


def _compile_source(source: str, filename: str) -> Any:
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec", dont_inherit=True)


# ---- values across the pipes ---------------------------------------------------------------------


_SEQUENCE_TAGS: dict[type, str] = {list: "l", tuple: "t", set: "S", frozenset: "F"}


def encode(value: Any) -> Any:
    """Tagged JSON of a value built only from exact builtin types (no subclasses)."""
    kind = type(value)
    if value is None:
        return ["n"]
    if kind is bool:
        return ["b", value]
    if kind is int:
        return ["i", format(value, "x")]
    if kind is float:
        return ["f", value.hex()]
    if kind is complex:
        return ["c", value.real.hex(), value.imag.hex()]
    if kind is str:
        return ["s", value]
    if kind is bytes:
        return ["y", value.hex()]
    if kind in (list, tuple, set, frozenset):
        tag = _SEQUENCE_TAGS[kind]
        return [tag, [encode(item) for item in value]]
    if kind is dict:
        return ["d", [[encode(k), encode(v)] for k, v in value.items()]]
    raise TypeError(
        f"a value of type {kind.__name__} cannot be checked; only values of exact builtin "
        "types (None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset) can"
    )


def decode(data: Any) -> Any:
    """The value of `encode`'s output; anything malformed raises ProtocolError."""
    try:
        return _decode(data)
    except ProtocolError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, RecursionError, OverflowError) as exc:
        raise ProtocolError(f"malformed value ({type(exc).__name__})") from None


def _decode(data: Any) -> Any:
    if type(data) is not list or not data or type(data[0]) is not str:
        raise ProtocolError("a value must be a tagged list")
    tag, rest = data[0], data[1:]
    if tag == "n" and not rest:
        return None
    if tag == "b" and len(rest) == 1 and type(rest[0]) is bool:
        return rest[0]
    if tag in ("i", "f", "s", "y", "c") and all(type(item) is str for item in rest):
        if tag == "i" and len(rest) == 1:
            return int(rest[0], 16)
        if tag == "f" and len(rest) == 1:
            return float.fromhex(rest[0])
        if tag == "c" and len(rest) == 2:
            return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
        if tag == "s" and len(rest) == 1:
            return rest[0]
        if tag == "y" and len(rest) == 1:
            return bytes.fromhex(rest[0])
    if tag in ("l", "t", "S", "F") and len(rest) == 1 and type(rest[0]) is list:
        items = [_decode(item) for item in rest[0]]
        return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "d" and len(rest) == 1 and type(rest[0]) is list:
        pairs = rest[0]
        if not all(type(pair) is list and len(pair) == 2 for pair in pairs):
            raise ProtocolError("a dict must be a list of pairs")
        return {_decode(k): _decode(v) for k, v in pairs}
    raise ProtocolError(f"unknown or malformed value tag {tag[:20]!r}")


def _send(fd: int, message: dict[str, Any]) -> None:
    data = json.dumps(message, ensure_ascii=True).encode("ascii")
    if len(data) > _MAX_FRAME:
        raise ValueError(f"a message of {len(data)} bytes is over the {_MAX_FRAME}-byte limit")
    payload = _FRAME.pack(len(data)) + data
    while payload:
        written = os.write(fd, payload)
        payload = payload[written:]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int) -> dict[str, Any] | None:
    """The next message, or None when the other side has closed the pipe."""
    header = _read_exact(fd, _FRAME.size)
    if header is None:
        return None
    (size,) = _FRAME.unpack(header)
    if size > _MAX_FRAME:
        raise ProtocolError(f"a message of {size} bytes is over the limit")
    data = _read_exact(fd, size)
    if data is None:
        return None
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("a message that is not JSON") from None
    if type(message) is not dict:
        raise ProtocolError("a message must be a JSON object")
    return message


def _error_text(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    text = lines[-1].strip() if lines else type(exc).__name__
    return text[:_MAX_DETAIL]


# ---- the candidate's process ---------------------------------------------------------------------


def _shared_names(scope: dict[str, Any]) -> dict[str, Any]:
    """What the tests may use from the candidate's globals: functions, modules, plain values."""
    callables, modules, values = [], {}, {}
    for name, value in list(scope.items())[:_MAX_SHARED_NAMES]:
        if name.startswith("__") or type(name) is not str:
            continue
        if isinstance(value, type(sys)):
            module_name = getattr(value, "__name__", None)
            if type(module_name) is str:
                modules[name] = module_name
        elif callable(value):
            callables.append(name)
        else:
            with contextlib.suppress(TypeError, RecursionError):
                values[name] = encode(value)
    return {"callables": callables, "modules": modules, "values": values}


def _serve(job: dict[str, Any], calls: int, replies: int) -> None:
    _confine(job)
    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(_compile_source(job["candidate"], _CANDIDATE_FILE), scope)
    except Exception as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        _send(replies, {"load_error": _error_text(exc)})
        return
    _send(replies, {"ready": _shared_names(scope)})
    while (message := _receive(calls)) is not None:
        try:
            function = scope[message["call"]]
            args = decode(message["args"])
            kwargs = decode(message["kwargs"])
            reply: dict[str, Any] = {"value": encode(function(*args, **kwargs))}
        except Exception as exc:
            reply = {"error": [type(exc).__name__, str(exc)[:_MAX_DETAIL]]}
        try:
            _send(replies, reply)
        except (TypeError, ValueError, RecursionError) as exc:
            _send(replies, {"error": [type(exc).__name__, str(exc)[:_MAX_DETAIL]]})


# ---- the judge -----------------------------------------------------------------------------------


class _Judge:
    """Runs the tests against stand-ins that forward each call to the candidate's process."""

    def __init__(self, calls: int, replies: int) -> None:
        self.calls, self.replies = calls, replies
        self.failure: str | None = None
        """Set once the candidate broke the protocol or went away; the verdict is then a fail."""

    def receive(self) -> dict[str, Any]:
        try:
            message = _receive(self.replies)
        except ProtocolError as exc:
            self.failure = f"the candidate broke the call protocol: {exc}"
            raise CandidateGone(self.failure) from None
        if message is None:
            self.failure = self.failure or "gone"
            raise CandidateGone("the candidate's process ended")
        return message

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.failure is not None:
            raise CandidateGone(self.failure)
        request = {"call": name, "args": encode(list(args)), "kwargs": encode(dict(kwargs))}
        try:
            _send(self.calls, request)
        except BrokenPipeError:
            self.failure = "gone"
            raise CandidateGone("the candidate's process ended") from None
        reply = self.receive()
        if "value" in reply:
            try:
                return decode(reply["value"])
            except ProtocolError as exc:
                self.failure = f"the candidate broke the call protocol: {exc}"
                raise CandidateGone(self.failure) from None
        error = reply.get("error")
        if type(error) is list and len(error) == 2 and all(type(e) is str for e in error):
            raise _rebuild(error[0], error[1])
        self.failure = "the candidate broke the call protocol: an unknown reply"
        raise CandidateGone(self.failure)

    def stand_in(self, name: str) -> Any:
        judge = self

        def forward(*args: Any, **kwargs: Any) -> Any:
            return judge.call(name, args, kwargs)

        forward.__name__ = forward.__qualname__ = name
        return forward


def _rebuild(name: str, message: str) -> Exception:
    """The candidate's exception as the builtin exception of that name (else RuntimeError)."""
    cls = getattr(builtins, name[:100], None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:
            pass
    return RuntimeError(f"{name[:100]}: {message}")


def _describe(exc: BaseException) -> str:
    error = _error_text(exc)
    if isinstance(exc, AssertionError):
        source = ""
        for frame, line in traceback.walk_tb(exc.__traceback__):
            if frame.f_code.co_filename == _TESTS_FILE:
                source = linecache.getline(_TESTS_FILE, line).strip()
        if source:
            return f"{error} in `{source}`"
    return error


def _gone_detail(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"the candidate's process was killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    return f"exited before the tests finished (exit status {code})"


def _shareable(name: object) -> bool:
    """A candidate's name the tests may see: never one that would shadow a builtin the tests
    use (an `abs` that always answers 0 would pass `assert abs(x - y) < 1e-6`)."""
    return (
        type(name) is str
        and name.isidentifier()
        and not name.startswith("__")
        and not hasattr(builtins, name)
    )


def _judge(job: dict[str, Any], pid: int, judge: _Judge) -> dict[str, Any]:
    try:
        ready = judge.receive()
    except CandidateGone:
        ready = {}
    if "load_error" in ready:
        return {"passed": False, "detail": str(ready["load_error"])[:_MAX_DETAIL]}
    names = ready.get("ready")
    if type(names) is not dict:
        judge.failure = judge.failure or "the candidate broke the call protocol: no names"
        return _failed(judge, pid)
    scope: dict[str, Any] = {"__name__": "__tests__", "__builtins__": builtins}
    try:
        for name, module in dict(names.get("modules", {})).items():
            if _shareable(name) and name == module and module in _SHAREABLE_MODULES:
                scope[name] = importlib.import_module(module)
        for name, value in dict(names.get("values", {})).items():
            if _shareable(name):
                scope[name] = decode(value)
        for name in list(names.get("callables", [])):
            if _shareable(name):
                scope[name] = judge.stand_in(name)
        exec(_compile_source(job["tests"], _TESTS_FILE), scope)
    except CandidateGone:
        pass
    except ProtocolError as exc:
        judge.failure = f"the candidate broke the call protocol: {exc}"
    except BaseException as exc:
        if judge.failure is None:
            return {"passed": False, "detail": _describe(exc)[:_MAX_DETAIL]}
    if judge.failure is None:
        return {"passed": True, "detail": "passed"}
    return _failed(judge, pid)


def _failed(judge: _Judge, pid: int) -> dict[str, Any]:
    if judge.failure == "gone":
        os.kill(pid, signal.SIGKILL)  # no-op when it already ended; then its status is kept
        _, status = os.waitpid(pid, 0)
        return {"passed": False, "detail": _gone_detail(status)}
    return {"passed": False, "detail": str(judge.failure)}


def _run_tests(job: dict[str, Any]) -> None:
    verdict_fd = int(job["verdict_fd"])
    calls_r, calls_w = os.pipe()
    replies_r, replies_w = os.pipe()
    # Before the fork: the candidate inherits it, and can never open the judge's memory
    # (/proc/PID/mem) or descriptors, not even in the moment after the fork.
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            _stdin_to_null()  # the tests are still waiting in the pipe
            os.close(verdict_fd)
            os.close(calls_w)
            os.close(replies_r)
            _serve(job, calls_r, replies_w)
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(calls_r)
    os.close(replies_w)
    job["tests"] = _read_job_part()["tests"]
    _stdin_to_null()
    _apply_limits(job["limits"])
    verdict = _judge(job, pid, _Judge(calls_w, replies_r))
    os.write(verdict_fd, json.dumps(verdict).encode())
    os.close(verdict_fd)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os._exit(0)


def _run_program(job: dict[str, Any]) -> None:
    _confine(job)
    sys.argv = [_CANDIDATE_FILE]
    scope = {"__name__": "__main__", "__file__": _CANDIDATE_FILE, "__builtins__": builtins}
    try:
        exec(_compile_source(job["code"], _CANDIDATE_FILE), scope)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        traceback.print_exception(type(exc), exc, tb.tb_next if tb else None)
        sys.exit(1)


def _read_job_part() -> dict[str, Any]:
    """One length-prefixed JSON part of the job from stdin, reading no byte past it."""
    header = _read_exact(0, _FRAME.size)
    if header is None:
        raise SystemExit("the sandbox got no job")
    (size,) = _FRAME.unpack(header)
    data = _read_exact(0, size)
    if data is None:
        raise SystemExit("the sandbox got a truncated job")
    part = json.loads(data)
    if type(part) is not dict:
        raise SystemExit("the sandbox got a malformed job")
    return part


def _stdin_to_null() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def main() -> None:
    # The job comes in two parts: the candidate's part, then (for tests) the tests. The
    # candidate's process is forked between the two, so the tests are never in its memory.
    job = _read_job_part()
    if job["mode"] == "tests":
        _run_tests(job)
    else:
        _stdin_to_null()
        _run_program(job)


if __name__ == "__main__":
    main()
