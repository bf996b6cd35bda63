"""`arun` at its edge: bad arguments are ConfigErrors before any worker is asked for anything."""

from __future__ import annotations

from typing import Any

import pytest

from threadloom import Problem
from threadloom.errors import ConfigError
from threadloom.orchestrator.runner import arun
from threadloom.types import ChatMessage
from threadloom.workers.fake import FakeWorker


@pytest.mark.parametrize(
    ("problem", "options", "message"),
    [
        ("", {}, "the prompt is empty"),
        ("   ", {}, "the prompt is empty"),
        (42, {}, "got int"),
        ("bad \udcff byte", {}, "lone surrogate"),
        ("q", {"system": "sys \ud800"}, "system is not valid Unicode"),
        ("q", {"reference": 7}, "reference must be a string"),
        ("q", {"answer_format": "latex"}, "answer_format must be one of"),
        ("q", {"params": {"max_tokens": -1}}, "max_tokens"),
        ("q", {"params": {"temperture": 0.5}}, "temperture"),
        ("q", {"params": "hot"}, "params must be a SamplingParams"),
        ("q", {"budget": {"max_generations": -1}}, "max_generations"),
    ],
)
async def test_bad_arguments_are_config_errors_and_nothing_is_generated(
    problem: Any, options: dict[str, Any], message: str
) -> None:
    worker = FakeWorker(("42",))
    with pytest.raises(ConfigError, match=message):
        await arun(problem, "best-of-n", worker=worker, n=2, **options)
    assert worker.requests == []


async def test_a_problem_with_an_unencodable_message_is_refused() -> None:
    worker = FakeWorker(("42",))
    problem = Problem(messages=(ChatMessage(role="user", content="hi \udcff"),))
    with pytest.raises(ConfigError, match="message 0 \\(user\\)"):
        await arun(problem, worker=worker)
    assert worker.requests == []


async def test_a_worker_that_is_not_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="got int, which has no generate, stream, abort, close"):
        await arun("q", worker=123)  # type: ignore[arg-type]


async def test_params_and_budget_may_be_dicts() -> None:
    worker = FakeWorker(("one two three four five six",))
    result = await arun(
        "q", "best-of-n", worker=worker, n=3, params={"max_tokens": 2},
        budget={"max_generations": 2},
    )
    assert len(worker.requests) == 2
    assert all(request.params.max_tokens == 2 for request in worker.requests)
    assert result.usage.generations == 2
