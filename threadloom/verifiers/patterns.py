"""regex and contains: simple rule checks on the candidate's text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from threadloom.errors import ConfigError
from threadloom.types import Candidate, Problem, Score
from threadloom.verifiers.base import passed


class RegexVerifier:
    """Passes when the pattern is found in the candidate's text (or must match all of it).

    Args:
        pattern: A Python regular expression.
        full_match: Require the whole stripped text to match instead of a search.
    """

    runs_inline = True  # score never waits: a run scores candidates in line

    def __init__(self, pattern: str, *, full_match: bool = False, name: str = "regex") -> None:
        try:
            self.pattern = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise ConfigError(f"invalid regular expression {pattern!r}: {exc}") from None
        self.full_match = full_match
        self.name = name

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        text = candidate.text.strip()
        found = self.pattern.fullmatch(text) if self.full_match else self.pattern.search(text)
        return passed(
            found is not None, f"/{self.pattern.pattern}/ {'found' if found else 'absent'}"
        )


class ContainsVerifier:
    """Checks that keywords appear in the text; the score is the fraction found.

    Args:
        keywords: Words or phrases to look for.
        mode: "all" passes only when every keyword appears, "any" when at least one does.
        case_sensitive: Match case exactly.
    """

    runs_inline = True  # score never waits: a run scores candidates in line

    def __init__(
        self,
        keywords: Sequence[str],
        *,
        mode: Literal["all", "any"] = "all",
        case_sensitive: bool = False,
        name: str = "contains",
    ) -> None:
        words = [k.strip() for k in keywords if k.strip()]
        if not words:
            raise ConfigError(
                "the contains verifier needs at least one keyword, e.g. contains:Paris"
            )
        if mode not in ("all", "any"):
            raise ConfigError(f"mode must be 'all' or 'any', got {mode!r}")
        self.keywords = words
        self.mode = mode
        self.case_sensitive = case_sensitive
        self.name = name

    async def score(self, problem: Problem, candidate: Candidate) -> Score:
        text = candidate.text if self.case_sensitive else candidate.text.lower()
        found = [k for k in self.keywords if (k if self.case_sensitive else k.lower()) in text]
        missing = [k for k in self.keywords if k not in found]
        ok = bool(found) if self.mode == "any" else not missing
        detail = f"missing: {', '.join(missing)}" if missing else "all keywords present"
        return Score(value=len(found) / len(self.keywords), passed=ok, detail=detail)
