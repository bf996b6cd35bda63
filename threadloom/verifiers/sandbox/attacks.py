"""Escape attempts against the sandbox, each judged by its effect on the host.

Each attack runs real hostile code in the sandbox and then looks at the host: is the marker
file absent, did the listener receive nothing, is the target process alive, is no process of
the run left, did no canary leak into the output. `threadloom sandbox check` prints the table;
the test suite runs the same attacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from threadloom.verifiers.sandbox.limits import Isolation, SandboxLimits
from threadloom.verifiers.sandbox.runner import run_in_sandbox

__all__ = ["ATTACKS", "Attack", "Outcome", "processes_named", "run_attack"]

LIMITS = SandboxLimits(timeout_s=5.0, cpu_s=5, disk_mb=16)

# Ways around Python-level guards, tried one after another by the attacks below.
_RAW_FILE = """
import io, os, sys
def raw_open(path, mode):
    base = io.FileIO.__mro__[1] if io.FileIO.__mro__[1] is not object else io.FileIO
    try:
        return base(path, mode)
    except OSError as exc:
        print('refused', exc)
"""
_FRESH_POSIX = """
import sys
sys.modules.pop('posix', None)
import posix
"""
_NAMED_CHILD = """
import ctypes, os, time
libc = ctypes.CDLL(None)
def name_me(token):
    libc.prctl(15, token.encode(), 0, 0, 0)
"""


@dataclass(frozen=True)
class Outcome:
    """What an attack did to the host."""

    contained: bool
    evidence: str


@dataclass
class _Host:
    """Scratch space on the host, outside the sandbox."""

    directory: Path
    limits: SandboxLimits
    isolation: Isolation

    async def run(self, code: str) -> str:
        result = await run_in_sandbox(code, self.limits, isolation=self.isolation)
        return result.stdout + result.stderr


@dataclass(frozen=True)
class Attack:
    """One escape attempt."""

    name: str
    summary: str
    probe: Callable[[_Host], Awaitable[Outcome]]


def processes_named(token: str) -> list[int]:
    """Host pids whose command name (comm) is `token` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if comm == token[:15] and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _token() -> str:
    return "tl" + uuid.uuid4().hex[:13]


def _marker(host: _Host) -> Path:
    return host.directory / f"marker-{uuid.uuid4().hex}"


def _absent(marker: Path) -> Outcome:
    if marker.exists():
        return Outcome(False, f"a file was created on the host ({marker})")
    return Outcome(True, "no file was created on the host")


async def _read_host_file(host: _Host) -> Outcome:
    secret = host.directory / "secret.txt"
    canary = uuid.uuid4().hex
    secret.write_text(canary)
    code = (
        _RAW_FILE
        + f"print(open({str(secret)!r}).read())\nprint(raw_open({str(secret)!r}, 'r').read())\n"
    )
    output = await host.run(code)
    if canary in output:
        return Outcome(False, "the file's content came back in the output")
    return Outcome(True, "the canary did not come back")


async def _host_environ(host: _Host) -> Outcome:
    canary = uuid.uuid4().hex
    target = subprocess.Popen(["sleep", "30"], env={"THREADLOOM_SANDBOX_CANARY": canary})
    try:
        code = _RAW_FILE + (
            f"print(dict(os.environ))\nprint(raw_open('/proc/{target.pid}/environ', 'r').read())\n"
        )
        output = await host.run(code)
    finally:
        target.kill()
        target.wait()
    if canary in output:
        return Outcome(False, "a host process's environment came back in the output")
    return Outcome(True, "the canary in a host process's environment did not come back")


