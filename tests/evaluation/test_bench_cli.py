"""`threadloom bench` and `bench compare` on scripted workers: resume rules, errors, output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from threadloom import FakeWorker, Problem
from threadloom.evaluation.bench import Verifiers, run_bench
from threadloom.evaluation.records import ResultLog
from threadloom.strategies.registry import make_strategy


def threadloom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadloom.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def dataset(tmp_path: Path, name: str = "fours.jsonl", answer: str = "4") -> Path:
    path = tmp_path / name
    rows = [{"q": f"Question {i}: what is 2 + 2?", "a": answer} for i in range(5)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def bench(
    data: Path, out: Path, worker: str, *extra: str, as_json: bool = True
) -> subprocess.CompletedProcess[str]:
    return threadloom(
        "bench",
        "--dataset",
        str(data),
        "--field",
        "q",
        "--answer-field",
        "a",
        "--worker",
        worker,
        "--out",
        str(out),
        *(("--json",) if as_json else ()),
        *extra,
    )


@pytest.mark.slow
def test_rerun_with_another_model_is_refused_or_kept_apart(tmp_path: Path) -> None:
    data, out = dataset(tmp_path), tmp_path / "results.jsonl"
    first = bench(data, out, "fake:The answer is 4")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["strategies"][0]["accuracy"] == 1.0
    before = out.read_bytes()

    refused = bench(data, out, "fake:I do not know")
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert "another configuration" in message and "model:" in message
    assert "--new-set" in message
    assert out.read_bytes() == before  # nothing added, nothing skipped silently

    apart = bench(data, out, "fake:I do not know", "--new-set")
    assert apart.returncode == 0, apart.stderr
    separate = json.loads(apart.stdout)
    assert separate["results"] != str(out)
    assert separate["strategies"][0]["accuracy"] == 0.0
    assert separate["strategies"][0]["problems"] == 5
    assert len(Path(separate["results"]).read_text().splitlines()) == 5
    assert out.read_bytes() == before

    # the first configuration still resumes its own file: nothing left to do
    again = bench(data, out, "fake:The answer is 4")
    assert again.returncode == 0 and "5 of 5 already done" in " ".join(again.stderr.split())
    assert out.read_bytes() == before


@pytest.mark.slow
def test_other_sampling_or_dataset_options_are_refused(tmp_path: Path) -> None:
    data, out = dataset(tmp_path), tmp_path / "results.jsonl"
    assert bench(data, out, "fake:The answer is 4").returncode == 0
    before = out.read_bytes()
    hotter = bench(data, out, "fake:The answer is 4", "--temperature", "1.5")
    assert hotter.returncode == 2 and "sampling.temperature: 0.7 → 1.5" in hotter.stderr
    reseeded = bench(data, out, "fake:The answer is 4", "--seed", "9")
    assert reseeded.returncode == 2 and "dataset.seed: 0 → 9" in reseeded.stderr
    data.write_text(data.read_text() + json.dumps({"q": "what is 3 + 1?", "a": "4"}) + "\n")
    edited = bench(data, out, "fake:The answer is 4")
    assert edited.returncode == 2 and "dataset.file" in edited.stderr
    assert out.read_bytes() == before


def test_out_or_plot_naming_a_directory_is_a_typed_error(tmp_path: Path) -> None:
    data, folder = dataset(tmp_path), tmp_path / "results"
    folder.mkdir()
    out_dir = bench(data, folder, "fake:4")
    assert out_dir.returncode == 2
    assert "--out" in out_dir.stderr and "is a directory" in out_dir.stderr
    assert "unexpected" not in out_dir.stderr
    assert list(folder.iterdir()) == []
    plot_dir = bench(data, tmp_path / "r.jsonl", "fake:4", "--plot", str(folder))
    assert plot_dir.returncode == 2 and "--plot" in plot_dir.stderr
    assert not (tmp_path / "r.jsonl").exists() and list(folder.iterdir()) == []


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    data, out = dataset(tmp_path), tmp_path / "results.jsonl"
    with ResultLog(out).lock():
        second = bench(data, out, "fake:The answer is 4")
    assert second.returncode == 2 and "another bench" in second.stderr
    assert not out.exists()


def test_summary_has_intervals_and_text_is_not_markup(tmp_path: Path) -> None:
    data = dataset(tmp_path, name="[bold red]x.jsonl")
    out = tmp_path / "r.jsonl"
    worker = "fake:The answer is 4|The answer is 5"
    table = bench(data, out, worker, "-s", "single", "--concurrency", "1", as_json=False)
    assert table.returncode == 0, table.stderr
    assert "[bold red]x: 5 problems" in table.stdout
    # 3 of 5 correct (the script alternates): Wilson 95% interval 23–88%
    assert "60.0% (23–88)" in table.stdout
    summary = json.loads(bench(data, out, worker).stdout)
    low, high = summary["strategies"][0]["accuracy_ci"]
    assert (round(100 * low), round(100 * high)) == (23, 88)


def test_lone_surrogate_in_a_dataset_is_stored(tmp_path: Path) -> None:
    data = tmp_path / "odd.jsonl"
    data.write_text('{"q": "what is 2 + 2?", "a": "4\\udcff"}\n')
    out = tmp_path / "r.jsonl"
    run = bench(data, out, "fake:The answer is 4")
    assert run.returncode == 0, run.stderr
    record = json.loads(out.read_bytes().decode("utf-8"))
    assert record["reference"] == "4\ufffd"


@pytest.mark.slow
def test_compare_prints_a_paired_table_and_json(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert bench(data, a, "fake:The answer is 5").returncode == 0
    assert bench(data, b, "fake:The answer is 4").returncode == 0
    as_json = threadloom("bench", "compare", str(a), str(b), "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    accuracy = result["metrics"][0]
    assert result["shared"] == 5
    assert (accuracy["first"], accuracy["second"], accuracy["only_second"]) == (0.0, 1.0, 5)
    assert accuracy["p_value"] == 2 / 32
    assert any(d.startswith("model:") for d in result["settings_differ"])
    table = threadloom("bench", "compare", str(a), str(b))
    assert table.returncode == 0 and "McNemar" in table.stdout and "0.0625" in table.stdout
    missing = threadloom("bench", "compare", str(a), str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "not found" in missing.stderr


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_does_exactly_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from threadloom import FakeWorker, Problem
        from threadloom.evaluation.bench import Verifiers, run_bench
        from threadloom.evaluation.records import ResultLog
        from threadloom.strategies.registry import make_strategy

        problems = [
            Problem(prompt=f"What is {{i}} + {{i}}?", reference=str(2 * i), id=f"p{{i}}",
                    answer_format="number", metadata={{"verifier": "numeric"}})
            for i in range(1, 13)
        ]
        worker = FakeWorker(["one two three four five six 4"], token_delay_s=0.2)
        asyncio.run(run_bench(problems, [make_strategy("single")], worker,
                              ResultLog(Path({str(out)!r})), dataset="toy",
                              verifiers=Verifiers(selection="none"), concurrency=2))
        """
    )
    victim = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_bytes().splitlines()) >= 3:
                break
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    kept = ResultLog(out).read()
    assert 3 <= len(kept) < 12
    # the dead writer's lock went with it; the resume runs exactly the problems not saved
    worker = FakeWorker(["4"])
    asyncio.run(
        run_bench(
            [
                Problem(
                    prompt=f"What is {i} + {i}?",
                    reference=str(2 * i),
                    id=f"p{i}",
                    answer_format="number",
                    metadata={"verifier": "numeric"},
                )
                for i in range(1, 13)
            ],
            [make_strategy("single")],
            worker,
            ResultLog(out),
            dataset="toy",
            verifiers=Verifiers(selection="none"),
        )
    )
    assert len(worker.requests) == 12 - len(kept)
    keys = [r.key() for r in ResultLog(out).read()]
    assert len(keys) == len(set(keys)) == 12
