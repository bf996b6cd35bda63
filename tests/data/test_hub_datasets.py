"""Hub datasets (`hf:NAME[:CONFIG]:SPLIT`) and local Parquet/Arrow/saved folders, all offline.

Datasets are built with `datasets.Dataset.from_dict`, then either saved to disk or written into
a private Hugging Face cache the way a download leaves them, and loaded through threadloom's
loader with the Hub switched off: nothing here reaches the network.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from threadloom import data
from threadloom.data.hub import parse_hub_spec
from threadloom.errors import ConfigError, DatasetUnavailableError
from threadloom.types import Candidate, Problem
from threadloom.verifiers.registry import make_verifier

datasets = pytest.importorskip("datasets", reason="needs the [datasets] extra")

GSM8K_ROWS = {
    "question": ["Ada has 3 pens and buys 4 more. How many pens?", "A farm sells 1,200 eggs."],
    "answer": ["3 + 4 = 7\n#### 7", "It sold 1,200.\n#### 1,200"],
}
MATH500_ROWS = {
    "problem": ["What is $\\frac{1}{2} + \\frac{1}{4}$?"],
    "solution": ["$\\frac{3}{4}$, so $\\boxed{\\frac{3}{4}}$."],
    "answer": ["\\frac{3}{4}"],
    "subject": ["Prealgebra"],
    "level": [1],
    "unique_id": ["test/prealgebra/1.json"],
}
HUMANEVAL_ROWS = {
    "task_id": ["HumanEval/0"],
    "prompt": ['def add(a, b):\n    """Sum of a and b."""\n'],
    "canonical_solution": ["    return a + b\n"],
    "test": ["def check(candidate):\n    assert candidate(1, 2) == 3\n"],
    "entry_point": ["add"],
}
AIME_ROWS = {  # Maxwell-Jia/AIME_2024 spells its columns with capitals
    "ID": ["2024-I-1"],
    "Problem": ["Find the remainder when 2024 is divided by 1000."],
    "Solution": ["2024 = 2 * 1000 + 24."],
    "Answer": [24],
}


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty Hugging Face cache with the Hub unreachable (offline mode)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_hub_dataset(
    cache: Path, hub_id: str, config: str, splits: dict[str, dict[str, list[Any]]]
) -> None:
    """Put a dataset into the datasets cache in the layout a `load_dataset` download leaves."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for split, columns in splits.items():
        path = cache / "src" / f"{hub_id.replace('/', '_')}-{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(columns).to_parquet(str(path))
        files[split] = str(path)
    namespace, _, name = hub_id.rpartition("/")
    folder = "___".join(p for p in (namespace, name.lower()) if p)
    builder = Parquet(dataset_name=name.lower(), config_name=config, data_files=files)
    builder.download_and_prepare(
        output_dir=str(cache / "datasets" / folder / config / "0.0.0" / "0123456789abcdef")
    )


def score(problem: Problem, answer: str) -> bool | None:
    """Grade `answer` with the verifier the problem names, against its reference."""
    verifier = make_verifier(problem.metadata["verifier"])
    result = asyncio.run(verifier.score(problem, Candidate(text=answer, answer=answer)))
    return result.passed


# --- Hub specs ---------------------------------------------------------------------------------


def test_hub_spec_shapes() -> None:
    assert parse_hub_spec("hf:openai/gsm8k:main:test") == parse_hub_spec("openai/gsm8k:main:test")
    spec = parse_hub_spec("hf:openai/gsm8k:main:test")
    assert (spec.name, spec.config, spec.split) == ("openai/gsm8k", "main", "test")
    assert str(spec) == "hf:openai/gsm8k:main:test" and spec.set_name == "gsm8k-main-test"
    two = parse_hub_spec("hf:HuggingFaceH4/MATH-500:test")
    assert (two.name, two.config, two.split) == ("HuggingFaceH4/MATH-500", None, "test")
    assert parse_hub_spec("hf:openai_humaneval").split is None
    for bad in ("hf:", "hf:a/b/c", "hf:a:b:c:d", "hf:a b", "hf:org/name::test"):
        with pytest.raises(ConfigError, match="hf:NAME"):
            parse_hub_spec(bad)


# --- known Hub datasets from the cache -------------------------------------------------------


def test_gsm8k_from_the_cache_maps_fields_and_grades_numerically(hf_cache: Path) -> None:
    cache_hub_dataset(hf_cache, "openai/gsm8k", "main", {"test": GSM8K_ROWS, "train": GSM8K_ROWS})
    problems = data.load("hf:openai/gsm8k:main:test")
    assert [p.reference for p in problems] == ["7", "1200"]
    assert problems[0].prompt == GSM8K_ROWS["question"][0]
    assert problems[0].answer_format == "number"
    assert problems[0].metadata["solution"] == "3 + 4 = 7"
    assert problems[0].metadata["dataset"] == "gsm8k-main-test"
    assert score(problems[0], "The answer is 7") is True
    assert score(problems[0], "The answer is 8") is False
    # the config defaults to GSM8K's "main"; the split to "test"
    assert data.load("hf:openai/gsm8k") == problems
    assert data.load("hf:openai/gsm8k", limit=1) == problems[:1]


