"""The package root: what it exports is deliberate, resolves, and covers every error type."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import threadloom
from threadloom import errors

EXPECTED = {
    # running
    "run", "arun", "stream", "RunEvent", "StrategyGraph", "GraphBuilder", "Join", "load_plan",
    # extending
    "Strategy", "RunContext", "Worker", "Verifier", "ProcessVerifier",
    # workers
    "LlamaCppWorker", "FakeWorker", "LocalPool", "OpenAIWorker", "SelfJudgePRM",
    "Pool", "Retrying", "ConcurrencyLimited", "Resuming",
    # data
    "Budget", "Candidate", "ChatMessage", "Completion", "GenerationRequest", "Problem", "Result",
    "SamplingParams", "Score", "Usage",
}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _error_types() -> set[str]:
    return {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, errors.ThreadloomError)
        and value.__module__ == errors.__name__
    }


def test_the_public_names_are_the_expected_ones() -> None:
    # a name added or dropped here is an API change: update EXPECTED on purpose
    assert set(threadloom.__all__) == EXPECTED | _error_types()
    assert len(threadloom.__all__) == len(set(threadloom.__all__))


def test_every_public_name_resolves() -> None:
    for name in threadloom.__all__:
        assert getattr(threadloom, name) is not None, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = threadloom.NoSuchThing  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("custom_strategy.py", ["What is 12 * 7?", "--worker", "fake:84|85|84"],
         "answer: 84  (8 generations)"),
        ("custom_strategy.py", ["What is 12 * 7?", "--worker", "fake:84"],
         "answer: 84  (3 generations)"),
        ("custom_verifier.py", ["Even?", "--worker", "fake:It is 13|It is 14|It is 25"],
         "answer: 14  verdict: True"),
    ],
)
def test_the_extension_examples_run(script: str, args: list[str], expected: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