async def _home_directory(host: _Host) -> Outcome:
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    if not os.access(home, os.R_OK | os.W_OK | os.X_OK):
        home = host.directory  # this user has no usable home; any directory it may write
    marker = home / f".threadloom-escape-{uuid.uuid4().hex}"
    names = sorted(p.name for p in home.iterdir()) if home.is_dir() else []
    code = _RAW_FILE + (
        f"print(os.listdir({str(home)!r}))\n"
        f"f = raw_open({str(marker)!r}, 'w')\nf.write(b'x')\nf.close()\n"
    )
    try:
        output = await host.run(code)
        written = marker.exists()
    finally:
        marker.unlink(missing_ok=True)
    if written:
        return Outcome(False, "a file was written into the real home directory")
    if names and all(name in output for name in names[:3]):
        return Outcome(False, "the real home directory was listed")
    return Outcome(True, "the home directory was neither listed nor written")


async def _write_by_base_class(host: _Host) -> Outcome:
    marker = _marker(host)
    await host.run(_RAW_FILE + f"raw_open({str(marker)!r}, 'w').write(b'x')\n")
    return _absent(marker)


async def _write_by_c_code(host: _Host) -> Outcome:
    marker = _marker(host)
    await host.run(
        f"import sqlite3\nsqlite3.connect({str(marker)!r}).execute('create table t(x)')\n"
    )
    return _absent(marker)


async def _write_by_closure(host: _Host) -> Outcome:
    marker = _marker(host)
    code = (
        "import os\n"
        "cells = [c.cell_contents for c in (os.open.__closure__ or ())]\n"
        "real = next((c for c in cells if getattr(c, '__name__', '') == 'open'\n"
        "             and type(c).__name__ == 'builtin_function_or_method'), os.open)\n"
        f"os.close(real({str(marker)!r}, os.O_WRONLY | os.O_CREAT))\n"
    )
    await host.run(code)
    return _absent(marker)


async def _shell_by_fresh_posix(host: _Host) -> Outcome:
    marker = _marker(host)
    await host.run(_FRESH_POSIX + f"print(posix.system('id -u > {marker}'))\n")
    return _absent(marker)


async def _tcp_localhost(host: _Host) -> Outcome:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        code = (
            "import _socket\n"
            "base = _socket.socket.__mro__[1] if _socket.socket.__mro__[1] is not object "
            "else _socket.socket\n"
            "s = base(_socket.AF_INET, _socket.SOCK_STREAM)\n"
            f"s.connect(('127.0.0.1', {port}))\ns.sendall(b'hello-from-sandbox')\n"
        )
        return await _listen(listener, host.run(code))


async def _unix_socket(host: _Host) -> Outcome:
    path = host.directory / "host.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(4)
        code = (
            "import _socket\n"
            "base = _socket.socket.__mro__[1] if _socket.socket.__mro__[1] is not object "
            "else _socket.socket\n"
            "s = base(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
            f"s.connect({str(path)!r})\ns.sendall(b'hello-from-sandbox')\n"
        )
        return await _listen(listener, host.run(code))


async def _listen(listener: socket.socket, attack: Awaitable[str]) -> Outcome:
    listener.setblocking(False)
    await attack
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return Outcome(True, "the listener received no connection")
    with connection:
        connection.settimeout(1.0)
        try:
            data = connection.recv(100)
        except OSError:
            data = b""
    return Outcome(False, f"the listener was reached and received {len(data)} bytes")


async def _kill_host_process(host: _Host) -> Outcome:
    target = subprocess.Popen(["sleep", "30"])
    try:
        code = _FRESH_POSIX + (
            "import ctypes\n"
            f"for kill in (posix.kill, ctypes.CDLL(None).kill):\n"
            f"    try:\n        print(kill({target.pid}, 9))\n"
            "    except OSError as exc:\n        print('refused', exc)\n"
        )
        await host.run(code)
        await asyncio.sleep(0.1)
        alive = target.poll() is None
    finally:
        target.kill()
        target.wait()
    if not alive:
        return Outcome(False, "a host process was killed from inside")
    return Outcome(True, "the host process is alive")


