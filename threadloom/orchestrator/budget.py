"""Budget enforcement: admission against a Budget, reservations for work in flight, deadlines."""

from __future__ import annotations

import time

from threadloom.errors import BudgetExhausted
from threadloom.types import Budget, Completion, Usage

_UNLIMITED = Budget()


class BudgetTracker:
    """Tracks spending against limits. Several trackers (run, node) can watch one Usage each.

    Work is admitted before it starts (`begin_generation`, `begin_verifier_call`), which raises
    `BudgetExhausted` when a limit is reached and otherwise reserves what the work may spend, so
    concurrent work never overshoots. A wall-time limit is a deadline: `deadline()` tells the
    context when to abort what is still in flight.
    """

    def __init__(self, budget: Budget | None, usage: Usage, parent: BudgetTracker | None = None):
        self.budget = budget or _UNLIMITED
        self.usage = usage
        self.parent = parent
        self.started = time.perf_counter()
        self.exhausted: str | None = None
        """The first limit that was hit, if any."""
        self._running_generations = 0
        self._reserved_tokens = 0
        self._reserved_verifier_calls = 0

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

    def hit_deadline(self) -> None:
        """Record that the wall-time limit ended the work in flight (marks the run truncated)."""
        self._hit(f"wall time {self._nearest_limit('max_wall_time_s')}s")

    def check_verifier_call(self) -> None:
        """Raise if no verifier call may start (calls in flight count as spent)."""
        b = self.budget
        if (
            b.max_verifier_calls is not None
            and self.usage.verifier_calls + self._reserved_verifier_calls >= b.max_verifier_calls
        ):
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
            raise self._hit(f"{self._nearest_limit('max_completion_tokens')} completion tokens")
        tracker: BudgetTracker | None = self
        while tracker is not None:
            tracker._running_generations += 1
            tracker._reserved_tokens += granted
            tracker = tracker.parent
        return granted

    def begin_verifier_call(self) -> None:
        """Admit one verifier call (a rule check or one model pass of a judge) and reserve it
        up the chain of trackers; raises BudgetExhausted when none is left."""
        self.check_verifier_call()
        tracker: BudgetTracker | None = self
        while tracker is not None:
            tracker._reserved_verifier_calls += 1
            tracker = tracker.parent

    def end_verifier_call(self) -> None:
        tracker: BudgetTracker | None = self
        while tracker is not None:
            tracker._reserved_verifier_calls -= 1
            tracker = tracker.parent

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
            tracker.usage.add_verifier_calls(calls, tokens)
            tracker = tracker.parent

    def _nearest_limit(self, field: str) -> str:
        """The value of the nearest tracker's limit `field` up the chain, for messages."""
        tracker: BudgetTracker | None = self
        while tracker is not None:
            value = getattr(tracker.budget, field)
            if value is not None:
                return str(value)
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
