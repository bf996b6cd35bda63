"""The client's own token count of a server's reply, and the cut-off at `max_tokens`.

The client has no tokenizer, so it counts what it can prove: every streamed chunk with text came
from at least one token, every log-probability entry is one token, and one token never decodes
to more than `MAX_BYTES_PER_TOKEN` bytes. That lower bound is checked against the usage the
server reports (a server that under-reports is overruled) and against `max_tokens` (a server
that keeps going past it is cut off, and its reply ends with finish_reason "length").
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

from threadloom.types import TokenLogprob
from threadloom.workers.openai.replies import Choice

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_BYTES_PER_TOKEN",
    "TokenTally",
    "fewest_tokens",
    "settle_count",
    "text_within",
    "within_limit",
]

MAX_BYTES_PER_TOKEN = 128
"""A generous bound on the UTF-8 bytes one token decodes to (real vocabularies stay far below)."""


def _size(char: str) -> int:
    return len(char.encode("utf-8", "surrogatepass"))


def fewest_tokens(text: str, logprobs: int = 0) -> int:
    """The fewest tokens that can have produced `text` (with `logprobs` entries beside it)."""
    if not text:
        return logprobs
    size = len(text.encode("utf-8", "surrogatepass"))
    return max(1, logprobs, math.ceil(size / MAX_BYTES_PER_TOKEN))


def text_within(text: str, tokens: int, logprobs: Sequence[TokenLogprob] | None = None) -> str:
    """The longest start of `text` that `tokens` tokens can have produced.

    With log-probabilities whose tokens spell the text, the cut falls exactly after the
    `tokens`-th token; otherwise after `tokens * MAX_BYTES_PER_TOKEN` bytes.
    """
    if tokens <= 0:
        return ""
    if logprobs and "".join(t.token for t in logprobs) == text:
        return "".join(t.token for t in logprobs[:tokens])
    budget = tokens * MAX_BYTES_PER_TOKEN
    used = 0
    for end, char in enumerate(text):
        used += _size(char)
        if used > budget:
            return text[:end]
    return text


def settle_count(reported: int | None, fewest: int, limit: int, *, where: str) -> int:
    """The completion tokens to book: the server's count, checked against the client's.

    Args:
        reported: What the server's usage says (None: it sent none).
        fewest: The client's lower bound for the text it kept.
        limit: The tokens the request allowed (max_tokens).
        where: The server, for the log.
    """
    count = fewest if reported is None else max(reported, fewest)
    if reported is not None and reported < fewest:
        logger.warning(
            "%s reported %d completion tokens for a reply of at least %d; counting %d",
            where, reported, fewest, fewest,
        )  # fmt: skip
    if count > limit:
        logger.warning(
            "%s reported %d completion tokens for max_tokens=%d; counting %d",
            where, count, limit, limit,
        )  # fmt: skip
        count = limit
    return count


class TokenTally:
    """Counts a stream's tokens as chunks arrive and cuts it at `max_tokens`.

    Args:
        max_tokens: The tokens the request allowed.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.counted = 0
        """The client's lower bound of the tokens kept so far."""
        self.cut = False
        """True once the server sent more than `max_tokens` tokens (the rest was dropped)."""

    def admit(
        self, text: str, logprobs: tuple[TokenLogprob, ...] | None
    ) -> tuple[str, tuple[TokenLogprob, ...] | None]:
        """The part of one chunk that fits within `max_tokens` (all of it, or a start)."""
        if self.cut:
            return "", None
        need = fewest_tokens(text, len(logprobs or ()))
        room = self.max_tokens - self.counted
        if need <= room:
            self.counted += need
            return text, logprobs
        self.cut = True
        kept = text_within(text, room, logprobs)
        kept_logprobs = logprobs[: max(room, 0)] if logprobs is not None else None
        self.counted += fewest_tokens(kept, len(kept_logprobs or ()))
        return kept, kept_logprobs


def within_limit(choice: Choice, limit: int, where: str) -> Choice:
    """A choice of a plain reply cut at `limit` tokens, if the server went past it."""
    logprobs = choice.logprobs
    if fewest_tokens(choice.text, len(logprobs or ())) <= limit:
        return choice
    logger.warning("%s went on past max_tokens=%d; its reply was cut off there", where, limit)
    return dataclasses.replace(
        choice,
        text=text_within(choice.text, limit, logprobs),
        finish_reason="length",
        stop_reason=None,
        logprobs=logprobs[:limit] if logprobs is not None else None,
    )
