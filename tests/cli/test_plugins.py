"""Entry-point plugins: the example package in examples/plugin, installed with pip into a
folder put on PYTHONPATH, adds a strategy, a verifier and a worker that the command line and
plan files use like built-in ones. Registry rules (conflicts, broken plugins, wrong types) are
checked on small distributions written into tmp_path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from threadloom.errors import ConfigError
from threadloom.strategies.registry import make_strategy, strategy_kinds
from threadloom.verifiers.registry import make_verifier, verifier_kinds
from threadloom.workers.registry import make_worker, worker_kinds

# pip installs the example package and every command runs in a fresh interpreter
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin"
PLUGIN = "threadloom-example-plugin"
REPLIES = "fake:the answer is 12|4|a much longer answer: 7"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, built and installed by pip (no network, no dependencies) into a
    folder of its own; the source is copied first so the build leaves nothing in the tree."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"
    shutil.copytree(EXAMPLE, source)
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def threadloom(site: Path | None, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLOOM_")}
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-m", "threadloom.cli", *map(str, args)],
        capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "200"}, check=False,
    )  # fmt: skip


def ran(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


# ----- the example package, installed --------------------------------------------------------


def test_the_plugin_kinds_are_listed_with_their_package(site: Path) -> None:
    strategies = ran(threadloom(site, "strategies", "--json"))["strategies"]
    shortest = next(row for row in strategies if row["kind"] == "shortest-of-n")
    assert shortest["origin"] == PLUGIN and shortest["available"]
    assert "n" in shortest["options"]
    verifiers = ran(threadloom(site, "verifiers", "--json"))["verifiers"]
    assert {"kind": "word-limit", "origin": PLUGIN}.items() <= verifiers[-1].items()
    workers = ran(threadloom(site, "workers", "--json"))["workers"]
    assert any(row["kind"] == "echo" and row["origin"] == PLUGIN for row in workers)


def test_a_plugin_strategy_runs_from_the_command_line(site: Path) -> None:
    data = ran(threadloom(site, "run", "q", "-s", "shortest-of-n:n=3", "--worker", REPLIES,
                          "--json"))  # fmt: skip
    assert data["strategy"] == "shortest-of-n:n=3"
    assert [c["text"] for c in data["candidates"]] == [
        "4", "the answer is 12", "a much longer answer: 7",
    ]  # fmt: skip
    assert (data["answer"], data["usage"]["generations"]) == ("4", 3)


def test_a_plan_file_uses_the_plugin_kind(site: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "nodes:\n"
        "  short: {strategy: 'shortest-of-n:n=3'}\n"
        "  long: {strategy: 'best-of-n:n=1'}\n"
        "  final: {join: [short, long], reducer: select}\n"
    )
    checked = ran(threadloom(site, "graph", "check", plan, "--json"))
    assert checked["nodes"]["short"]["strategy"] == {"kind": "shortest-of-n", "n": 3}
    trace = tmp_path / "trace.jsonl"
    data = ran(threadloom(site, "run", "q", "--graph", plan, "--worker", REPLIES, "--json",
                          "--trace", trace))  # fmt: skip
    assert data["usage"]["generations"] == 4
    assert "4" in [c["text"] for c in data["candidates"]]
    nodes = [json.loads(line) for line in trace.read_text().splitlines()]
    assert any("shortest-of-n" in json.dumps(event) for event in nodes)


def test_a_plugin_verifier_scores_the_candidates(site: Path) -> None:
    data = ran(threadloom(site, "run", "q", "-s", "best-of-n", "-n", "3", "--worker", REPLIES,
                          "--verifier", "word-limit:2", "--json"))  # fmt: skip
    scores = {c["text"]: c["scores"]["word-limit"] for c in data["candidates"]}
    assert scores["4"]["value"] == 1.0 and scores["4"]["passed"] is True
    assert scores["the answer is 12"]["value"] == 0.5
    assert data["best"]["text"] == "4"
    refused = threadloom(site, "run", "q", "--worker", "fake:1", "--verifier", "word-limit:many")
    assert refused.returncode == 2
    assert "whole number of words" in " ".join(refused.stderr.split())


def test_a_plugin_worker_generates(site: Path) -> None:
    data = ran(threadloom(site, "run", "one two three", "-s", "single", "--worker", "echo:so",
                          "--json"))  # fmt: skip
    assert data["text"] == "so three two one"
    assert data["usage"]["completion_tokens"] == 4


def test_without_the_plugin_its_kinds_are_unknown() -> None:
    done = threadloom(None, "run", "q", "-s", "shortest-of-n", "--worker", "fake:1")
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "unknown strategy 'shortest-of-n'" in message and "best-of-n" in message


# ----- registry rules, on distributions written here ------------------------------------------


def install(tmp_path: Path, name: str, entry_points: str, module: str) -> Path:
    """A distribution as pip leaves it: a module and NAME.dist-info with entry_points.txt."""
    site = tmp_path / "site"
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (site / f"{name.replace('-', '_')}.py").write_text(textwrap.dedent(module))
    return site


@pytest.fixture
def odd_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = install(
        tmp_path,
        "odd-plugin",
        """
        [threadloom.strategies]
        best-of-n = odd_plugin:Impostor
        not-a-strategy = odd_plugin:NotAStrategy
        misnamed = odd_plugin:Misnamed
        broken = odd_plugin_missing:Anything
        bad:name = odd_plugin:Misnamed

        [threadloom.verifiers]
        no-argument = odd_plugin:NoArgument
        not-a-verifier = odd_plugin:NotAStrategy

        [threadloom.workers]
        not-a-worker = odd_plugin:make_nothing
        """,
        """
        from typing import Literal
        from threadloom.strategies.base import Strategy
        from threadloom.types import Score

        class Impostor(Strategy):
            kind: Literal["best-of-n"] = "best-of-n"

        class Misnamed(Strategy):
            kind: Literal["other"] = "other"

        class NotAStrategy:
            pass

        class NoArgument:
            name = "no-argument"

            async def score(self, problem, candidate):
                return Score(value=1.0)

        def make_nothing(argument, **options):
            return object()
        """,
    )
    monkeypatch.syspath_prepend(str(site))


@pytest.mark.usefixtures("odd_plugin")
def test_a_built_in_name_stays_built_in(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="threadloom.registry"):
        kinds = strategy_kinds.kinds()
    assert kinds.count("best-of-n") == 1
    assert type(make_strategy("best-of-n:n=2")).__module__ == "threadloom.strategies.best_of_n"
    assert "bad:name" not in kinds
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "'best-of-n' from odd-plugin: the name is taken by threadloom" in messages
    assert "'bad:name'" in messages


@pytest.mark.usefixtures("odd_plugin")
def test_plugins_that_cannot_work_are_refused_with_what_to_do() -> None:
    with pytest.raises(ConfigError, match="not a threadloom Strategy subclass"):
        make_strategy("not-a-strategy")
    with pytest.raises(ConfigError, match="registered as 'misnamed' declares kind 'other'"):
        make_strategy("misnamed")
    with pytest.raises(ConfigError, match="from the package 'odd-plugin' cannot be loaded"):
        make_strategy("broken")
    with pytest.raises(ConfigError, match="takes no argument"):
        make_verifier("no-argument:5")
    with pytest.raises(ConfigError, match="has no `name` and async `score"):
        make_verifier("not-a-verifier")
    with pytest.raises(ConfigError, match="which is not a Worker"):
        make_worker("not-a-worker")
    assert make_verifier("no-argument").name == "no-argument"
    listed = {row.kind: row for row in strategy_kinds.describe()}
    assert listed["broken"].available is False and listed["broken"].origin == "odd-plugin"


def test_kinds_resolve_aliases_and_spellings() -> None:
    assert worker_kinds.canonical("Llama_CPP") == "llamacpp"
    assert worker_kinds.canonical("local") == "llamacpp"
    assert strategy_kinds.canonical(" Best_Of_N ") == "best-of-n"
    assert "SELF_CONSISTENCY" in strategy_kinds and "nope" not in strategy_kinds
    assert verifier_kinds.builtin_kinds[0] == "numeric"
    with pytest.raises(ConfigError, match=r"valid workers: .*fake.*llamacpp"):
        make_worker("nope:1")


def test_a_plugin_strategy_and_verifier_run_on_the_bundled_model(site: Path) -> None:
    data = ran(threadloom(site, "run", "What is 2 + 3?", "-s", "shortest-of-n:n=3",
                          "--verifier", "word-limit:400", "--max-tokens", "24", "--seed", "1",
                          "--json"))  # fmt: skip
    texts = [c["text"] for c in data["candidates"]]
    assert len(texts) == 3 and data["usage"]["completion_tokens"] > 0
    assert [len(t) for t in texts] == sorted(len(t) for t in texts)  # shortest first
    assert all("word-limit" in c["scores"] for c in data["candidates"])
