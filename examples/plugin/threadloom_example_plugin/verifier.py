"""word-limit:N: passes answers of at most N words; longer ones score N / words."""

from __future__ import annotations

from typing import Any

from threadloom.errors import ConfigError
from threadloom.types import Candidate, Problem, Score


class WordLimit:
    """Scores how well a candidate's text keeps to a word limit.

    Args:
        limit: Most words an answer may have to pass.
        name: The name scores are filed under.
    """

    def __init__(self, limit: int = 50, *, name: str = "word-limit") -> None:
        if limit < 1:
            raise ConfigError(f"word-limit needs a limit of at least 1 word, got {limit}")
        self.limit = limit
        self.name = name

    @classmethod
    def from_spec(cls, argument: str, **options: Any) -> WordLimit:
        """'word-limit:20' -> WordLimit(20); 'word-limit' keeps the default limit."""
        if not argument:
            return cls(**options)
        try:
            limit = int(argument)
        except ValueError:
            raise ConfigError(
                f"word-limit takes a whole number of words, e.g. word-limit:20 (got {argument!r})"
            ) from None
        return cls(limit, **options)

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        words = len(candidate.text.split())
        within = words <= self.limit
        return Score(
            value=1.0 if within else self.limit / words,
            passed=within,
            detail=f"{words} words (limit {self.limit})",
        )
