"""The code sandbox: every escape attempt is really run and must be contained."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from threadloom.verifiers import sandbox
from threadloom.verifiers.sandbox import SandboxLimits, SandboxResult, run_in_sandbox

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the sandbox tests read /proc (Linux only)"
)

FAST = SandboxLimits(timeout_s=2.0, cpu_s=5)
SLACK_S = 3.0
"""How long after its timeout a killed run may take to return (interpreter start, reaping)."""

# Prints this process's pid and process group as the host sees them (the sandbox may run the
# code in its own PID namespace, where os.getpid() is not the host's pid).
SHOW_IDS = """
import os
def host_ids():
    fields = open('/proc/self/stat').read().rsplit(')', 1)[1].split()
    return os.readlink('/proc/self'), fields[2]
print('ids', *host_ids(), flush=True)
"""


def host_ids(result: SandboxResult) -> list[tuple[int, int]]:
    """(pid, process group) of every 'ids' line the program printed."""
    found = []
    for line in result.stdout.splitlines():
        if line.startswith("ids "):
            _, pid, pgid = line.split()
            found.append((int(pid), int(pgid)))
    return found


def is_gone(pid: int) -> bool:
    """No such process, or only its zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def wait_gone(pids: list[int], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(is_gone(pid) for pid in pids):
            return True
        await asyncio.sleep(0.05)
    return False


def group_is_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    # members may be zombies waiting to be reaped
    return all(
        is_gone(int(p.name))
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _pgid_of(p) == pgid
    )


def _pgid_of(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def escape_path() -> Path:
    return Path(f"/tmp/threadloom_escape_{uuid.uuid4().hex}.txt")


# ---- normal behaviour -------------------------------------------------------------------------


async def test_runs_code_and_captures_output() -> None:
    result = await run_in_sandbox("import sys\nprint('hello')\nprint('oops', file=sys.stderr)")
    assert result.ok and result.returncode == 0
    assert result.stdout == "hello\n"
    assert result.stderr == "oops\n"
    assert not result.timed_out and not result.truncated and result.killed_by_signal is None


async def test_uncaught_exception_is_a_failed_run() -> None:
    result = await run_in_sandbox("def f(x):\n    return x\nassert f(1) == 2", FAST)
    assert not result.ok and result.returncode == 1
    assert result.stderr.strip().endswith("AssertionError")
    assert "assert f(1) == 2" in result.stderr


async def test_writing_inside_the_sandbox_dir_works_and_it_is_removed() -> None:
    code = "import os\nopen('a.txt', 'w').write('data')\nprint(open('a.txt').read(), os.getcwd())"
    result = await run_in_sandbox(code, FAST)
    assert result.ok, result.stderr
    content, workdir = result.stdout.split()
    assert content == "data"
    assert "threadloom-sandbox-" in workdir
    assert not Path(workdir).exists()


async def test_asyncio_and_threads_still_work() -> None:
    code = (
        "import asyncio, threading\n"
        "async def main():\n    return 41\n"
        "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "print(asyncio.run(main()) + 1)\n"
    )
    result = await run_in_sandbox(code, FAST)
    assert result.ok, result.stderr
    assert result.stdout.split() == ["thread", "42"]


async def test_limits_reject_unknown_fields() -> None:
    with pytest.raises(ValueError):
        SandboxLimits(timeout=3)  # type: ignore[call-arg]


# ---- containment --------------------------------------------------------------------------------


async def test_infinite_loop_is_killed_with_its_whole_process_group() -> None:
    # The loop also forks through ctypes, which the Python-level guard cannot see: the
    # wall-clock kill of the group (and of the PID namespace) is what must stop both.
    code = SHOW_IDS + (
        "import ctypes, time\n"
        "if ctypes.CDLL(None).fork() == 0:\n"
        "    print('ids', *host_ids(), flush=True)\n"
        "    while True: time.sleep(1)\n"
        "while True: pass\n"
    )
    started = time.monotonic()
    result = await run_in_sandbox(code, FAST)
    elapsed = time.monotonic() - started
    assert result.timed_out and not result.ok
    assert result.killed_by_signal == signal.SIGKILL
    assert elapsed < FAST.timeout_s + SLACK_S
    ids = host_ids(result)
    assert len(ids) == 2, result.stdout
    assert await wait_gone([pid for pid, _ in ids])
    assert all(group_is_empty(pgid) for _, pgid in ids)


async def test_process_that_leaves_the_group_is_killed_in_a_pid_namespace() -> None:
    code = SHOW_IDS + (
        "import ctypes, os, time\n"
        "print('pidns', os.getpid(), flush=True)\n"
        "libc = ctypes.CDLL(None)\n"
        "if libc.fork() == 0:\n"
        "    libc.setsid()\n"
        "    print('ids', *host_ids(), flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    result = await run_in_sandbox(code, FAST)
    if "pidns 2" not in result.stdout:
        pytest.skip("no PID namespace here (needs root and unshare); the guards are all we have")
    assert result.timed_out
    ids = host_ids(result)
    assert len(ids) == 2 and ids[0][1] != ids[1][1], result.stdout
    assert await wait_gone([pid for pid, _ in ids])


async def test_cancelled_run_kills_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[int, str]] = []
    original = asyncio.create_subprocess_exec

    async def spy(*args: object, **kwargs: object) -> asyncio.subprocess.Process:
        proc = await original(*args, **kwargs)  # type: ignore[arg-type]
        started.append((proc.pid, str(kwargs["cwd"])))
        return proc

    monkeypatch.setattr(sandbox.asyncio, "create_subprocess_exec", spy)
    task = asyncio.create_task(run_in_sandbox("while True: pass", SandboxLimits(timeout_s=30)))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ((pid, workdir),) = started
    assert await wait_gone([pid])
    assert group_is_empty(pid)
    assert not Path(workdir).exists()


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()",
        "import subprocess\nsubprocess.Popen(['sleep', '60'])",
        "import subprocess\nsubprocess.run('sleep 60', shell=True)",
        "import os\nos.system('sleep 60')",
        "import os\nos.execv('/bin/sleep', ['sleep', '60'])",
        "import multiprocessing, time\n"
        "multiprocessing.Process(target=time.sleep, args=(60,)).start()",
        "import posix\nposix.fork()",
        "import os\nos.setsid()",
        "import os\nos.kill(1, 0)",
    ],
    ids=[
        "fork-bomb",
        "popen",
        "shell",
        "system",
        "exec",
        "multiprocessing",
        "posix",
        "setsid",
        "kill",
    ],
)
async def test_process_creation_is_refused(code: str) -> None:
    result = await run_in_sandbox(code, FAST)
    assert not result.ok and not result.timed_out
    assert "PermissionError" in result.stderr
    assert "not allowed in the sandbox" in result.stderr


