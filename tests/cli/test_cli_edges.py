"""The command line at its edges: hostile model text, bad paths and bytes, and its exit codes.

Every run uses a scripted `fake:` worker, so no model loads. Cases that depend on the real
argv bytes or on `main()`'s last-resort handler run the command in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from threadloom.cli import application as cli
from threadloom.errors import (
    ConfigError,
    GraphError,
    RateLimited,
    ThreadloomError,
    VerifierError,
    WorkerDead,
    WorkerUnavailable,
)
from threadloom.exit_codes import INTERRUPTED, RUNTIME, UNEXPECTED, USAGE, exit_code_for

runner = CliRunner()


def flat(text: str) -> str:
    """Output with the console's line wrapping undone."""
    return " ".join(text.split())

INST = "fake:Sure [/INST] [bold]x[/] :smile: The answer is 4"


def threadloom(*args: str | bytes | Path) -> subprocess.CompletedProcess[bytes]:
    """The real command in a fresh interpreter, with arguments passed as raw bytes. Its output
    is strict UTF-8, as on a UTF-8 terminal: printing a lone surrogate would fail."""
    return subprocess.run(
        [sys.executable, "-m", "threadloom.cli", *args],
        capture_output=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "THREADLOOM_DEBUG": "",
             "PYTHONIOENCODING": "utf-8:strict"},
        check=False,
    )


