"""Budget enforcement: checks a Usage against a Budget before work starts."""

from __future__ import annotations

import time

from threadloom.errors import BudgetExhausted
from threadloom.types import Budget, Completion, Usage


class BudgetTracker:
    """Tracks spending against limits. Several trackers (run, node) can watch one Usage each.

    `charge_*` methods are called before the work starts and raise `BudgetExhausted` when the
    limit is already reached; work in flight is allowed to finish.
    """

    def __init__(self, budget: Budget | None, usage: Usage, parent: BudgetTracker | None = None):
        self.budget = budget or Budget()
        self.usage = usage
        self.parent = parent
        self.started = time.perf_counter()
        self.exhausted: str | None = None
        """The first limit that was hit, if any."""
        self._running_generations = 0
        self._reserved_tokens = 0

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def _hit(self, limit: str) -> BudgetExhausted:
        self.exhausted = self.exhausted or limit
        return BudgetExhausted(limit)

    def check(self) -> None:
        """Raise if any limit is already spent (generations, tokens, wall time)."""
        b, u = self.budget, self.usage
        if b.max_wall_time_s is not None and self.elapsed_s() >= b.max_wall_time_s:
            raise self._hit(f"wall time {b.max_wall_time_s}s")
        if (
            b.max_generations is not None
            and u.generations + self._running_generations >= b.max_generations
        ):
            raise self._hit(f"{b.max_generations} generations")
        if b.max_completion_tokens is not None and u.completion_tokens >= b.max_completion_tokens:
            raise self._hit(f"{b.max_completion_tokens} completion tokens")
        if b.max_prompt_tokens is not None and u.prompt_tokens >= b.max_prompt_tokens:
            raise self._hit(f"{b.max_prompt_tokens} prompt tokens")
        if self.parent is not None:
            try:
                self.parent.check()
            except BudgetExhausted as exc:
                raise self._hit(exc.limit) from None

    def check_verifier_call(self) -> None:
        b = self.budget
        if b.max_verifier_calls is not None and self.usage.verifier_calls >= b.max_verifier_calls:
            raise self._hit(f"{b.max_verifier_calls} verifier calls")
        if b.max_wall_time_s is not None and self.elapsed_s() >= b.max_wall_time_s:
            raise self._hit(f"wall time {b.max_wall_time_s}s")
        if self.parent is not None:
            try:
                self.parent.check_verifier_call()
            except BudgetExhausted as exc:
                raise self._hit(exc.limit) from None

    def begin_generation(self, max_tokens: int) -> int:
        """Reserve a generation; returns the max_tokens it may use (clipped to the budget).

        Tokens are reserved for generations in flight, so concurrent work never overshoots a
        completion-token limit. Raises BudgetExhausted when nothing is left.
        """
        self.check()
        left = self.completion_tokens_left()
        granted = max_tokens if left is None else min(max_tokens, left)
        if granted <= 0:
            raise self._hit(f"{self._token_limit_name()} completion tokens")
        tracker: BudgetTracker | None = self
        while tracker is not None:
            tracker._running_generations += 1
            tracker._reserved_tokens += granted
            tracker = tracker.parent
        return granted

    def end_generation(self, granted: int) -> None:
        tracker: BudgetTracker | None = self
        while tracker is not None:
            tracker._running_generations -= 1
            tracker._reserved_tokens -= granted
            tracker = tracker.parent

    def record(self, completion: Completion) -> None:
        """Add a finished generation to this tracker's usage and every parent's."""
        tracker: BudgetTracker | None = self
        while tracker is not None:
            tracker.usage.add_completion(completion)
            tracker = tracker.parent

    def record_verifier_call(self, calls: int = 1, tokens: int = 0) -> None:
        tracker: BudgetTracker | None = self
        while tracker is not None:
            tracker.usage.verifier_calls += calls
            tracker.usage.verifier_tokens += tokens
            tracker = tracker.parent

    def _token_limit_name(self) -> str:
        tracker: BudgetTracker | None = self
        while tracker is not None:
            if tracker.budget.max_completion_tokens is not None:
                return str(tracker.budget.max_completion_tokens)
            tracker = tracker.parent
        return "?"

    def completion_tokens_left(self) -> int | None:
        """Tokens still allowed, net of those reserved by generations in flight."""
        left: int | None = None
        if self.budget.max_completion_tokens is not None:
            spent = self.usage.completion_tokens + self._reserved_tokens
            left = max(0, self.budget.max_completion_tokens - spent)
        if self.parent is not None:
            above = self.parent.completion_tokens_left()
            if above is not None:
                left = above if left is None else min(left, above)
        return left

    def time_left_s(self) -> float | None:
        left: float | None = None
        if self.budget.max_wall_time_s is not None:
            left = max(0.0, self.budget.max_wall_time_s - self.elapsed_s())
        if self.parent is not None:
            above = self.parent.time_left_s()
            if above is not None:
                left = above if left is None else min(left, above)
        return left