async def test_huge_allocation_fails_with_memory_error() -> None:
    result = await run_in_sandbox("data = b'x' * 10**10\nprint(len(data))", FAST)
    assert not result.ok and not result.timed_out
    assert result.stdout == ""
    assert result.stderr.strip().endswith("MemoryError")


async def test_growing_allocation_hits_the_memory_limit() -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))"
    result = await run_in_sandbox(code, SandboxLimits(memory_mb=128, timeout_s=5))
    assert not result.ok and not result.timed_out
    assert "MemoryError" in result.stderr


@pytest.mark.parametrize(
    "attempt",
    [
        "open(TARGET, 'w').write('x')",
        "open(TARGET, 'a').write('x')",
        "import io\nio.open(TARGET, 'w').write('x')",
        "import io\nio.FileIO(TARGET, 'w').write(b'x')",
        "import os\nos.close(os.open(TARGET, os.O_WRONLY | os.O_CREAT))",
        "import pathlib\npathlib.Path(TARGET).write_text('x')",
        "import shutil\nopen('mine.txt', 'w').write('x')\nshutil.copy('mine.txt', TARGET)",
        "import os\nopen('mine.txt', 'w').write('x')\nos.rename('mine.txt', TARGET)",
        "import os\nos.symlink(TARGET, 'link')\nopen('link', 'w').write('x')",
        "import os\nos.chdir('/tmp')\nopen(os.path.basename(TARGET), 'w').write('x')",
        "import os\nfd = os.open('/tmp', os.O_RDONLY)\n"
        "os.open(os.path.basename(TARGET), os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
    ],
    ids=[
        "open-w",
        "open-a",
        "io-open",
        "fileio",
        "os-open",
        "pathlib",
        "shutil-copy",
        "rename",
        "symlink",
        "chdir",
        "dir-fd",
    ],
)
async def test_writing_outside_the_sandbox_dir_is_refused(attempt: str) -> None:
    target = escape_path()
    result = await run_in_sandbox(f"TARGET = {str(target)!r}\n{attempt}\n", FAST)
    try:
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)
    assert not result.ok
    assert "PermissionError" in result.stderr