def test_a_reply_with_markup_prints_as_written() -> None:
    # '[/INST]' was read as a closing tag: MarkupError after the run, and the result was lost
    result = runner.invoke(
        cli.app, ["run", "q", "--worker", INST, "-n", "2"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "Sure [/INST] [bold]x[/] :smile: The answer is 4" in result.output
    assert "answer: 4" in result.output


def test_trace_show_prints_model_text_as_written(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    run = runner.invoke(cli.app, ["run", "q", "--worker", INST, "-n", "1", "--json",
                                  "--trace", str(trace)])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["answer"] == "4"
    shown = runner.invoke(cli.app, ["trace", "show", str(trace), "--width", "200"],
                          env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "[/INST] [bold]x[/] :smile: The answer is 4" in shown.output


def test_self_consistency_on_a_huge_exponent_completes() -> None:
    result = runner.invoke(
        cli.app, ["run", "q", "-s", "self-consistency", "-n", "2", "--worker",
                  "fake:\\boxed{1e5000}|\\boxed{1e999999999}", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answer"] in ("1e5000", "1e999999999")


def test_a_prompt_that_is_not_utf8_runs_and_prints_json(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    done = threadloom("run", b"\xff\xfe what", "--worker", "fake:42", "--json", "--trace", trace)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == "42"
    assert "not valid UTF-8" in flat(done.stderr.decode())
    prompts = [json.loads(line) for line in trace.read_text().splitlines()]
    assert any("\ufffd\ufffd what" in json.dumps(event, ensure_ascii=False) for event in prompts)


def test_undecodable_bytes_in_model_text_print_as_replacement_characters(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    done = threadloom("run", "q", "--worker", b"fake:bad \xff byte 5", "-n", "1", "--trace", trace)
    assert done.returncode == 0, done.stderr
    assert "bad \ufffd byte 5" in done.stdout.decode()
    shown = threadloom("trace", "show", trace)
    assert shown.returncode == 0, shown.stderr
    assert "bad \ufffd byte 5" in shown.stdout.decode()


def test_json_output_replaces_lone_surrogates_from_a_model() -> None:
    result = runner.invoke(cli.app, ["run", "q", "--worker", "fake:bad \udcff byte", "-n", "1",
                                     "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == "bad \ufffd byte"


def test_trace_into_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "run.jsonl"
    result = runner.invoke(cli.app, ["run", "q", "--worker", "fake:42", "--trace", str(target)])
    assert result.exit_code == USAGE
    assert "does not exist" in flat(result.output)
    assert not target.parent.exists()


def test_trace_naming_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["run", "q", "--worker", "fake:42", "--trace", str(tmp_path)])
    assert result.exit_code == USAGE
    assert "is a directory" in flat(result.output)
    assert list(tmp_path.iterdir()) == []


def test_a_plan_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_bytes(b"nodes:\n  a:\n    strategy: \xff\n")
    result = runner.invoke(cli.app, ["graph", "check", str(plan)])
    assert result.exit_code == USAGE
    assert "not UTF-8" in flat(result.output)


def test_plan_node_names_with_markup_print_as_written(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text('nodes:\n  "[/x]":\n    strategy: single\n')
    checked = runner.invoke(cli.app, ["graph", "check", str(plan)])
    assert checked.exit_code == 0, checked.output
    assert "'[/x]'" in checked.output
    shown = runner.invoke(cli.app, ["graph", "show", str(plan)])
    assert shown.exit_code == 0, shown.output
    assert "[/x]: single" in shown.output


@pytest.mark.slow
def test_an_unreachable_server_is_a_runtime_failure() -> None:
    done = threadloom("run", "q", "-n", "1", "--worker", "openai:http://127.0.0.1:1/v1")
    assert done.returncode == RUNTIME, done.stderr
    assert "cannot reach the server" in flat(done.stderr.decode())


def test_bad_usage_exits_2() -> None:
    assert runner.invoke(cli.app, ["run", "", "--worker", "fake:42"]).exit_code == USAGE
    assert runner.invoke(cli.app, ["run", "q", "--worker", "nope"]).exit_code == USAGE
    assert runner.invoke(cli.app, ["run", "q", "-n", "0"]).exit_code == USAGE


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("x"), USAGE),
        (GraphError("x"), USAGE),
        (WorkerUnavailable("x"), RUNTIME),
        (RateLimited("x"), RUNTIME),
        (WorkerDead("x"), RUNTIME),
        (VerifierError("x"), RUNTIME),
    ],
)
def test_exit_codes_by_error_kind(error: ThreadloomError, code: int) -> None:
    assert exit_code_for(error) == code
    assert len({USAGE, RUNTIME, UNEXPECTED, INTERRUPTED}) == 4


def test_the_last_resort_handler_prints_markup_as_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise RuntimeError("closing tag '[/INST]' at position 5")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv("THREADLOOM_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == UNEXPECTED
    assert "unexpected error: RuntimeError: closing tag '[/INST]' at position 5" in flat(
        capsys.readouterr().err
    )


def test_a_typed_error_from_main_keeps_its_text_and_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable() -> None:
        raise WorkerUnavailable("server [/INST] gone")

    monkeypatch.setattr(cli, "app", unreachable)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == RUNTIME
    assert "error: server [/INST] gone" in flat(capsys.readouterr().err)


def test_a_cluster_file_path_with_markup_prints_as_written(tmp_path: Path) -> None:
    cluster = tmp_path / "[bold]cluster.yaml"
    cluster.write_text("pools:\n  gen:\n    kind: fake\n    replicas: 1\n")
    shown = runner.invoke(cli.app, ["workers", "--cluster", str(cluster)], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "[bold]cluster.yaml" in flat(shown.output)
    refused = tmp_path / "[bold]refused.yaml"
    refused.write_text('pools:\n  "[/gen]":\n    kind: fake\n')
    failed = runner.invoke(cli.app, ["workers", "--cluster", str(refused)])
    assert failed.exit_code == USAGE
    assert "[bold]refused.yaml" in flat(failed.output) and "'[/gen]'" in failed.output


def test_trace_show_on_damaged_traces(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(
        b'{"event": "node", "id": "p0", "kind": "prompt", "label": "q \xff"}\n'
        b'{"event": "node", "kind": "generation"}\n'
        b'{"event": "node", "id": "g1", "parents": [["p0", "fork"], "junk"], "data": 5}\n'
        b'{"event": "update", "id": "g1", "data": {"value": "high", "text": "[/INST]"}}\n'
        b'{"event": "edge", "source": "g1"}\n'
    )
    shown = runner.invoke(cli.app, ["trace", "show", str(damaged)])
    assert shown.exit_code == 0, shown.output
    assert "q \ufffd" in shown.output and "=high" in shown.output and "[/INST]" in shown.output
    not_events = tmp_path / "numbers.jsonl"
    not_events.write_text("42\n")
    refused = runner.invoke(cli.app, ["trace", "show", str(not_events)])
    assert refused.exit_code == USAGE
    assert "not a JSON object" in flat(refused.output)
