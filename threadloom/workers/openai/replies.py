"""Reading what an OpenAI-compatible server answered: choices, log-probabilities and usage.

A server's reply is untrusted input. Every number is checked before it is used: a usage that is
not a whole, finite, non-negative count, a choice index that is not a whole number, or a
log-probability entry without its token raises `WorkerError` naming the field, instead of an
untyped `ValueError` deep inside a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from threadloom.errors import WorkerError, describe_errors
from threadloom.types import FinishReason, TokenLogprob

__all__ = [
    "Choice",
    "ReplyUsage",
    "finish_reason",
    "parse_choices",
    "parse_logprobs",
    "parse_usage",
    "split_tokens",
]

_MAX_COUNT = 2**31 - 1
"""More tokens than any context window holds: a larger count is garbage, not usage."""

TokenCount = Annotated[int, Field(ge=0, le=_MAX_COUNT)]


@dataclass(frozen=True)
class Choice:
    """One choice of a reply, or the part of it one streamed chunk carries."""

    index: int
    text: str
    finish_reason: FinishReason | None
    stop_reason: str | None
    logprobs: tuple[TokenLogprob, ...] | None


def parse_choices(reply: dict[str, Any], chat: bool, stop: tuple[str, ...]) -> list[Choice]:
    """The choices of a reply or of one streamed chunk, in index order.

    Raises:
        WorkerError: A choice is malformed (an index that is not a whole number, a bad
            log-probability entry).
    """
    choices = reply.get("choices")
    if not isinstance(choices, list):
        return []
    parsed = [_choice(raw, chat=chat, stop=stop) for raw in choices if isinstance(raw, dict)]
    return sorted(parsed, key=lambda c: c.index)


def _choice(raw: dict[str, Any], *, chat: bool, stop: tuple[str, ...]) -> Choice:
    if chat:
        part = raw.get("message") or raw.get("delta") or {}
        text = part.get("content") if isinstance(part, dict) else None
    else:
        text = raw.get("text")
    reason = raw.get("stop_reason")  # vLLM: the stop string that matched (or a token id)
    return Choice(
        index=_index(raw.get("index")),
        text=text if isinstance(text, str) else "",
        finish_reason=finish_reason(raw.get("finish_reason")),
        stop_reason=reason if isinstance(reason, str) and reason in stop else None,
        logprobs=parse_logprobs(raw.get("logprobs"), chat=chat),
    )


def _index(raw: object) -> int:
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= _MAX_COUNT:
        raise WorkerError(f"a choice's index is {_shown(raw)}, not a whole number from 0")
    return raw


def finish_reason(raw: object) -> FinishReason | None:
    """The project's finish reason for a server's (tool calls and filters count as stop)."""
    if raw is None:
        return None
    if raw == "length":
        return "length"
    if raw in ("abort", "cancelled"):
        return "abort"
    return "stop"


def parse_logprobs(raw: object, *, chat: bool) -> tuple[TokenLogprob, ...] | None:
    """Per-token log-probabilities in the chat shape (`content`) or the completions shape.

    Raises:
        WorkerError: An entry has no token, or a log-probability that is not a finite number.
    """
    if not isinstance(raw, dict):
        return None
    out: list[TokenLogprob] = []
    if chat:
        for entry in _list(raw.get("content"), "logprobs.content"):
            if not isinstance(entry, dict) or entry.get("logprob") is None:
                continue
            top = {
                _token(alt.get("token")): _logprob(alt["logprob"])
                for alt in _list(entry.get("top_logprobs"), "top_logprobs")
                if isinstance(alt, dict) and alt.get("logprob") is not None
            }
            out.append(
                TokenLogprob(
                    token=_token(entry.get("token")), logprob=_logprob(entry["logprob"]), top=top
                )
            )
        return tuple(out)
    tokens = _list(raw.get("tokens"), "logprobs.tokens")
    values = _list(raw.get("token_logprobs"), "logprobs.token_logprobs")
    tops = _list(raw.get("top_logprobs"), "logprobs.top_logprobs")
    for i, (token, value) in enumerate(zip(tokens, values, strict=False)):
        if value is None:
            continue
        alts = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        top = {_token(t): _logprob(lp) for t, lp in alts.items() if lp is not None}
        out.append(TokenLogprob(token=_token(token), logprob=_logprob(value), top=top))
    return tuple(out)


def _list(raw: object, name: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise WorkerError(f"{name} is {_shown(raw)}, not a list")
    return raw


def _token(raw: object) -> str:
    if not isinstance(raw, str):
        raise WorkerError(f"a log-probability entry has token {_shown(raw)}, not a string")
    return raw


def _logprob(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise WorkerError(f"a log-probability is {_shown(raw)}, not a finite number")
    return float(raw)


class _PromptDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")

    cached_tokens: TokenCount | None = None


class ReplyUsage(BaseModel):
    """A reply's `usage`, as checked counts."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt_tokens: TokenCount | None = None
    """Tokens of the prompt (None: not reported)."""
    completion_tokens: TokenCount | None = None
    """Tokens generated, over all choices (None: not reported)."""
    prompt_tokens_details: _PromptDetails | None = None

    @property
    def prompt(self) -> int:
        return self.prompt_tokens or 0

    @property
    def cached(self) -> int:
        details = self.prompt_tokens_details
        return (details.cached_tokens or 0) if details is not None else 0


def parse_usage(reply: dict[str, Any]) -> ReplyUsage | None:
    """A reply's checked `usage`, if it has one.

    Raises:
        WorkerError: A count is negative, fractional, infinite, absurdly large or not a number.
    """
    usage = reply.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise WorkerError(f"usage is {_shown(usage)}, not an object")
    try:
        return ReplyUsage.model_validate(usage)
    except ValidationError as exc:
        raise WorkerError(
            f"usage is not a set of token counts ({describe_errors(exc)}): {_shown(usage)}"
        ) from None


def split_tokens(total: int, texts: list[str]) -> list[int]:
    """Share a reply's completion tokens among its choices, in proportion to their text."""
    if not texts:
        return []
    weights = [max(len(t), 1) for t in texts]
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(texts)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _shown(value: object) -> str:
    """A value for an error message, cut short (it came from the server)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