async def test_file_size_limit() -> None:
    code = "open('big.bin', 'wb').write(b'x' * (3 * 1024 * 1024))"
    result = await run_in_sandbox(code, SandboxLimits(file_size_mb=1, timeout_s=5))
    assert not result.ok and not result.timed_out
    assert "File too large" in result.stderr


async def test_environment_is_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLOOM_TEST_SECRET", "s3cr3t")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-sandbox")
    code = (
        "import json, os\nprint(json.dumps(dict(os.environ)))\n"
        "print(os.environ['THREADLOOM_TEST_SECRET'])"
    )
    result = await run_in_sandbox(code, FAST)
    assert not result.ok
    assert "KeyError: 'THREADLOOM_TEST_SECRET'" in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    assert "sk-not-for-the-sandbox" not in result.stdout + result.stderr
    names = set(json.loads(result.stdout.splitlines()[0]))
    assert names <= {
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "LC_CTYPE",
    }


async def test_other_processes_environment_is_unreadable() -> None:
    code = f"print(open('/proc/{os.getpid()}/environ', 'rb').read()[:50])"
    result = await run_in_sandbox(code, FAST)
    assert not result.ok
    assert "PermissionError" in result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)",
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)",
        "import _socket\n_socket.socket()",
        "import socket\nsocket.socket(socket.AF_UNIX).connect('/var/run/docker.sock')",
        "import socket\na, b = socket.socketpair()\na.connect('/tmp/x.sock')",
    ],
    ids=["socket", "create-connection", "urllib", "raw-socket", "unix-path", "socketpair-connect"],
)
async def test_network_is_refused(code: str) -> None:
    result = await run_in_sandbox(code, FAST)
    assert not result.ok and not result.timed_out
    assert "PermissionError" in result.stderr or "URLError" in result.stderr


async def test_output_flood_is_capped() -> None:
    limits = SandboxLimits(timeout_s=2.0, max_output_bytes=4096)
    result = await run_in_sandbox("while True:\n    print('x' * 100)", limits)
    assert result.timed_out and result.truncated
    assert 0 < len(result.stdout.encode()) <= 4096


async def test_large_finite_output_is_truncated_but_the_run_succeeds() -> None:
    limits = SandboxLimits(timeout_s=10.0, max_output_bytes=4096)
    result = await run_in_sandbox("import sys\nsys.stdout.write('y' * 5_000_000)", limits)
    assert result.ok and result.truncated
    assert result.stdout == "y" * 4096


async def test_cpu_limit_kills_a_busy_loop_before_the_wall_clock() -> None:
    result = await run_in_sandbox("while True: pass", SandboxLimits(cpu_s=1, timeout_s=20))
    assert not result.ok and not result.timed_out
    assert result.killed_by_signal in (signal.SIGXCPU, signal.SIGKILL)
    assert result.duration_s < 15


async def test_runs_concurrently_without_blocking_the_loop() -> None:
    slow = run_in_sandbox("while True: pass", SandboxLimits(timeout_s=4))
    quick = [run_in_sandbox(f"print({i})", FAST) for i in range(4)]
    started = time.monotonic()
    slow_task = asyncio.create_task(slow)
    results = await asyncio.gather(*quick)
    quick_elapsed = time.monotonic() - started
    assert [r.stdout.strip() for r in results] == ["0", "1", "2", "3"]
    assert quick_elapsed < 4
    assert (await slow_task).timed_out
