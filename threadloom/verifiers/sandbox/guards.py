"""Python-level guards: the weaker isolation, used only when the caller asks for it.

The harness executes this file's source inside the process that runs the untrusted code and
calls `install(root)`. Afterwards creating sockets, starting processes, leaving the process
group, signalling other processes, writing outside `root` and reading other processes' `/proc`
entries raise `PermissionError` when done through the usual Python functions.

These guards are not a security boundary: code that reaches the C library (ctypes, a freshly
imported `posix` module, the unguarded base classes, C extensions that open files themselves)
gets around every one of them, and can then do what the orchestrator's user may do. They stop
accidents, not attackers. Standard library only; never imported by threadloom.
"""

from __future__ import annotations

import _io
import _posixsubprocess
import _socket
import builtins
import errno
import io
import os
import posix
import signal
import socket
from collections.abc import Callable
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITERS = (
    "mkdir", "rmdir", "remove", "unlink", "chmod", "lchmod", "chown", "lchown", "chflags",
    "lchflags", "truncate", "utime", "mkfifo", "mknod", "setxattr", "removexattr",
)  # fmt: skip
_SPAWNERS = (
    "fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
    "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnvp",
    "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe",
)  # fmt: skip
_PROCESS_CONTROL = (
    "setsid", "setpgid", "setpgrp", "killpg", "chroot", "setuid", "setgid", "setreuid",
    "setregid", "setresuid", "setresgid", "pidfd_open",
)  # fmt: skip


def _deny(what: str, path: object = None) -> None:
    raise PermissionError(errno.EPERM, what + " is not allowed in the sandbox", path)


def install(root: str) -> None:
    """Replace the process, file, signal and socket functions by guarded ones."""
    realpath, join, isabs = os.path.realpath, os.path.join, os.path.isabs
    fsdecode, fspath, readlink, getpid = os.fsdecode, os.fspath, posix.readlink, os.getpid
    real_open, real_os_open, real_kill, real_fileio = _io.open, posix.open, posix.kill, _io.FileIO

    def me() -> str:
        try:
            return readlink("/proc/self")
        except OSError:
            return str(getpid())

    def check(path: Any, write: bool, dir_fd: int | None = None) -> None:
        if isinstance(path, int):
            return
        try:
            name = fsdecode(fspath(path))
            if dir_fd is not None and not isabs(name):
                name = join(readlink(f"/proc/self/fd/{dir_fd}"), name)
            full = realpath(name)
        except (TypeError, ValueError):
            return
        except OSError:
            _deny("this path", path)
        if write and full != root and not full.startswith(root + os.sep):
            _deny("writing outside the sandbox directory", path)
        parts = full.split(os.sep)
        if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != me():
            _deny("reading another process's /proc entries", path)

    def writes(mode: object) -> bool:
        return isinstance(mode, str) and any(c in mode for c in "wax+")

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        check(file, writes(mode))
        return real_open(file, mode, *args, **kwargs)

    class GuardedFileIO(real_fileio):  # type: ignore[misc, valid-type]
        def __init__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
            check(file, writes(mode))
            super().__init__(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
        check(path, bool(flags & _WRITE_FLAGS), dir_fd)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    def writer(real: Callable[..., Any], params: tuple[tuple[int, str, str], ...]) -> Any:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            for index, name, fd_name in params:
                path = args[index] if index < len(args) else kwargs.get(name)
                if path is not None:
                    check(path, True, kwargs.get(fd_name))
            return real(*args, **kwargs)

        return guarded

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            _deny(what)

        return refused

    def guarded_kill(pid: int, sig: int) -> None:
        if pid != getpid():
            _deny("signalling other processes")
        real_kill(pid, sig)

    def patch(name: str, value: Any) -> None:
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, value)

    one = ((0, "path", "dir_fd"),)
    two = ((0, "src", "src_dir_fd"), (1, "dst", "dst_dir_fd"))
    for name in _WRITERS:
        if hasattr(os, name):
            patch(name, writer(getattr(os, name), one))
    for name in ("rename", "replace", "link"):
        patch(name, writer(getattr(os, name), two))
    patch("symlink", writer(os.symlink, ((1, "dst", "dir_fd"),)))
    patch("open", guarded_os_open)
    patch("kill", guarded_kill)
    for name in _SPAWNERS:
        patch(name, refuse(f"starting a process (os.{name})"))
    for name in _PROCESS_CONTROL:
        patch(name, refuse("os." + name))
    _posixsubprocess.fork_exec = refuse("starting a subprocess")
    if hasattr(signal, "pidfd_send_signal"):
        signal.pidfd_send_signal = refuse("signalling other processes")
    builtins.open = io.open = _io.open = guarded_open  # type: ignore[assignment]
    io.FileIO = _io.FileIO = GuardedFileIO  # type: ignore[misc]
    _guard_sockets()


def _guard_sockets() -> None:
    """Only wrapping an existing Unix socket (socket.socketpair, used by asyncio) is allowed."""
    raw_init = _socket.socket.__init__

    def guarded_init(self: Any, family: int = -1, type: int = -1, proto: int = -1,
                     fileno: Any = None) -> None:  # fmt: skip
        if fileno is None:
            _deny("network access")
        raw_init(self, family, type, proto, fileno)
        if self.family != socket.AF_UNIX:
            self.close()
            _deny("network access")

    def refused_method(self: Any, *args: Any, **kwargs: Any) -> Any:
        _deny("network access")

    class GuardedRawSocket(_socket.socket):
        __init__ = guarded_init
        bind = connect = connect_ex = sendto = refused_method

    class GuardedSocket(socket.socket):
        def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                     fileno: Any = None) -> None:  # fmt: skip
            if fileno is None:
                _deny("network access")
            super().__init__(family, type, proto, fileno)

        bind = connect = connect_ex = sendto = refused_method

    socket.socket = socket.SocketType = GuardedSocket  # type: ignore[misc]
    _socket.socket = _socket.SocketType = GuardedRawSocket  # type: ignore[misc]
