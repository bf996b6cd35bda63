"""A subprocess sandbox for running untrusted generated code.

Each run gets its own `python -I -B` interpreter (never this process), in a fresh temporary
directory that is removed afterwards, with an environment holding only a minimal PATH and LANG
(plus HOME/TMPDIR pointing into that directory and single-threaded BLAS settings). A small
bootstrap, passed with `-c`, prepares the child before the untrusted code runs:

* resource limits (`resource.setrlimit`): CPU seconds, address space, file size, processes,
  open files, no core dumps;
* running as root on Linux, new network and PID namespaces (best effort, via `unshare`): the
  code then has no network interfaces, and a supervisor is the namespace's PID 1, so that when
  the process group is killed the kernel kills every process in the namespace, including any
  that left the group;
* Python-level guards: creating sockets, starting processes (fork, exec, spawn, subprocess,
  multiprocessing), leaving the process group, signalling other processes, writing outside the
  sandbox directory and reading other processes' `/proc` entries all raise `PermissionError`.

The guards are defence in depth, not a kernel guarantee: code that calls the C library through
ctypes, or digs the original functions out of the guards' closures, gets around them, and can
then do whatever the user running this process may (write files, connect to Unix sockets).
What does not rely on the code's cooperation: the resource limits (the kernel does not apply
RLIMIT_NPROC to root), the wall-clock SIGKILL of the whole process group, the output cap and,
where the namespaces could be made, the missing network and the kernel's kill of every process
in the namespace. The code runs as the same user as this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from threadloom.errors import VerifierError

__all__ = ["SandboxLimits", "SandboxResult", "run_in_sandbox"]

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_DRAIN_GRACE_S = 2.0
"""How long to wait for the output pipes to close once the process group is dead."""
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_PROGRAM_NAME = "solution.py"

# Runs in the child as `python -I -B -c _BOOTSTRAP PATH CPU_S MEMORY FSIZE NPROC NOFILE`.
_BOOTSTRAP = r"""
import os, resource, signal, sys


def _set_limit(kind, soft, hard):
    _, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    try:
        resource.setrlimit(kind, (soft, hard))
    except (OSError, ValueError):
        pass


def _exit_like(status):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _supervise():
    # We stay outside the new PID namespace and report the code's exit status; our first child
    # is the namespace's PID 1 and runs no untrusted code. When it exits (or the process group
    # is killed) the kernel kills everything left in the namespace.
    r, w = os.pipe()
    init = os.fork()
    if init:
        os.close(w)
        report = b""
        while chunk := os.read(r, 64):
            report += chunk
        _, status = os.waitpid(init, 0)
        _exit_like(int(report) if report else status)
    os.close(r)
    child = os.fork()
    if child == 0:
        os.close(w)
        return
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            status = 1 << 8
            break
        if pid == child:
            break
    os.write(w, str(status).encode())
    os._exit(0)


def _isolate():
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return
    try:
        import ctypes
        unshare = ctypes.CDLL(None, use_errno=True).unshare
    except (ImportError, OSError, AttributeError):
        return
    newnet, newpid = 0x40000000, 0x20000000
    if unshare(newnet | newpid) == 0:
        _supervise()
    else:
        unshare(newnet)


