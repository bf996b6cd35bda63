"""Shared fixtures: the real bundled model (one per session) and problems."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from threadloom.types import Problem


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts Ray or a vLLM engine spends seconds on that alone: it is slow too."""
    for item in items:
        if item.get_closest_marker("ray") or item.get_closest_marker("vllm"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def llama_worker() -> Iterator[object]:
    """One LlamaCppWorker on the bundled SmolLM2-135M for the whole session."""
    from threadloom.workers.llamacpp.worker import LlamaCppWorker

    worker = LlamaCppWorker(n_slots=16, worker_id="test-llama")
    yield worker
    asyncio.run(worker.close())


@pytest.fixture
def arithmetic_problem() -> Problem:
    return Problem(prompt="What is 17 + 25? Give only the number.", answer_format="number")