async def _survivor(host: _Host) -> Outcome:
    token = _token()
    code = _NAMED_CHILD + (
        "if libc.fork() == 0:\n"
        "    libc.setsid()\n"
        f"    name_me({token!r})\n"
        "    while True: time.sleep(1)\n"
        "print('forked')\n"
    )
    await host.run(code)
    return await _none_left(token)


async def _fork_bomb(host: _Host) -> Outcome:
    token = _token()
    code = _NAMED_CHILD + f"name_me({token!r})\nwhile libc.fork() >= 0:\n    pass\n"
    await host.run(code)
    return await _none_left(token)


async def _none_left(token: str) -> Outcome:
    for _ in range(20):
        left = processes_named(token)
        if not left:
            return Outcome(True, "no process of the run is left")
        await asyncio.sleep(0.1)
    for pid in left:  # clean up what escaped, then report it
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return Outcome(False, f"{len(left)} process(es) of the run outlived it")


async def _huge_allocation(host: _Host) -> Outcome:
    output = await host.run("data = bytearray(10 * 1024**3)\nprint('allocated', len(data))\n")
    if "allocated" in output:
        return Outcome(False, "10 GB were allocated")
    return Outcome(True, "the 10 GB allocation failed inside")


async def _fill_disk(host: _Host) -> Outcome:
    limit = host.limits.disk_mb + 32
    code = (
        "import os, tempfile\nwritten = 0\n"
        "places = {'/', '/dev/shm', tempfile.gettempdir(), os.getcwd(), os.path.expanduser('~')}\n"
        "for place in sorted(places):\n"
        f"    for i in range({limit}):\n"
        "        try:\n"
        "            with open(os.path.join(place, f'fill{i}'), 'wb') as f:\n"
        "                f.write(b'x' * 1024 * 1024)\n"
        "            written += 1\n"
        "        except OSError:\n            break\n"
        "print('written', written)\n"
    )
    output = await host.run(code)
    written = next((int(line.split()[1]) for line in output.splitlines()
                    if line.startswith("written ")), 0)  # fmt: skip
    if written > host.limits.disk_mb:
        return Outcome(False, f"{written} MiB were written, past the {host.limits.disk_mb} MiB cap")
    return Outcome(True, f"writing stopped after {written} MiB in all")


ATTACKS: tuple[Attack, ...] = (
    Attack("read-host-file", "read a file outside the sandbox", _read_host_file),
    Attack("host-environ", "read a host process's /proc/PID/environ", _host_environ),
    Attack("home-directory", "list and write the real home directory", _home_directory),
    Attack("write-base-class", "write through io.FileIO.__mro__[1]", _write_by_base_class),
    Attack("write-c-code", "write with sqlite3 (C code)", _write_by_c_code),
    Attack("write-closure", "write with open() taken from a guard's closure", _write_by_closure),
    Attack("shell-fresh-posix", "re-import posix and run a shell", _shell_by_fresh_posix),
    Attack("tcp-localhost", "connect to 127.0.0.1", _tcp_localhost),
    Attack("unix-socket", "connect to a host Unix socket", _unix_socket),
    Attack("kill-host-process", "SIGKILL a host process", _kill_host_process),
    Attack("survivor", "leave a process running after the run", _survivor),
    Attack("fork-bomb", "fork without end", _fork_bomb),
    Attack("allocate-10gb", "allocate 10 GB", _huge_allocation),
    Attack("fill-disk", "write past the disk cap, anywhere writable", _fill_disk),
)  # fmt: skip
"""Every attack, in the order the table shows them."""


async def run_attack(
    attack: Attack, isolation: Isolation, limits: SandboxLimits = LIMITS
) -> Outcome:
    """Run one attack in a fresh host scratch directory (removed afterwards)."""
    directory = Path(tempfile.mkdtemp(prefix="threadloom-attack-"))
    try:
        return await attack.probe(_Host(directory, limits, isolation))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
