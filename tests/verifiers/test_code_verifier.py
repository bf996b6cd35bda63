"""CodeVerifier: HumanEval-style and assert-list problems, run for real in the sandbox."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from pathlib import Path

import pytest

from threadloom import ConfigError
from threadloom.data import load
from threadloom.types import Candidate, Problem
from threadloom.verifiers.base import Verifier
from threadloom.verifiers.code import CodeVerifier, build_test_job
from threadloom.verifiers.registry import make_verifier
from threadloom.verifiers.sandbox import SandboxLimits

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the sandbox runs on Linux"
)

PROMPT_CODE = '''from typing import List


def running_max(numbers: List[int]) -> List[int]:
    """The largest number seen so far, at each position.
    >>> running_max([1, 3, 2])
    [1, 3, 3]
    """
'''
TEST = """
METADATA = {"author": "threadloom"}


def check(candidate):
    assert candidate([]) == []
    assert candidate([1, 3, 2]) == [1, 3, 3]
    assert candidate([5, 4, 6, 1]) == [5, 5, 6, 6]
"""
CORRECT = """Here is my solution:

```python
def running_max(numbers):
    result, best = [], None
    for n in numbers:
        best = n if best is None else max(best, n)
        result.append(best)
    return result
```
"""
WRONG = "```python\ndef running_max(numbers):\n    return sorted(numbers)\n```"


def humaneval(**extra: object) -> Problem:
    metadata: dict[str, object] = {
        "test": TEST,
        "entry_point": "running_max",
        "prompt_code": PROMPT_CODE,
    }
    metadata.update(extra)
    return Problem(prompt=PROMPT_CODE, answer_format="code", metadata=metadata)


def solution(body: str) -> Candidate:
    """A candidate defining running_max with `body` (indented code) before a correct return."""
    code = f"def running_max(numbers):\n{body}\n    return [max(numbers[: i + 1]) for i in "
    code += "range(len(numbers))]\n"
    return Candidate(text=f"```python\n{code}```")


@pytest.fixture
def verifier() -> CodeVerifier:
    return CodeVerifier(limits=SandboxLimits(timeout_s=3.0, cpu_s=5))


def test_protocol_and_registry() -> None:
    v = make_verifier("code")
    assert isinstance(v, CodeVerifier) and isinstance(v, Verifier)
    assert v.name == "code"
    assert make_verifier("code", limits={"timeout_s": 2}).limits.timeout_s == 2  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        CodeVerifier(limits={"timeout": 2})
    with pytest.raises(ConfigError):
        CodeVerifier(max_concurrency=0)


async def test_correct_solution_passes(verifier: CodeVerifier) -> None:
    score = await verifier.score(humaneval(), Candidate(text=CORRECT))
    assert score.passed is True and score.value == 1.0
    assert score.detail == "passed"


async def test_wrong_solution_fails_with_the_assertion(verifier: CodeVerifier) -> None:
    score = await verifier.score(humaneval(), Candidate(text=WRONG))
    assert score.passed is False and score.value == 0.0
    assert score.detail.startswith("AssertionError")
    assert score.detail.endswith("in `assert candidate([1, 3, 2]) == [1, 3, 3]`")


async def test_body_only_answer_is_completed_with_the_prompt(verifier: CodeVerifier) -> None:
    indented = "```python\n    best, out = float('-inf'), []\n    for n in numbers:\n"
    indented += "        best = max(best, n)\n        out.append(best)\n    return out\n```"
    assert (await verifier.score(humaneval(), Candidate(text=indented))).passed is True
    # a body whose first line lost its indentation when it was copied out
    ragged = "best, out = float('-inf'), []\n    for n in numbers:\n"
    ragged += "        best = max(best, n)\n        out.append(best)\n    return out"
    assert (await verifier.score(humaneval(), Candidate(text=ragged))).passed is True


async def test_body_only_without_prompt_code_fails_cleanly(verifier: CodeVerifier) -> None:
    problem = humaneval(prompt_code=None)
    score = await verifier.score(problem, Candidate(text="    return numbers"))
    assert score.passed is False
    assert "Error" in score.detail


async def test_assert_list_tests(verifier: CodeVerifier) -> None:
    problem = Problem(
        prompt="Write add(a, b).",
        metadata={"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]},
    )
    good = Candidate(text="```python\ndef add(a, b):\n    return a + b\n```")
    bad = Candidate(text="```python\ndef add(a, b):\n    return a - b\n```")
    assert (await verifier.score(problem, good)).passed is True
    score = await verifier.score(problem, bad)
    assert score.passed is False and "assert add(1, 2) == 3" in score.detail


async def test_problem_without_tests_is_a_failed_score(verifier: CodeVerifier) -> None:
    score = await verifier.score(Problem(prompt="write code"), Candidate(text=CORRECT))
    assert score.passed is False and "no tests" in score.detail
    half = Problem(prompt="q", metadata={"test": TEST})
    score = await verifier.score(half, Candidate(text=CORRECT))
    assert score.passed is False and "entry_point" in score.detail


async def test_empty_answer_and_syntax_error(verifier: CodeVerifier) -> None:
    assert (await verifier.score(humaneval(), Candidate(text="  "))).passed is False
    score = await verifier.score(humaneval(), Candidate(text="def running_max(:\n  pass"))
    assert score.passed is False and "SyntaxError" in score.detail


async def test_exiting_early_with_success_does_not_pass(verifier: CodeVerifier) -> None:
    for cheat in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"):
        code = f"```python\ndef running_max(numbers):\n    return numbers\n{cheat}\n```"
        score = await verifier.score(humaneval(), Candidate(text=code))
        assert score.passed is False, cheat
        assert "exited before the tests finished" in score.detail


def test_build_test_job_shapes() -> None:
    job = build_test_job(humaneval().metadata, "def running_max(numbers):\n    return []")
    assert job.candidate.startswith("def running_max")
    assert "def check(candidate)" in job.tests
    assert job.tests.rstrip().endswith("check(running_max)")
    completed = build_test_job(humaneval().metadata, "return []")
    assert completed.candidate.startswith("from typing import List")
    assert "    return []" in completed.candidate
    listed = build_test_job({"tests": ["assert f() == 1"]}, "def f():\n    return 1")
    assert listed.tests == "assert f() == 1\n"
    with pytest.raises(ConfigError):
        build_test_job({}, "x = 1")


# ---- misbehaving candidates: each must be a failed score, not an exception or a hang -----------


@pytest.mark.slow
async def test_infinite_loop_times_out(verifier: CodeVerifier) -> None:
    started = time.monotonic()
    score = await verifier.score(humaneval(), solution("    while True:\n        pass"))
    assert score.passed is False
    assert score.detail == "timed out after 3s"
    assert time.monotonic() - started < 3.0 + 3.0


@pytest.mark.parametrize(
    "body",
    [
        "    import os\n    while True:\n        os.fork()",
        "    import subprocess\n    subprocess.Popen(['sleep', '60'])",
    ],
    ids=["fork-bomb", "popen"],
)
async def test_process_creation_fails(verifier: CodeVerifier, body: str) -> None:
    score = await verifier.score(humaneval(), solution(body))
    assert score.passed is False
    assert score.detail.startswith("PermissionError")


async def test_huge_allocation_fails(verifier: CodeVerifier) -> None:
    score = await verifier.score(humaneval(), solution("    data = b'x' * 10**10"))
    assert score.passed is False and "MemoryError" in score.detail


async def test_writing_outside_fails_and_leaves_no_file(
    verifier: CodeVerifier, tmp_path: Path
) -> None:
    target = tmp_path / f"threadloom_escape_{uuid.uuid4().hex}.txt"
    body = f"    open({str(target)!r}, 'w').write('escaped')"
    score = await verifier.score(humaneval(), solution(body))
    assert not target.exists()
    assert score.passed is False and "Error" in score.detail


async def test_environment_secret_is_invisible(
    verifier: CodeVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREADLOOM_TEST_SECRET", "s3cr3t")
    body = "    import os\n    assert os.environ['THREADLOOM_TEST_SECRET'] == 's3cr3t'"
    score = await verifier.score(humaneval(), solution(body))
    assert score.passed is False
    assert "KeyError" in score.detail and "s3cr3t" not in score.detail


async def test_network_socket_fails(verifier: CodeVerifier) -> None:
    body = "    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=1)"
    score = await verifier.score(humaneval(), solution(body))
    assert score.passed is False and "PermissionError" in score.detail


@pytest.mark.slow
async def test_output_flood_is_capped(verifier: CodeVerifier) -> None:
    flood = await verifier.score(humaneval(), solution("    while True:\n        print('x' * 80)"))
    assert flood.passed is False and flood.detail == "timed out after 3s"
    chatty = solution("    print('y' * 200_000)")
    score = await verifier.score(humaneval(), chatty)
    assert score.passed is True and score.detail == "passed (output truncated)"


async def test_concurrent_scores_are_bounded_and_correct() -> None:
    v = CodeVerifier(limits=SandboxLimits(timeout_s=5), max_concurrency=2)
    texts = [CORRECT, WRONG] * 3
    scores = await asyncio.gather(*(v.score(humaneval(), Candidate(text=t)) for t in texts))
    assert [s.passed for s in scores] == [True, False] * 3


# ---- a verdict the candidate cannot forge ------------------------------------------------------

WRONG_RUNNING_MAX = "def running_max(numbers):\n    return sorted(numbers)\n"
CHEATS = {
    "token-from-own-file": "import os, re\n"
    "os._exit(int(re.findall(r'raise SystemExit\\((\\d+)\\)', open(__file__).read())[-1]))\n",
    "token-from-code-object": "import os, sys\n"
    "os._exit([k for k in sys._getframe().f_code.co_consts\n"
    "          if isinstance(k, int) and 10 <= k < 100][-1])\n",
    "always-equal-humaneval": "class _Any(list):\n"
    "    def __eq__(self, other):\n        return True\n"
    "def running_max(numbers):\n    return _Any()\n",
}


@pytest.mark.parametrize("cheat", list(CHEATS), ids=list(CHEATS))
async def test_cheats_against_check_fail(verifier: CodeVerifier, cheat: str) -> None:
    code = WRONG_RUNNING_MAX + CHEATS[cheat]
    score = await verifier.score(humaneval(), Candidate(text=f"```python\n{code}```"))
    assert score.passed is False, score.detail


async def test_always_equal_object_fails_an_assert_list_problem(verifier: CodeVerifier) -> None:
    problem = Problem(prompt="Write add(a, b).", metadata={"tests": ["assert add(1, 2) == 3"]})
    code = "class _Any(int):\n    def __eq__(self, other):\n        return True\n"
    code += "def add(a, b):\n    return _Any()\n"
    score = await verifier.score(problem, Candidate(text=f"```python\n{code}```"))
    assert score.passed is False
    assert "_Any cannot be checked" in score.detail


async def test_candidate_cannot_rewrite_the_tests(verifier: CodeVerifier) -> None:
    # In one process, a trace function could skip the failing assertion, and a replaced
    # AssertionError or check() could swallow it; the tests run in another process.
    code = WRONG_RUNNING_MAX + (
        "import builtins, sys\n"
        "builtins.AssertionError = type('Quiet', (Exception,), {})\n"
        "sys.settrace(lambda *a: None)\n"
        "def check(candidate):\n    return None\n"
    )
    score = await verifier.score(humaneval(), Candidate(text=f"```python\n{code}```"))
    assert score.passed is False and score.detail.startswith("AssertionError")


async def test_lone_surrogate_is_a_failed_score(verifier: CodeVerifier) -> None:
    code = "def running_max(numbers):\n    return numbers  # \udcff\n"
    score = await verifier.score(humaneval(), Candidate(text=f"```python\n{code}```"))
    assert score.passed is False and "surrogate" in score.detail


# ---- isolation options -------------------------------------------------------------------------


def test_isolation_option_is_validated_and_reachable_from_the_registry() -> None:
    with pytest.raises(ConfigError, match="isolation"):
        CodeVerifier(isolation="none")  # type: ignore[arg-type]
    assert make_verifier("code:guards").isolation == "guards"  # type: ignore[attr-defined]
    assert CodeVerifier().isolation == "bwrap"


async def test_guards_isolation_still_grades_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="threadloom.verifiers.sandbox.runner")
    guarded = CodeVerifier(isolation="guards", limits=SandboxLimits(timeout_s=5))
    assert (await guarded.score(humaneval(), Candidate(text=CORRECT))).passed is True
    assert (await guarded.score(humaneval(), Candidate(text=WRONG))).passed is False
    assert sum("Python guards only" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.slow
async def test_all_bundled_humaneval_canonical_solutions_pass() -> None:
    verifier = CodeVerifier(max_concurrency=2)
    problems = load("humaneval")
    assert len(problems) == 120

    async def grade(problem: Problem) -> tuple[str, bool, str]:
        solution = problem.metadata["prompt_code"] + problem.metadata["canonical_solution"]
        score = await verifier.score(problem, Candidate(text=f"```python\n{solution}\n```"))
        return str(problem.id), bool(score.passed), score.detail

    results = await asyncio.gather(*(grade(p) for p in problems))
    assert [r for r in results if not r[1]] == []


def test_bench_and_run_pass_the_sandbox_choice_to_the_code_grader() -> None:
    from threadloom.evaluation.bench import Verifiers

    grader = Verifiers(selection=None, sandbox="guards").get("code")
    assert grader.isolation == "guards"  # type: ignore[attr-defined]
    assert Verifiers(selection=None).get("code").isolation == "bwrap"  # type: ignore[attr-defined]


async def test_candidate_cannot_shadow_builtins_the_tests_use(verifier: CodeVerifier) -> None:
    problem = Problem(
        prompt="Write half(x).",
        metadata={"tests": ["assert abs(half(10) - 5.0) < 1e-6", "assert len([half(2)]) == 1"]},
    )
    code = "def abs(x):\n    return 0\ndef len(x):\n    return 1\ndef half(x):\n    return 0.0\n"
    score = await verifier.score(problem, Candidate(text=f"```python\n{code}```"))
    assert score.passed is False
    assert score.detail.startswith("AssertionError")
