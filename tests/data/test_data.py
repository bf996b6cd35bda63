"""Bundled datasets, the JSONL loader and the seeded generators."""

from __future__ import annotations

import ast
import json
import operator
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from threadloom import data
from threadloom.errors import ConfigError
from threadloom.types import Problem

BUNDLED = {"gsm8k": 800, "math500": 300, "humaneval": 120, "game24": 1000}
GENERATED = ("arithmetic", "instructions")
ALL_NAMES = (*BUNDLED, *GENERATED)

EXPECTED = {
    "gsm8k": ("numeric", "number"),
    "math500": ("math", "boxed"),
    "humaneval": ("code", "code"),
    "game24": ("game24", "expression"),
    "arithmetic": ("numeric", "number"),
    "instructions": ("rules", "text"),
}
"""name -> (verifier, answer_format)."""

RULE_SPEC: dict[str, dict[str, type]] = {
    "bullet_count": {"count": int},
    "contains_word": {"word": str},
    "excludes_word": {"word": str},
    "json_keys": {"keys": list},
    "max_words": {"count": int},
    "min_words": {"count": int},
    "lowercase": {},
    "uppercase": {},
    "starts_with": {"text": str},
    "ends_with": {"text": str},
    "no_commas": {},
    "sentence_count": {"count": int},
}


# --- a tiny arithmetic evaluator, independent of the generator -------------------------------

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        result: Fraction = _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
        return result
    raise ValueError(f"unsupported syntax: {ast.dump(node)}")


def safe_eval(expression: str) -> Fraction:
    return _evaluate(ast.parse(expression, mode="eval"))


def test_safe_eval_refuses_anything_but_arithmetic() -> None:
    assert safe_eval("3 * (4 + 5) - 2") == 25
    with pytest.raises(ValueError):
        safe_eval("__import__('os')")


# --- bundled sets -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), BUNDLED.items())
def test_bundled_set_loads_in_full(name: str, size: int) -> None:
    problems = data.load(name)
    assert len(problems) == size
    assert len({p.id for p in problems}) == size
    verifier, answer_format = EXPECTED[name]
    for problem in problems:
        assert isinstance(problem, Problem)
        assert problem.prompt and problem.prompt.strip()
        assert problem.answer_format == answer_format
        assert problem.metadata["verifier"] == verifier
        assert problem.metadata["dataset"] == name


def test_list_datasets_matches_what_loads() -> None:
    infos = {info.name: info for info in data.list_datasets()}
    assert tuple(infos) == ALL_NAMES
    for name, size in BUNDLED.items():
        assert infos[name].size == size
        assert infos[name].license
    for name in ALL_NAMES:
        verifier, answer_format = EXPECTED[name]
        assert (infos[name].verifier, infos[name].answer_format) == (verifier, answer_format)
        assert infos[name].size == len(data.load(name))
    assert set(infos["arithmetic"].options) == {"difficulty", "size"}


def test_gsm8k_references_are_numbers() -> None:
    for problem in data.load("gsm8k"):
        assert problem.reference is not None
        float(problem.reference)  # raises if not a plain number (no thousands separators)
        assert problem.metadata["solution"]
    assert data.load("gsm8k", limit=1)[0].reference == "18"


def test_math500_references_are_non_empty() -> None:
    for problem in data.load("math500"):
        assert problem.reference and problem.reference.strip()
        assert problem.metadata["solution"]
        assert "level" in problem.metadata and problem.metadata["subject"]


def test_humaneval_rows_carry_tests_and_entry_point() -> None:
    for problem in data.load("humaneval"):
        meta = problem.metadata
        assert problem.reference is None
        assert "def check" in meta["test"]
        assert f"def {meta['entry_point']}" in meta["prompt_code"]
        assert meta["canonical_solution"].strip()
        assert problem.prompt is not None and meta["prompt_code"].rstrip() in problem.prompt
        assert "```python" in problem.prompt


def test_game24_rows_have_four_numbers() -> None:
    for problem in data.load("game24"):
        numbers = problem.metadata["numbers"]
        assert problem.reference is None
        assert isinstance(numbers, list) and len(numbers) == 4
        assert all(type(n) is int for n in numbers)
        assert problem.prompt is not None
        assert " ".join(map(str, numbers)) in problem.prompt
        assert "Answer:" in problem.prompt


def test_bundled_files_ship_inside_the_package() -> None:
    from importlib import resources

    root = resources.files("threadloom.data")
    for name in (
        "gsm8k_test_0-799.jsonl",
        "math500_0-299.jsonl",
        "humaneval_0-119.jsonl",
        "game24_0-999.jsonl",
        "LICENSES.md",
    ):
        assert root.joinpath(name).is_file(), name