def test_math500_humaneval_and_aime_pick_their_own_graders(hf_cache: Path) -> None:
    cache_hub_dataset(hf_cache, "HuggingFaceH4/MATH-500", "default", {"test": MATH500_ROWS})
    cache_hub_dataset(hf_cache, "openai/openai_humaneval", "default", {"test": HUMANEVAL_ROWS})
    cache_hub_dataset(hf_cache, "Maxwell-Jia/AIME_2024", "default", {"train": AIME_ROWS})

    [math] = data.load("hf:HuggingFaceH4/MATH-500:test")
    assert (math.metadata["verifier"], math.answer_format) == ("math", "boxed")
    assert (math.reference, math.id) == ("\\frac{3}{4}", "test/prealgebra/1.json")
    assert math.metadata["subject"] == "Prealgebra"

    [code] = data.load("hf:openai/openai_humaneval:test")
    assert (code.metadata["verifier"], code.answer_format, code.id) == (
        "code",
        "code",
        "HumanEval/0",
    )
    assert code.metadata["entry_point"] == "add" and "def add(a, b)" in code.prompt
    assert "candidate(1, 2) == 3" in code.metadata["test"]

    [aime] = data.load("hf:Maxwell-Jia/AIME_2024")  # its only split, "train"
    assert (aime.metadata["verifier"], aime.answer_format) == ("math", "boxed")
    assert (aime.reference, aime.id) == ("24", "2024-I-1")
    assert aime.prompt == AIME_ROWS["Problem"][0]


def test_field_options_override_a_known_mapping(hf_cache: Path) -> None:
    cache_hub_dataset(hf_cache, "openai/gsm8k", "main", {"test": GSM8K_ROWS})
    [first, _] = data.load("hf:openai/gsm8k:main:test", verifier="contains")
    assert first.metadata["verifier"] == "contains" and first.reference == "7"
    raw = data.load("hf:openai/gsm8k:main:test", answer_field="answer")
    assert raw[0].reference == GSM8K_ROWS["answer"][0]  # the column as written
    assert raw[0].metadata["verifier"] == "numeric"  # still GSM8K's own grader


def test_unknown_hub_dataset_reads_named_columns(hf_cache: Path) -> None:
    rows = {"q": ["What is 6 * 7?"], "a": [42], "topic": ["times"]}
    cache_hub_dataset(hf_cache, "someone/quiz", "default", {"validation": rows})
    [problem] = data.load(
        "hf:someone/quiz:validation",
        field="q",
        answer_field="a",
        verifier="numeric",
        answer_format="number",
    )
    assert (problem.prompt, problem.reference, problem.answer_format) == (
        "What is 6 * 7?",
        "42",
        "number",
    )
    assert problem.metadata == {
        "topic": "times",
        "dataset": "quiz-validation",
        "verifier": "numeric",
    }
    with pytest.raises(
        ConfigError, match=r"missing field 'question' \(fields present: a, q, topic"
    ):
        data.load("hf:someone/quiz:validation")
    with pytest.raises(ConfigError, match="Unknown split"):
        data.load("hf:someone/quiz:test", field="q", answer_field="a")


@pytest.mark.timeout(60)
def test_a_name_not_in_the_cache_is_a_typed_error_at_once(hf_cache: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as info:
        data.load("hf:openai/gsm8k:main:test")
    message = str(info.value)
    assert (
        "hf:openai/gsm8k:main:test" in message and "not in the local Hugging Face cache" in message
    )
    assert "HF_HOME" in message and "save_to_disk" in message
    assert time.monotonic() - started < 30
    assert not (hf_cache / "datasets" / "openai___gsm8k").exists()


# --- local files through the same loader -------------------------------------------------------


def quiz() -> Any:
    return datasets.Dataset.from_dict(
        {"q": ["What is 2 + 2?", "What is 3 * 3?"], "a": ["4", "9"], "id": ["x1", "x2"]}
    )


MAPPING = {
    "field": "q",
    "answer_field": "a",
    "id_field": "id",
    "verifier": "numeric",
    "answer_format": "number",
}


def test_saved_folder_parquet_and_arrow_load_the_same_problems(tmp_path: Path) -> None:
    table = quiz()
    table.save_to_disk(str(tmp_path / "saved"))
    table.to_parquet(str(tmp_path / "quiz.parquet"))
    [arrow_file] = (tmp_path / "saved").glob("*.arrow")
    jsonl = tmp_path / "quiz.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in table))

    loaded = {
        name: data.load(str(path), **MAPPING)
        for name, path in {
            "saved": tmp_path / "saved",
            "parquet": tmp_path / "quiz.parquet",
            "arrow": arrow_file,
            "jsonl": jsonl,
        }.items()
    }
    first = loaded["saved"]
    assert [(p.id, p.prompt, p.reference) for p in first] == [
        ("x1", "What is 2 + 2?", "4"),
        ("x2", "What is 3 * 3?", "9"),
    ]
    assert first[0].metadata == {"dataset": "saved", "verifier": "numeric"}
    for name, problems in loaded.items():
        assert [(p.id, p.prompt, p.reference, p.answer_format) for p in problems] == [
            (p.id, p.prompt, p.reference, p.answer_format) for p in first
        ], name
    assert score(first[1], "nine is 9") is True


def test_saved_dataset_dict_picks_its_split(tmp_path: Path) -> None:
    both = datasets.DatasetDict({"train": quiz().select([0]), "test": quiz().select([1])})
    both.save_to_disk(str(tmp_path / "splits"))
    [test] = data.load(str(tmp_path / "splits"), **MAPPING)
    assert test.id == "x2"
    [train] = data.load(str(tmp_path / "splits"), split="train", **MAPPING)
    assert train.id == "x1"
    with pytest.raises(ConfigError, match="no split 'dev'; its splits are train, test"):
        data.load(str(tmp_path / "splits"), split="dev", **MAPPING)


def test_bad_local_sources_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or folder"):
        data.load(str(tmp_path / "absent.parquet"), **MAPPING)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match=r"broken\.parquet: cannot read it as a dataset"):
        data.load(str(broken), **MAPPING)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="save_to_disk"):
        data.load(str(tmp_path / "empty"), **MAPPING)
    with pytest.raises(ConfigError, match="bad options"):
        data.load(str(tmp_path / "absent.parquet"), difficulty=2)
    quiz().to_parquet(str(tmp_path / "quiz.parquet"))
    with pytest.raises(ConfigError, match="missing field 'question'"):
        data.load(str(tmp_path / "quiz.parquet"))


