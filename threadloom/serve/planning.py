"""A request body turned into the arguments of one run, with the server's caps applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from threadloom.errors import ConfigError
from threadloom.serve.config import ServeConfig
from threadloom.serve.http_errors import ApiError, from_validation
from threadloom.serve.protocol import ChatCompletionRequest, CompletionRequest
from threadloom.serve.resolve import Catalog, ResolvedModel, check_caps
from threadloom.types import Budget, ChatMessage, Problem, SamplingParams
from threadloom.verifiers.base import Verifier
from threadloom.verifiers.registry import make_verifier


@dataclass(frozen=True)
class RunPlan:
    """Everything one request's run needs."""

    resolved: ResolvedModel
    problem: Problem
    params: SamplingParams
    budget: Budget
    verifier: Verifier | None
    seed: int | None
    n: int
    model: str
    """The model id the client sent, echoed in responses."""
    chat: bool
    stream: bool
    include_usage: bool

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments of `arun` / `stream` (all but the worker)."""
        return {
            "problem": self.problem,
            "strategy": self.resolved.strategy,
            "verifier": self.verifier,
            "params": self.params,
            "budget": self.budget,
            "seed": self.seed,
        }

    @property
    def streams_answer(self) -> bool:
        """True when the answer's own tokens can be streamed as they are decoded: one plain
        sample, whose only generation is the answer."""
        return self.resolved.strategy.kind == "single" and self.n == 1

    def close(self) -> None:
        """Release the request's verifier (it was built for this request alone)."""
        close = getattr(self.verifier, "close", None)
        if callable(close):
            close()


def plan_chat(body: dict[str, Any], catalog: Catalog, config: ServeConfig) -> RunPlan:
    """The run for a `/v1/chat/completions` body."""
    request = _parse(ChatCompletionRequest, body)
    messages = tuple(
        ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
        for m in request.messages
    )
    logprobs = (request.top_logprobs or 0) if request.logprobs else None
    return _plan(request, catalog, config, chat=True, logprobs=logprobs, messages=messages)


def plan_completion(body: dict[str, Any], catalog: Catalog, config: ServeConfig) -> RunPlan:
    """The run for a `/v1/completions` body (the prompt is sent as one user turn)."""
    request = _parse(CompletionRequest, body)
    return _plan(
        request, catalog, config, chat=False, logprobs=request.logprobs,
        prompt=request.prompt_text(),
    )


def _parse(
    model: type[ChatCompletionRequest] | type[CompletionRequest], body: dict[str, Any]
) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _plan(
    request: ChatCompletionRequest | CompletionRequest,
    catalog: Catalog,
    config: ServeConfig,
    *,
    chat: bool,
    logprobs: int | None,
    messages: tuple[ChatMessage, ...] | None = None,
    prompt: str | None = None,
) -> RunPlan:
    options = request.threadloom
    resolved = catalog.resolve(request.model, options.strategy if options else None, request.n)
    check_caps(resolved.strategy, request.n, config)
    try:
        problem = Problem(messages=messages, prompt=prompt)
    except ValidationError as exc:
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ApiError(400, message, param="messages" if chat else "prompt") from None
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    try:
        params = SamplingParams(
            temperature=request.temperature if request.temperature is not None else 0.7,
            top_p=request.top_p if request.top_p is not None else 0.95,
            max_tokens=request.token_limit() or config.default_max_tokens,
            stop=tuple(stop),
            logprobs=logprobs,
        )
    except ValidationError as exc:
        raise from_validation(exc) from None
    budget = _capped_budget(options.budget if options else None, config)
    verifier = None
    if options is not None and options.verifier is not None:
        try:
            verifier = make_verifier(options.verifier)
        except ConfigError as exc:
            raise ApiError(400, str(exc), param="threadloom.verifier") from None
    return RunPlan(
        resolved=resolved,
        problem=problem,
        params=params,
        budget=budget,
        verifier=verifier,
        seed=request.seed,
        n=request.n,
        model=request.model,
        chat=chat,
        stream=request.stream,
        include_usage=request.include_usage(),
    )


def _capped_budget(asked: Budget | None, config: ServeConfig) -> Budget:
    cap = config.max_budget_tokens
    budget = asked or Budget()
    wanted = budget.max_completion_tokens
    if wanted is not None and wanted > cap:
        raise ApiError(
            400,
            f"threadloom.budget.max_completion_tokens={wanted} is over this server's cap of "
            f"{cap}; ask for fewer tokens",
            param="threadloom.budget.max_completion_tokens",
            code="over_cap",
        )
    return budget.model_copy(update={"max_completion_tokens": wanted or cap})