def _guard(root):
    import _io, _posixsubprocess, _socket, builtins, errno, io, posix, socket

    realpath, join, isabs = os.path.realpath, os.path.join, os.path.isabs
    fsdecode, fspath, readlink, getpid = os.fsdecode, os.fspath, posix.readlink, os.getpid
    real_open, real_os_open, real_kill, real_fileio = _io.open, posix.open, posix.kill, _io.FileIO
    def me():
        try:
            return readlink("/proc/self")
        except OSError:
            return str(getpid())

    def deny(what, path=None):
        raise PermissionError(errno.EPERM, what + " is not allowed in the sandbox", path)

    def check(path, write, dir_fd=None):
        if isinstance(path, int):
            return
        try:
            name = fsdecode(fspath(path))
            if dir_fd is not None and not isabs(name):
                name = join(readlink("/proc/self/fd/%d" % dir_fd), name)
            full = realpath(name)
        except (TypeError, ValueError):
            return
        except OSError:
            deny("this path", path)
        if write and full != root and not full.startswith(root + os.sep):
            deny("writing outside the sandbox directory", path)
        parts = full.split(os.sep)
        if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != me():
            deny("reading another process's /proc entries", path)

    def writes(mode):
        return isinstance(mode, str) and any(c in mode for c in "wax+")

    def guarded_open(file, mode="r", *args, **kwargs):
        check(file, writes(mode))
        return real_open(file, mode, *args, **kwargs)

    class GuardedFileIO(real_fileio):
        def __init__(self, file, mode="r", *args, **kwargs):
            check(file, writes(mode))
            super().__init__(file, mode, *args, **kwargs)

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        check(path, bool(flags & write_flags), dir_fd)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    def writer(real, params):
        def guarded(*args, **kwargs):
            for index, name, fd_name in params:
                path = args[index] if index < len(args) else kwargs.get(name)
                if path is not None:
                    check(path, True, kwargs.get(fd_name))
            return real(*args, **kwargs)
        return guarded

    def refuse(what):
        def refused(*args, **kwargs):
            deny(what)
        return refused

    def guarded_kill(pid, sig):
        if pid != getpid():
            deny("signalling other processes")
        return real_kill(pid, sig)

    def patch(name, value):
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, value)

    one = ((0, "path", "dir_fd"),)
    two = ((0, "src", "src_dir_fd"), (1, "dst", "dst_dir_fd"))
    for name in ("mkdir", "rmdir", "remove", "unlink", "chmod", "lchmod", "chown", "lchown",
                 "chflags", "lchflags", "truncate", "utime", "mkfifo", "mknod", "setxattr",
                 "removexattr"):
        if hasattr(os, name):
            patch(name, writer(getattr(os, name), one))
    for name in ("rename", "replace", "link"):
        patch(name, writer(getattr(os, name), two))
    patch("symlink", writer(os.symlink, ((1, "dst", "dir_fd"),)))
    patch("open", guarded_os_open)
    patch("kill", guarded_kill)
    for name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv",
                 "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
                 "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp",
                 "spawnlpe"):
        patch(name, refuse("starting a process (os.%s)" % name))
    for name in ("setsid", "setpgid", "setpgrp", "killpg", "chroot", "setuid", "setgid",
                 "setreuid", "setregid", "setresuid", "setresgid", "pidfd_open"):
        patch(name, refuse("os." + name))
    _posixsubprocess.fork_exec = refuse("starting a subprocess")
    if hasattr(signal, "pidfd_send_signal"):
        signal.pidfd_send_signal = refuse("signalling other processes")
    builtins.open = io.open = _io.open = guarded_open
    io.FileIO = _io.FileIO = GuardedFileIO

    # Only wrapping an existing Unix socket (socket.socketpair, used by asyncio) is allowed.
    raw_init = _socket.socket.__init__

    def guarded_init(self, family=-1, type=-1, proto=-1, fileno=None):
        if fileno is None:
            deny("network access")
        raw_init(self, family, type, proto, fileno)
        if self.family != socket.AF_UNIX:
            self.close()
            deny("network access")

    def refused_method(self, *args, **kwargs):
        deny("network access")

    class GuardedRawSocket(_socket.socket):
        __init__ = guarded_init
        bind = connect = connect_ex = sendto = refused_method

    class GuardedSocket(socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None:
                deny("network access")
            super().__init__(family, type, proto, fileno)

        bind = connect = connect_ex = sendto = refused_method

    socket.socket = socket.SocketType = GuardedSocket
    _socket.socket = _socket.SocketType = GuardedRawSocket


def _run(path):
    import builtins, traceback

    sys.argv = [path]
    scope = {"__name__": "__main__", "__file__": path, "__builtins__": builtins}
    try:
        with open(path, encoding="utf-8") as source:
            code = compile(source.read(), path, "exec")
        exec(code, scope)
    except SystemExit:
        raise
    except BaseException as exc:
        # drop this function's own frame from the traceback the user sees
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        sys.exit(1)


def _main():
    path = sys.argv[1]
    cpu_s, memory, file_size, processes, files = (int(a) for a in sys.argv[2:7])
    _set_limit(resource.RLIMIT_CORE, 0, 0)
    _isolate()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _set_limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
    _set_limit(resource.RLIMIT_AS, memory, memory)
    _set_limit(resource.RLIMIT_FSIZE, file_size, file_size)
    if hasattr(resource, "RLIMIT_NPROC"):
        _set_limit(resource.RLIMIT_NPROC, processes, processes)
    _set_limit(resource.RLIMIT_NOFILE, files, files)
    _guard(os.path.realpath(os.path.dirname(path)))
    _run(path)


_main()
"""


class SandboxLimits(BaseModel):
    """Limits on one sandboxed run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(10.0, gt=0)
    """Wall-clock limit; when it runs out the whole process group is killed."""
    cpu_s: int = Field(10, ge=1)
    """CPU seconds (RLIMIT_CPU); the child gets SIGXCPU, then SIGKILL a second later."""
    memory_mb: int = Field(512, ge=64)
    """Address-space limit (RLIMIT_AS) in MiB; a larger allocation raises MemoryError."""
    file_size_mb: int = Field(10, ge=0)
    """Largest file the code may write (RLIMIT_FSIZE), in MiB."""
    max_processes: int = Field(32, ge=1)
    """RLIMIT_NPROC (processes and threads of the user; the kernel ignores it for root)."""
    max_open_files: int = Field(64, ge=16)
    """RLIMIT_NOFILE: open file descriptors."""
    max_output_bytes: int = Field(64 * 1024, ge=1024)
    """Bytes kept from each of stdout and stderr; the rest is read and dropped."""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did."""

    returncode: int
    """Exit status; negative when a signal ended the run (-9 after the wall-clock kill)."""
    timed_out: bool
    """The wall-clock limit ran out and the process group was killed."""
    stdout: str
    stderr: str
    truncated: bool
    """Output went past `max_output_bytes` on stdout or stderr and was cut."""
    killed_by_signal: int | None
    """The signal that ended the run, if one did."""
    duration_s: float

    @property
    def ok(self) -> bool:
        """The program exited with status 0 within its time limit."""
        return self.returncode == 0 and not self.timed_out


@dataclass
class _Sink:
    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


async def run_in_sandbox(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run a Python program in a fresh, limited subprocess and report what it did.

    Bad code never raises here: crashes, time-outs and refused operations are in the result.
    Many runs may go on at once; none blocks the event loop.

    Args:
        code: The complete program (e.g. a solution followed by its tests).
        limits: Resource limits; the defaults of `SandboxLimits` when not given.

    Returns:
        The exit status, captured (capped) output and how the run ended.

    Raises:
        VerifierError: The sandbox itself could not be started (no interpreter, no fork).
    """
    limits = limits or SandboxLimits()
    workdir = await asyncio.to_thread(_prepare, code)
    try:
        return await _execute(workdir, limits)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)


