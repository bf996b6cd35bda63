"""A verifier that needs a reference and has none says so instead of scoring 1.00."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import threadloom as tl
from threadloom import FakeWorker
from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.math import MathVerifier
from threadloom.verifiers.numeric import NumericVerifier


async def test_numeric_without_a_reference_is_no_verdict() -> None:
    verifier = NumericVerifier()
    unjudged = await verifier.score(Problem(prompt="q"), Candidate(text="It is 32", answer="32"))
    assert (unjudged.judged, unjudged.passed, unjudged.shown()) == (False, None, "no reference")
    assert unjudged.value > (await verifier.score(Problem(prompt="q"), Candidate(text="?"))).value

    right = await verifier.score(Problem(prompt="q", reference="32"), Candidate(text="32"))
    wrong = await verifier.score(Problem(prompt="q", reference="42"), Candidate(text="32"))
    assert (right.judged, right.passed, right.shown()) == (True, True, "1.00")
    assert (wrong.judged, wrong.passed, wrong.shown()) == (True, False, "0.00")
    nothing = await verifier.score(Problem(prompt="q"), Candidate(text="no idea"))
    assert (nothing.judged, nothing.shown()) == (True, "0.00")  # no answer is judged: wrong


async def test_math_without_a_reference_is_no_verdict() -> None:
    verifier = MathVerifier()
    try:
        score = await verifier.score(Problem(prompt="q"), Candidate(text="so \\boxed{3}"))
    finally:
        verifier.close()
    assert (score.judged, score.passed, score.shown()) == (False, None, "no reference")


def test_old_records_without_the_flag_read_as_judged() -> None:
    assert Score.model_validate({"value": 1.0, "passed": True}).judged is True


async def test_a_run_without_a_reference_carries_no_verdicts() -> None:
    worker = FakeWorker(("It is 32", "It is 42", "It is 32"))
    result = await tl.arun(
        "What is 17 + 25?", "best-of-n", n=3, worker=worker, verifier="numeric", seed=1
    )
    assert [c.scores["numeric"].judged for c in result.candidates] == [False] * 3
    graded = await tl.arun(
        "What is 17 + 25?", "best-of-n", n=3, worker=FakeWorker(("It is 32", "It is 42")),
        verifier="numeric", reference="42", seed=1,
    )
    assert all(c.scores["numeric"].judged for c in graded.candidates)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadloom.cli", "run", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )


def test_the_run_command_prints_no_reference_instead_of_a_score() -> None:
    question = ("What is 17 + 25?", "--worker", "fake:It is 32|It is 42", "-n", "2",
                "--verifier", "numeric")
    table = run_cli(*question)
    assert table.returncode == 0, table.stderr
    assert "numeric=no reference" in table.stdout and "numeric=1.00" not in table.stdout
    graded = run_cli(*question, "--reference", "42")
    assert graded.returncode == 0, graded.stderr
    assert "numeric=1.00" in graded.stdout and "numeric=0.00" in graded.stdout
    as_json = run_cli(*question, "--json")
    scores = [c["scores"]["numeric"] for c in json.loads(as_json.stdout)["candidates"]]
    assert [s["judged"] for s in scores] == [False, False]


def test_the_trace_view_shows_no_reference_instead_of_a_score(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    done = run_cli("q", "--worker", "fake:It is 42", "-n", "2", "--verifier", "numeric",
                   "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "threadloom.cli", "trace", "show", str(trace), "--width", "200"],
        capture_output=True, text=True, timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    scores = [line for line in shown.stdout.splitlines() if "score" in line]
    assert len(scores) == 2
    assert all("numeric=no reference" in line and "numeric=1" not in line for line in scores)
