"""`threadloom bench` end to end on the bundled model: JSON summary, JSONL results, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadloom.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_bench_runs_resumes_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    plot = tmp_path / "scaling.png"
    args = (
        "--dataset",
        "arithmetic",
        "--limit",
        "3",
        "-s",
        "single",
        "-s",
        "self-consistency:n=2",
        "--max-tokens",
        "48",
        "--out",
        str(out),
        "--json",
        "--plot",
        str(plot),
    )
    first = _bench(*args)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["problems"] == 3
    by = {s["strategy"]: s for s in summary["strategies"]}
    assert set(by) == {"single", "self-consistency:n=2"}
    assert by["single"]["mean_generations"] == 1
    assert by["self-consistency:n=2"]["mean_generations"] == 2
    assert 0.0 <= by["single"]["accuracy"] <= by["single"]["coverage"] <= 1.0
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    record = json.loads(lines[0])
    assert record["dataset"] == "arithmetic" and record["reference"] is not None
    fingerprint = record["fingerprint"]
    assert fingerprint["worker"] == "llamacpp" and fingerprint["model"].startswith("sha256:")
    assert fingerprint["sampling"]["max_tokens"] == 48
    for each in by.values():
        low, high = each["accuracy_ci"]
        assert low <= each["accuracy"] <= high
    assert plot.stat().st_size > 10_000

    again = _bench(*args)
    assert again.returncode == 0, again.stderr
    assert "6 of 6 already done" in " ".join(again.stderr.split())
    assert len(out.read_text().splitlines()) == 6
    assert json.loads(again.stdout)["strategies"] == summary["strategies"]

    # the same file with other sampling settings is refused before the model loads
    before = out.read_bytes()
    other = list(args)
    other[other.index("48")] = "64"
    refused = _bench(*other)
    assert refused.returncode == 2
    assert "sampling.max_tokens: 48 → 64" in " ".join(refused.stderr.split())
    assert out.read_bytes() == before


def test_bench_bad_input(tmp_path: Path) -> None:
    unknown = _bench("--dataset", "nope")
    assert unknown.returncode == 2 and "arithmetic" in unknown.stderr
    custom = tmp_path / "mine.jsonl"
    custom.write_text('{"q": "What is 1 + 1?", "a": "2"}\n{"q": "broken"\n')
    bad = _bench("--dataset", str(custom), "--field", "q", "--answer-field", "a")
    assert bad.returncode == 2 and "line 2" in " ".join(bad.stderr.split())