def _prepare(code: str) -> str:
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="threadloom-sandbox-"))
    with open(os.path.join(workdir, _PROGRAM_NAME), "w", encoding="utf-8") as handle:
        handle.write(code)
    return workdir


def _child_env(workdir: str) -> dict[str, str]:
    env = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    # BLAS thread pools reserve address space per thread, which RLIMIT_AS would refuse.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    return env


async def _execute(workdir: str, limits: SandboxLimits) -> SandboxResult:
    if not sys.executable:
        raise VerifierError("the sandbox needs a Python interpreter, but sys.executable is empty")
    mib = 1024 * 1024
    argv = [
        sys.executable,
        "-I",
        "-B",
        "-c",
        _BOOTSTRAP,
        os.path.join(workdir, _PROGRAM_NAME),
        str(limits.cpu_s),
        str(limits.memory_mb * mib),
        str(limits.file_size_mb * mib),
        str(limits.max_processes),
        str(limits.max_open_files),
    ]
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
            env=_child_env(workdir),
            start_new_session=True,
        )
    except OSError as exc:
        raise VerifierError(f"could not start the sandbox ({sys.executable}): {exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Sink(limits.max_output_bytes), _Sink(limits.max_output_bytes)
    readers = [
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
        await _finish(proc, readers)
    returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    return SandboxResult(
        returncode=returncode,
        timed_out=timed_out,
        stdout=out.text(),
        stderr=err.text(),
        truncated=out.truncated or err.truncated,
        killed_by_signal=-returncode if returncode < 0 else None,
        duration_s=duration,
    )


async def _drain(stream: asyncio.StreamReader, sink: _Sink) -> None:
    # Keep reading past the cap (and drop it) so a chatty program is not stalled on a full pipe.
    while chunk := await stream.read(_CHUNK):
        room = sink.cap - len(sink.data)
        if room > 0:
            sink.data += chunk[:room]
        if len(chunk) > room:
            sink.truncated = True


async def _finish(proc: asyncio.subprocess.Process, readers: list[asyncio.Task[None]]) -> None:
    _, pending = await asyncio.wait(readers, timeout=_DRAIN_GRACE_S)
    if pending:
        # Only a process that left the group (and the namespace, if any) keeps the pipes open.
        logger.warning("a sandboxed process outlived its process group (pid %d)", proc.pid)
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
