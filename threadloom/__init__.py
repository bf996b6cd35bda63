"""threadloom: test-time-scaling orchestration for LLMs.

Fan a problem out to many parallel generations, search over them, verify them, and merge them
into one better answer. Heavy backends load only when used, so importing threadloom is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from threadloom.errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExhausted,
    ConfigError,
    ContextLengthError,
    DatasetUnavailableError,
    GraphError,
    MissingDependencyError,
    ModelNotFoundError,
    RateLimited,
    SandboxUnavailable,
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
    "Strategy": "threadloom.strategies.base",
    "RunContext": "threadloom.orchestrator.context",
    "Worker": "threadloom.workers.base",
    "Verifier": "threadloom.verifiers.base",
    "ProcessVerifier": "threadloom.verifiers.base",
    "run": "threadloom.orchestrator.runner",
    "stream": "threadloom.orchestrator.streaming",
    "RunEvent": "threadloom.orchestrator.streaming",
    "StrategyGraph": "threadloom.graph.builder",
    "load_plan": "threadloom.graph.files",
    "arun": "threadloom.orchestrator.runner",
    "LlamaCppWorker": "threadloom.workers.llamacpp.worker",
    "FakeWorker": "threadloom.workers.fake",
    "LocalPool": "threadloom.workers.pool",
    "Pool": "threadloom.workers.pool",
    "Retrying": "threadloom.workers.wrappers",
    "ConcurrencyLimited": "threadloom.workers.wrappers",
    "Resuming": "threadloom.workers.wrappers",
    "GraphBuilder": "threadloom.graph.builder",
    "Join": "threadloom.graph.nodes",
    "OpenAIWorker": "threadloom.workers.openai.worker",
    "SelfJudgePRM": "threadloom.verifiers.prm",
}

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "Budget",
    "BudgetExhausted",
    "Candidate",
    "ChatMessage",
    "Completion",
    "ConcurrencyLimited",
    "ConfigError",
    "ContextLengthError",
    "DatasetUnavailableError",
    "FakeWorker",
    "GenerationRequest",
    "GraphBuilder",
    "GraphError",
    "Join",
    "LlamaCppWorker",
    "LocalPool",
    "MissingDependencyError",
    "ModelNotFoundError",
    "OpenAIWorker",
    "Pool",
    "Problem",
    "ProcessVerifier",
    "RateLimited",
    "Result",
    "Resuming",
    "Retrying",
    "RunContext",
    "RunEvent",
    "SamplingParams",
    "SandboxUnavailable",
    "Score",
    "SelfJudgePRM",
    "Strategy",
    "StrategyGraph",
    "ThreadloomError",
    "Usage",
    "Verifier",
    "VerifierError",
    "Worker",
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