def test_loaded_set_identity_changes_with_the_rows(tmp_path: Path) -> None:
    quiz().to_parquet(str(tmp_path / "quiz.parquet"))
    options = data.SourceOptions(**MAPPING)
    first = data.open_source(str(tmp_path / "quiz.parquet"), options)
    assert first.name == "quiz" and len(first.problems) == 2
    assert first == data.open_source(str(tmp_path / "quiz.parquet"), options)
    edited = quiz().map(lambda row: {"a": "5" if row["id"] == "x1" else row["a"]})
    edited.to_parquet(str(tmp_path / "quiz.parquet"))
    second = data.open_source(str(tmp_path / "quiz.parquet"), options)
    assert second.identity["problems_sha256"] != first.identity["problems_sha256"]


# --- the bench command ----------------------------------------------------------------------


@pytest.mark.slow
def test_bench_runs_a_cached_hub_dataset_and_a_parquet_file(hf_cache: Path, tmp_path: Path) -> None:
    cache_hub_dataset(hf_cache, "openai/gsm8k", "main", {"test": GSM8K_ROWS})
    quiz().to_parquet(str(tmp_path / "quiz.parquet"))
    env = {**os.environ, "COLUMNS": "200", "HF_HOME": str(hf_cache)}

    def bench(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "threadloom.cli", "bench", *args, "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    hub = bench(
        "--dataset",
        "hf:openai/gsm8k:main:test",
        "--worker",
        "fake:The answer is 7",
        "--out",
        str(tmp_path / "hub.jsonl"),
    )
    [summary] = hub["strategies"]
    assert summary["problems"] == 2 and summary["accuracy"] == 0.5  # 7 right, 1200 wrong
    records = [json.loads(line) for line in (tmp_path / "hub.jsonl").read_text().splitlines()]
    assert {r["dataset"] for r in records if "dataset" in r} == {"gsm8k-main-test"}

    local = bench(
        "--dataset",
        str(tmp_path / "quiz.parquet"),
        "--field",
        "q",
        "--answer-field",
        "a",
        "--grader",
        "numeric",
        "--worker",
        "fake:It is 9",
        "--out",
        str(tmp_path / "quiz.jsonl"),
    )
    [summary] = local["strategies"]
    assert summary["problems"] == 2 and summary["accuracy"] == 0.5


@pytest.mark.slow
def test_a_cached_hub_dataset_benches_on_the_bundled_model(hf_cache: Path, tmp_path: Path) -> None:
    cache_hub_dataset(hf_cache, "openai/gsm8k", "main", {"test": GSM8K_ROWS})
    out = tmp_path / "hub.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "threadloom.cli", "bench", "--dataset", "hf:openai/gsm8k:main:test",
         "--limit", "1", "-s", "self-consistency:n=2", "--max-tokens", "48", "--out", str(out),
         "--json"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "COLUMNS": "200", "HF_HOME": str(hf_cache)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [summary] = json.loads(done.stdout)["strategies"]
    assert summary["problems"] == 1 and summary["errors"] == 0
    [record] = [json.loads(line) for line in out.read_text().splitlines() if '"problem_id"' in line]
    assert record["dataset"] == "gsm8k-main-test" and record["completion_tokens"] > 0
    assert record["reference"] == GSM8K_ROWS["answer"][0].split("####")[-1].strip()