def test_importing_data_does_not_load_heavy_backends() -> None:
    code = "import sys, threadloom.data; print('llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- limit, names, splits, options ---------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_limit_takes_the_first_problems(name: str) -> None:
    first = data.load(name, limit=5)
    assert len(first) == 5
    assert first == data.load(name)[:5]


def test_limit_edge_cases() -> None:
    assert data.load("humaneval", limit=0) == []
    assert len(data.load("humaneval", limit=10_000)) == 120
    with pytest.raises(ConfigError, match="limit"):
        data.load("gsm8k", limit=-1)


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        data.load("gsm9k")
    for name in ALL_NAMES:
        assert name in str(info.value)


def test_unknown_dataset_names_the_hub_and_file_forms() -> None:
    with pytest.raises(ConfigError, match=r"hf:NAME\[:CONFIG\]:SPLIT.*\.parquet"):
        data.load("gsm9k")


def test_a_jsonl_path_loads_through_load_with_its_field_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.jsonl", [json.dumps({"q": "What is 6 * 7?", "a": 42})])
    [problem] = data.load(str(path), field="q", answer_field="a", verifier="numeric")
    assert (problem.prompt, problem.reference, problem.id) == ("What is 6 * 7?", "42", "mine/0")
    assert problem.metadata == {"dataset": "mine", "verifier": "numeric"}
    assert data.load(str(path), field="q", answer_field="a") == data.load_jsonl(
        path, field="q", answer_field="a"
    )
    with pytest.raises(ConfigError, match=r"bad options.*difficulty"):
        data.load(str(path), difficulty=2)


@pytest.mark.parametrize("name", ["gsm8k", "math500", "arithmetic"])
def test_bad_split_is_rejected(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        data.load(name, split="train")
    message = str(info.value)
    assert "train" in message and "test" in message
    for valid in ALL_NAMES:
        assert valid in message


def test_bundled_sets_take_no_options() -> None:
    with pytest.raises(ConfigError, match="difficulty"):
        data.load("gsm8k", difficulty=2)


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("options", [{"difficulty": 4}, {"difficulty": 0}, {"size": 0}, {"n": 3}])
def test_generator_options_are_validated(name: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="difficulty"):
        data.load(name, **options)


# --- load_jsonl --------------------------------------------------------------------------------


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_load_jsonl_with_custom_fields(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mine.jsonl",
        [
            json.dumps({"q": "What is 6 * 7?", "a": 42, "key": "x1", "topic": "times"}),
            "",
            json.dumps({"q": "What is 2 + 2?", "a": "4", "key": "x2", "topic": "plus"}),
            json.dumps({"q": "What is 9 - 3?", "a": 6, "key": "x3", "topic": "minus"}),
        ],
    )
    problems = data.load_jsonl(
        path,
        field="q",
        answer_field="a",
        id_field="key",
        answer_format="number",
        verifier="numeric",
    )
    assert [p.id for p in problems] == ["x1", "x2", "x3"]
    assert [p.reference for p in problems] == ["42", "4", "6"]
    first = problems[0]
    assert first.prompt == "What is 6 * 7?"
    assert first.answer_format == "number"
    assert first.metadata == {"topic": "times", "dataset": "mine", "verifier": "numeric"}
    assert len(data.load_jsonl(path, field="q", answer_field="a", limit=2)) == 2


def test_load_jsonl_defaults_and_no_answer(tmp_path: Path) -> None:
    path = _write(tmp_path / "plain.jsonl", [json.dumps({"question": "Name a color."})])
    [problem] = data.load_jsonl(path, answer_field=None)
    assert problem.reference is None
    assert problem.id == "plain/0"
    assert problem.answer_format == "text"
    assert "verifier" not in problem.metadata


def test_load_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "broken.jsonl",
        [json.dumps({"question": "ok", "answer": 1}), '{"question": "bad", "answer": '],
    )
    with pytest.raises(ConfigError) as info:
        data.load_jsonl(path)
    message = str(info.value)
    assert "broken.jsonl" in message and "line 2" in message


def test_load_jsonl_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "partial.jsonl",
        [
            json.dumps({"question": "a", "answer": 1}),
            json.dumps({"question": "b", "answer": 2}),
            json.dumps({"question": "c"}),
        ],
    )
    with pytest.raises(ConfigError) as info:
        data.load_jsonl(path)
    message = str(info.value)
    assert "partial.jsonl" in message and "line 3" in message and "'answer'" in message


