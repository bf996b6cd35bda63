"""Conventions every command keeps: --version, --json listings, --log-level and its variable,
--config files for run and bench, defaults from the environment, and renamed flags.

Runs use scripted `fake:` workers (or a scripted OpenAI server), so no model loads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from openai_server import Reply, ScriptedServer, chat_reply
from typer.testing import CliRunner

from threadloom.cli import application as cli
from threadloom.cli.options import worker_spec
from threadloom.exit_codes import USAGE

runner = CliRunner()
PACKAGE = Path(cli.__file__).resolve().parents[1]


def flat(text: str) -> str:
    return " ".join(text.split())


def threadloom(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh interpreter (logging is set up per process)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("THREADLOOM_")}
    return subprocess.run(
        [sys.executable, "-m", "threadloom.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        check=False,
    )


def run_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = runner.invoke(cli.app, ["run", *args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# ----- --version, and what only the cli package may import ---------------------------------


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"threadloom {metadata.version('threadloom')}"


def test_only_the_cli_package_imports_rich_or_typer() -> None:
    pattern = re.compile(r"^\s*(import (rich|typer)\b|from (rich|typer)\b)", re.MULTILINE)
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "cli" not in path.relative_to(PACKAGE).parts[:1]
        and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def _leaf_commands(command: Any, path: str = "threadloom") -> list[tuple[str, Any]]:
    children = getattr(command, "commands", None)
    if not children:
        return [(path, command)]
    found = [(path, command)] if command.params else []
    for name, child in children.items():
        found += _leaf_commands(child, f"{path} {name}")
    return found


def test_every_command_takes_log_level() -> None:
    commands = _leaf_commands(typer.main.get_command(cli.app))
    assert len(commands) >= 12
    missing = [
        path
        for path, command in commands
        if not any("--log-level" in param.opts for param in command.params)
    ]
    assert missing == []


# ----- --json on every command that lists or shows -----------------------------------------


@pytest.mark.slow
def test_listings_as_json() -> None:
    workers = json.loads(runner.invoke(cli.app, ["workers", "--json"]).stdout)
    kinds = {row["kind"]: row for row in workers["workers"]}
    assert {"llamacpp", "vllm", "openai", "fake", "ray"} <= set(kinds)
    assert kinds["llamacpp"]["aliases"] == ["default", "llama-cpp", "local"]
    assert kinds["fake"]["available"] is True
    assert Path(workers["model"]["path"]).stat().st_size == workers["model"]["size_bytes"]

    strategies = json.loads(runner.invoke(cli.app, ["strategies", "--json"]).stdout)
    by_kind = {row["kind"]: row for row in strategies["strategies"]}
    assert "n" in by_kind["best-of-n"]["options"]
    assert by_kind["best-of-n"]["origin"] == "threadloom"

    verifiers = json.loads(runner.invoke(cli.app, ["verifiers", "--json"]).stdout)
    names = [row["kind"] for row in verifiers["verifiers"]]
    assert names[:2] == ["numeric", "math"] and "regex" in names


def test_graph_and_trace_as_json(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "nodes:\n  a: {strategy: 'best-of-n:n=2'}\n  b: {strategy: single}\n"
        "  final: {join: [a, b], reducer: vote}\n"
    )
    for verb in ("check", "show"):
        shown = runner.invoke(cli.app, ["graph", verb, str(plan), "--json"])
        assert shown.exit_code == 0, shown.output
        data = json.loads(shown.stdout)
        assert data["sink"] == "final"
        assert data["nodes"]["a"]["strategy"] == {"kind": "best-of-n", "n": 2}

    trace = tmp_path / "run.jsonl"
    run_json("q", "--worker", "fake:7", "-n", "2", "--trace", str(trace))
    events = json.loads(runner.invoke(cli.app, ["trace", "show", str(trace), "--json"]).stdout)
    assert len(events) == len(trace.read_text().splitlines())
    assert any(e.get("event") == "node" and e.get("kind") == "prompt" for e in events)


def test_sandbox_check_as_json() -> None:
    from threadloom.verifiers.sandbox.attacks import ATTACKS

    outcome = runner.invoke(cli.app, ["sandbox", "check", "--no-guards", "--json"])
    report = json.loads(outcome.stdout)
    layers = {row["layer"]: row["works"] for row in report["layers"]}
    assert layers["guards"] is True
    # exit 0 exactly when bwrap works here and contained every attack
    assert (outcome.exit_code == 0) == report["contained"]
    if layers["namespaces (bwrap run)"]:
        assert [a["attack"] for a in report["attacks"]] == [a.name for a in ATTACKS]
        assert {"bwrap"} == {key for a in report["attacks"] for key in a["outcomes"]}
    else:
        assert report["attacks"] == [] and outcome.exit_code == 3


# ----- logging ----------------------------------------------------------------------------

ADAPTIVE = ("run", "q", "-s", "adaptive-consistency", "--worker", "fake:7", "--json")


@pytest.mark.slow
def test_log_level_on_the_command_and_from_the_environment() -> None:
    quiet = threadloom(*ADAPTIVE)
    assert quiet.returncode == 0, quiet.stderr
    assert "adaptive-consistency stopped" not in quiet.stderr

    flagged = threadloom(*ADAPTIVE, "--log-level", "debug")
    assert flagged.returncode == 0, flagged.stderr
    assert "adaptive-consistency stopped" in flagged.stderr
    assert json.loads(flagged.stdout)["answer"] == "7"  # logs go to stderr only

    from_env = threadloom(*ADAPTIVE, env={"THREADLOOM_LOG_LEVEL": "DEBUG"})
    assert "adaptive-consistency stopped" in from_env.stderr

    before_command = threadloom("--log-level", "debug", *ADAPTIVE)
    assert "adaptive-consistency stopped" in before_command.stderr

    env = {"THREADLOOM_LOG_LEVEL": "debug"}
    overridden = threadloom(*ADAPTIVE, "--log-level", "error", env=env)
    assert "adaptive-consistency stopped" not in overridden.stderr


def test_an_unknown_log_level_is_a_usage_error() -> None:
    result = runner.invoke(cli.app, ["strategies", "--log-level", "loud"])
    assert result.exit_code == USAGE
    assert "loud" in flat(result.output)


# ----- --config ---------------------------------------------------------------------------


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_reads_its_options_from_a_config_file_and_flags_override(tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path / "run.yaml",
        {"strategy": "self-consistency", "n": 3, "worker": "fake:\\boxed{7}", "temperature": 0.2},
    )
    data = run_json("q", "--config", str(config))
    assert data["strategy"] == "self-consistency:n=3"
    assert (data["answer"], data["usage"]["generations"]) == ("7", 3)

    data = run_json("q", "--config", str(config), "-n", "2", "--worker", "fake:5")
    assert (data["answer"], data["usage"]["generations"]) == ("5", 2)


def test_config_sections_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "settings"
    folder.mkdir()
    (folder / "plan.yaml").write_text("nodes:\n  only: {strategy: 'best-of-n:n=2'}\n")
    config = write_yaml(
        folder / "threadloom.yaml",
        {
            "run": {"graph": "plan.yaml", "trace": "trace.jsonl", "worker": "fake:9"},
            "bench": {"limit": 1},
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = threadloom("run", "q", "--config", config, "--json", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["answer"], data["usage"]["generations"]) == ("9", 2)
    assert (folder / "trace.jsonl").stat().st_size > 0
    assert list(elsewhere.iterdir()) == []


def test_a_config_with_an_unknown_option_is_refused_before_anything_runs(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    config = write_yaml(tmp_path / "c.yaml", {"tempreature": 0.2, "trace": str(trace)})
    result = runner.invoke(cli.app, ["run", "q", "--worker", "fake:1", "--config", str(config)])
    assert result.exit_code == USAGE
    assert "'tempreature' is not an option of `threadloom run`" in flat(result.output)
    assert not trace.exists()

    for bad, message in (("- a\n- b\n", "must hold a mapping"), ("a: [\n", "not valid YAML")):
        (tmp_path / "bad.yaml").write_text(bad)
        result = runner.invoke(cli.app, ["run", "q", "--config", str(tmp_path / "bad.yaml")])
        assert result.exit_code == USAGE and message in flat(result.output)


def test_bench_reads_a_config_file(tmp_path: Path) -> None:
    data = tmp_path / "fours.jsonl"
    data.write_text("".join(json.dumps({"q": f"{i}: 2 + 2?", "a": "4"}) + "\n" for i in range(4)))
    config = write_yaml(
        tmp_path / "bench.yaml",
        {
            "bench": {
                "dataset": "fours.jsonl",
                "field": "q",
                "answer_field": "a",
                "worker": "fake:The answer is 4",
                "strategy": ["single", "best-of-n:n=2"],
                "limit": 3,
                "out": "results.jsonl",
            }
        },
    )
    done = threadloom("bench", "--config", config, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert [s["strategy"] for s in summary["strategies"]] == ["single", "best-of-n:n=2"]
    assert all(s["problems"] == 3 and s["accuracy"] == 1.0 for s in summary["strategies"])
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 6


# ----- defaults from the environment -------------------------------------------------------


def test_threadloom_worker_is_the_default_worker() -> None:
    assert run_json("q", "-n", "1", env={"THREADLOOM_WORKER": "fake:11"})["answer"] == "11"
    flagged = run_json("q", "-n", "1", "--worker", "fake:12", env={"THREADLOOM_WORKER": "fake:11"})
    assert flagged["answer"] == "12"


def test_openai_without_a_url_uses_openai_base_url() -> None:
    models = {"object": "list", "data": [{"id": "served", "object": "model"}]}
    with ScriptedServer([Reply(200, chat_reply("yes"))], models=models) as server:
        data = run_json(
            "Is water wet?",
            "-s",
            "single",
            env={"THREADLOOM_WORKER": "openai", "OPENAI_BASE_URL": server.base_url},
        )
        bodies = [post.body for post in server.posts]
    assert data["text"] == "yes"
    assert len(bodies) == 1 and bodies[0]["model"] == "served"
    assert bodies[0]["messages"][-1]["content"] == "Is water wet?"


def test_bench_records_name_the_server_from_openai_base_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the resume fingerprint must tell two servers apart, so the URL is written into the spec
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("THREADLOOM_WORKER", raising=False)
    assert worker_spec("openai#model=m", None) == "openai:http://127.0.0.1:9/v1#model=m"
    assert worker_spec("openai:http://other/v1", None) == "openai:http://other/v1"
    monkeypatch.setenv("THREADLOOM_WORKER", "openai")
    assert worker_spec(None, None) == "openai:http://127.0.0.1:9/v1"
    assert worker_spec(None, tmp_path / "m.gguf") == f"llamacpp:{tmp_path / 'm.gguf'}"


# ----- renamed flags ------------------------------------------------------------------------


def test_cluster_replaces_workers_which_still_works_with_a_warning(tmp_path: Path) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text("pools:\n  gen:\n    kind: fake\n    replicas: 2\n")
    new = runner.invoke(cli.app, ["workers", "--cluster", str(pools), "--json"])
    assert new.exit_code == 0, new.output
    assert json.loads(new.stdout)["pools"]["gen"]["replicas"] == 2

    old = threadloom("workers", "--workers", pools, "--json")
    assert old.returncode == 0, old.stderr
    assert json.loads(old.stdout)["pools"]["gen"]["replicas"] == 2
    assert "--workers is deprecated; use --cluster" in flat(old.stderr)

    both = runner.invoke(cli.app, ["workers", "--cluster", str(pools), "--workers", str(pools)])
    assert both.exit_code == USAGE

    for command in ("run", "bench", "serve", "workers"):
        shown = flat(runner.invoke(cli.app, [command, "--help"], env={"COLUMNS": "200"}).output)
        assert "--cluster" in shown and "--workers" not in shown


def test_events_is_a_hidden_name_of_trace(tmp_path: Path) -> None:
    trace = tmp_path / "events.jsonl"
    done = threadloom("run", "q", "--worker", "fake:3", "-n", "1", "--events", trace, "--json")
    assert done.returncode == 0, done.stderr
    assert trace.read_text().count("\n") >= 3
    assert "--events is deprecated; use --trace" in flat(done.stderr)
    shown = flat(runner.invoke(cli.app, ["run", "--help"], env={"COLUMNS": "200"}).output)
    assert "--trace" in shown and "--events" not in shown
