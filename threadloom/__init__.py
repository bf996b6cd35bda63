"""threadloom: test-time-scaling orchestration for LLMs.

Fan a problem out to many parallel generations, search over them, verify them, and merge them
into one better answer. Heavy backends load only when used, so importing threadloom is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from threadloom.errors import (
    BudgetExhausted,
    ConfigError,
    ContextLengthError,
    GraphError,
    MissingDependencyError,
    ModelNotFoundError,
    RateLimited,
    ThreadloomError,
    VerifierError,
    WorkerDead,
    WorkerError,
    WorkerUnavailable,
)
from threadloom.types import (
    Budget,
    Candidate,
    ChatMessage,
    Completion,
    GenerationRequest,
    Problem,
    Result,
    SamplingParams,
    Score,
    Usage,
)

_LAZY = {
    "run": "threadloom.orchestrator.runner",
    "stream": "threadloom.orchestrator.streaming",
    "RunEvent": "threadloom.orchestrator.streaming",
    "StrategyGraph": "threadloom.graph.builder",
    "load_plan": "threadloom.graph.files",
    "arun": "threadloom.orchestrator.runner",
    "LlamaCppWorker": "threadloom.workers.llamacpp.worker",
    "FakeWorker": "threadloom.workers.fake",
    "LocalPool": "threadloom.workers.pool",
    "OpenAIWorker": "threadloom.workers.openai.worker",
    "SelfJudgePRM": "threadloom.verifiers.prm",
}

__all__ = [
    "Budget",
    "BudgetExhausted",
    "Candidate",
    "ChatMessage",
    "Completion",
    "ConfigError",
    "ContextLengthError",
    "FakeWorker",
    "GenerationRequest",
    "GraphError",
    "LlamaCppWorker",
    "LocalPool",
    "MissingDependencyError",
    "ModelNotFoundError",
    "OpenAIWorker",
    "Problem",
    "RateLimited",
    "Result",
    "RunEvent",
    "SamplingParams",
    "Score",
    "SelfJudgePRM",
    "StrategyGraph",
    "ThreadloomError",
    "Usage",
    "VerifierError",
    "WorkerDead",
    "WorkerError",
    "WorkerUnavailable",
    "arun",
    "load_plan",
    "run",
    "stream",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'threadloom' has no attribute {name!r}")
    return getattr(import_module(module), name)
