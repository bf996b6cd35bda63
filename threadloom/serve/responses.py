"""Response bodies in OpenAI's shapes, with threadloom's extras under `threadloom` keys."""

from __future__ import annotations

import time
import uuid
from typing import Any

from threadloom.serve.planning import RunPlan
from threadloom.types import Candidate, Result, Usage


def completion_id(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI usage counting all the run's compute (every generation and every verifier
    token), with the breakdown under `threadloom`."""
    total = usage.prompt_tokens + usage.completion_tokens + usage.verifier_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "threadloom": {
            "generations": usage.generations,
            "aborted_generations": usage.aborted_generations,
            "verifier_calls": usage.verifier_calls,
            "verifier_tokens": usage.verifier_tokens,
            "wall_time_s": round(usage.wall_time_s, 4),
        },
    }


def finish_reason(candidate: Candidate | None) -> str:
    return "stop" if candidate is not None and candidate.finish_reason == "stop" else "length"


def choice_extras(candidate: Candidate) -> dict[str, Any]:
    return {
        "answer": candidate.answer,
        "votes": candidate.votes,
        "scores": {name: score.value for name, score in candidate.scores.items()},
        "mean_logprob": candidate.mean_logprob,
    }


def chosen(result: Result, n: int) -> list[Candidate | None]:
    """The top `n` candidates, best first; one empty slot when the run produced none."""
    top: list[Candidate | None] = list(result.candidates[:n])
    return top or [None]


def run_summary(plan: RunPlan, result: Result) -> dict[str, Any]:
    return {
        "strategy": result.strategy,
        "answer": result.answer,
        "truncated": result.truncated,
        "candidates": len(result.candidates),
        "family": plan.resolved.family,
    }


def completion_body(plan: RunPlan, result: Result, response_id: str) -> dict[str, Any]:
    """The whole (non-streamed) response."""
    choices = []
    for index, candidate in enumerate(chosen(result, plan.n)):
        text = candidate.text if candidate is not None else ""
        choice: dict[str, Any] = {
            "index": index,
            "finish_reason": finish_reason(candidate),
            "logprobs": None,
        }
        if plan.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        if candidate is not None:
            choice["threadloom"] = choice_extras(candidate)
        choices.append(choice)
    return {
        "id": response_id,
        "object": "chat.completion" if plan.chat else "text_completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": choices,
        "usage": usage_body(result.usage),
        "threadloom": run_summary(plan, result),
    }


def chunk(
    plan: RunPlan,
    response_id: str,
    created: int,
    *,
    index: int = 0,
    content: str | None = None,
    role: bool = False,
    finish: str | None = None,
    extra: dict[str, Any] | None = None,
    usage: Usage | None = None,
    no_choices: bool = False,
) -> dict[str, Any]:
    """One streamed chunk (`chat.completion.chunk`, or `text_completion` for /v1/completions)."""
    choices: list[dict[str, Any]] = []
    if not no_choices:
        choice: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
        if plan.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if content is not None:
                delta["content"] = content
            choice["delta"] = delta
        else:
            choice["text"] = content or ""
        choices.append(choice)
    body: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk" if plan.chat else "text_completion",
        "created": created,
        "model": plan.model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    elif plan.include_usage:
        body["usage"] = None
    if extra is not None:
        body["threadloom"] = extra
    return body
