"""The core install without its extras: plots, serving, tracing and datasets stay optional.

Each command runs in a fresh interpreter whose imports of the extras' packages fail, as on a
machine where `pip install threadloom` installed only the core. The main job (`run`, `bench`)
works there; a command that needs an extra fails before doing any work, with the typed error
naming the extra to install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every command runs in a fresh interpreter

EXTRAS = {
    "plots": ("matplotlib",),
    "serve": ("starlette", "uvicorn", "sse_starlette", "prometheus_client", "fastapi"),
    "otel": ("opentelemetry",),
    "datasets": ("datasets", "pyarrow", "huggingface_hub"),
}
BLOCKED = sorted(name for names in EXTRAS.values() for name in names)

LAUNCHER = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    BLOCKED = set(json.loads(sys.argv[1]))
    tried = []

    class WithoutExtras(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                tried.append(name)
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    already = sorted(n for n in sys.modules if n.partition(".")[0] in BLOCKED)
    assert not already, f"imported before the block: {already}"
    sys.meta_path.insert(0, WithoutExtras())

    import atexit

    @atexit.register
    def report():
        loaded = sorted(n for n in sys.modules if n.partition(".")[0] in BLOCKED)
        print(f"LOADED-EXTRAS {json.dumps(loaded)}", file=sys.stderr)

    from threadloom.cli import main

    sys.argv = ["threadloom", *sys.argv[2:]]
    main()
    """
)


def core_only(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `threadloom ARGS` with every extra's packages unimportable."""
    launcher = tmp_path / "core_only.py"
    launcher.write_text(LAUNCHER)
    return subprocess.run(
        [sys.executable, str(launcher), json.dumps(BLOCKED), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", "HF_DATASETS_OFFLINE": "1", **(env or {})},
    )


def loaded_extras(done: subprocess.CompletedProcess[str]) -> list[str]:
    [line] = [x for x in done.stderr.splitlines() if x.startswith("LOADED-EXTRAS ")]
    loaded: list[str] = json.loads(line.removeprefix("LOADED-EXTRAS "))
    return loaded


def test_the_block_really_blocks(tmp_path: Path) -> None:
    launcher = tmp_path / "probe.py"
    launcher.write_text(
        LAUNCHER.replace("from threadloom.cli import main", "import matplotlib")
    )
    done = subprocess.run(
        [sys.executable, str(launcher), json.dumps(BLOCKED), "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "No module named 'matplotlib'" in done.stderr


def test_run_works_without_any_extra(tmp_path: Path) -> None:
    done = core_only(
        tmp_path, "run", "What is 2 + 2?", "--worker", "fake:The answer is 4",
        "--strategy", "best-of-n", "-n", "3", "--verifier", "numeric", "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == "4" and len(result["candidates"]) == 3
    assert loaded_extras(done) == []


def test_bench_works_without_any_extra(tmp_path: Path) -> None:
    out = tmp_path / "bench.jsonl"
    done = core_only(
        tmp_path, "bench", "--dataset", "arithmetic", "--limit", "3", "-s", "single",
        "-s", "self-consistency:n=3", "--worker", "fake:I think 7", "--out", str(out), "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert [s["problems"] for s in summary["strategies"]] == [3, 3]
    assert len(out.read_text().splitlines()) >= 6  # one record per problem and strategy
    assert loaded_extras(done) == []


def test_bench_plot_names_the_plots_extra_before_running(tmp_path: Path) -> None:
    out, png = tmp_path / "bench.jsonl", tmp_path / "scaling.png"
    done = core_only(
        tmp_path, "bench", "--dataset", "arithmetic", "--limit", "2", "--worker", "fake:7",
        "--out", str(out), "--plot", str(png),
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'threadloom[plots]'" in done.stderr
    assert not png.exists()
    assert not out.exists() or not out.read_text().strip()  # no problem was run


def test_serve_names_the_serve_extra(tmp_path: Path) -> None:
    done = core_only(tmp_path, "serve", "--worker", "fake:4", "--port", "1")
    assert done.returncode == 2, done.stderr
    assert "pip install 'threadloom[serve]'" in done.stderr
    assert "threadloom serve" in done.stderr


def test_tracing_names_the_otel_extra(tmp_path: Path) -> None:
    done = core_only(
        tmp_path, "run", "What is 2 + 2?", "--worker", "fake:4", "--json",
        env={"OTEL_TRACES_EXPORTER": "console"},
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'threadloom[otel]'" in done.stderr
    assert done.stdout == ""  # refused before the run: no result printed


@pytest.mark.parametrize(
    "dataset", ["hf:openai/gsm8k:main:test", "rows.parquet"], ids=["hub", "parquet"]
)
def test_datasets_name_the_datasets_extra(tmp_path: Path, dataset: str) -> None:
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    out = tmp_path / "bench.jsonl"
    done = core_only(
        tmp_path, "bench", "--dataset", dataset, "--worker", "fake:4", "--out", str(out),
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'threadloom[datasets]'" in done.stderr
    assert not out.exists()


def test_every_extra_is_declared_and_in_dev() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"]).lower()
    for extra in EXTRAS:
        assert extra in extras, extra
        assert extra in next(d for d in extras["dev"] if d.startswith("threadloom["))
    for heavy in ("matplotlib", "datasets", "starlette", "uvicorn", "opentelemetry"):
        assert heavy not in core, f"{heavy} is in the core dependencies"