def test_load_jsonl_rejects_non_objects_and_missing_files(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.jsonl", ["[1, 2]"])
    with pytest.raises(ConfigError, match="line 1"):
        data.load_jsonl(path)
    with pytest.raises(ConfigError, match="no such file"):
        data.load_jsonl(tmp_path / "absent.jsonl")
    with pytest.raises(ConfigError, match="answer_format"):
        data.load_jsonl(path, answer_format="prose")  # type: ignore[arg-type]


# --- generators --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_generators_are_deterministic_per_seed(name: str, difficulty: int) -> None:
    a = data.load(name, seed=7, difficulty=difficulty, size=50)
    b = data.load(name, seed=7, difficulty=difficulty, size=50)
    c = data.load(name, seed=8, difficulty=difficulty, size=50)
    assert a == b
    assert [p.prompt for p in a] != [p.prompt for p in c]
    prefix = "arith" if name == "arithmetic" else "instr"
    assert [p.id for p in a] == [f"{prefix}-7-{i}" for i in range(50)]
    assert len({p.prompt for p in a}) > 30
    # the first problems do not depend on how many are asked for
    assert data.load(name, seed=7, difficulty=difficulty, size=10) == a[:10]


@pytest.mark.parametrize("name", GENERATED)
def test_generated_size_option(name: str) -> None:
    assert len(data.load(name)) == 200
    assert len(data.load(name, size=17)) == 17
    assert len(data.load(name, size=17, limit=5)) == 5


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_arithmetic_answers_are_correct(difficulty: int) -> None:
    for seed in range(3):
        for problem in data.load("arithmetic", seed=seed, difficulty=difficulty):
            expression = problem.metadata["expression"]
            value = safe_eval(expression)
            assert value.denominator == 1 and value >= 0, expression
            assert problem.reference == str(value.numerator)
            assert problem.prompt is not None
            assert problem.prompt.endswith("Give the final answer as a number.")
            numbers = [
                int(n)
                for n in expression.replace("(", " ").replace(")", " ").split()
                if n.isdigit()
            ]
            for n in numbers:
                assert str(n) in problem.prompt


def test_arithmetic_difficulty_shapes_the_problems() -> None:
    def operand_count(problem: Problem) -> int:
        tree = ast.parse(problem.metadata["expression"], mode="eval")
        return sum(isinstance(node, ast.Constant) for node in ast.walk(tree))

    def largest(problem: Problem) -> int:
        tree = ast.parse(problem.metadata["expression"], mode="eval")
        return max(
            n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is int
        )

    easy = data.load("arithmetic", difficulty=1)
    assert all(operand_count(p) == 2 and largest(p) <= 20 for p in easy)
    assert {p.metadata["steps"] for p in easy} == {1}

    mixed = data.load("arithmetic", difficulty=2)
    assert {p.metadata["steps"] for p in mixed} == {1, 2}
    assert all(largest(p) <= 50 for p in mixed)

    hard = data.load("arithmetic", difficulty=3)
    assert all(operand_count(p) == 3 and largest(p) <= 100 for p in hard)
    operators = {
        type(n.op)
        for p in hard
        for n in ast.walk(ast.parse(p.metadata["expression"]))
        if isinstance(n, ast.BinOp)
    }
    assert operators == {ast.Add, ast.Sub, ast.Mult}


def _check_rule(rule: dict[str, Any]) -> None:
    assert isinstance(rule, dict)
    kind = rule.get("kind")
    assert kind in RULE_SPEC, rule
    fields = RULE_SPEC[kind]
    assert set(rule) == {"kind", *fields}, rule
    for name, expected in fields.items():
        value = rule[name]
        if expected is int:
            assert type(value) is int and value > 0, rule
        elif expected is str:
            assert isinstance(value, str) and value.strip(), rule
        else:
            assert isinstance(value, list) and value, rule
            assert all(isinstance(k, str) and k for k in value), rule


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_instruction_rules_are_well_formed(difficulty: int) -> None:
    seen: set[str] = set()
    for seed in range(3):
        for problem in data.load("instructions", seed=seed, difficulty=difficulty):
            rules = problem.metadata["rules"]
            assert isinstance(rules, list) and len(rules) == difficulty
            for rule in rules:
                _check_rule(rule)
            kinds = [r["kind"] for r in rules]
            seen.update(kinds)
            assert len(set(kinds)) == len(kinds)
            assert not {"lowercase", "uppercase"} <= set(kinds)
            assert problem.reference is None
            assert problem.answer_format == "text"
            assert problem.prompt is not None
            for rule in rules:
                for key in ("word", "text"):
                    if key in rule:
                        assert f"'{rule[key]}'" in problem.prompt
                if "keys" in rule:
                    assert all(f'"{k}"' in problem.prompt for k in rule["keys"])
            words = {r["count"] for r in rules if r["kind"] == "max_words"}
            floors = {r["count"] for r in rules if r["kind"] == "min_words"}
            if words and floors:
                assert min(floors) < max(words)
    if difficulty == 3:
        assert seen == set(RULE_SPEC)
