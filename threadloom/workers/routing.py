"""Routing: least-loaded by in-flight tokens, with prefix affinity. Pure; no I/O."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["Load", "Router"]


class Load(Protocol):
    """What the router reads from a lane (one worker behind a pool)."""

    @property
    def in_flight(self) -> int: ...

    @property
    def capacity(self) -> int: ...

    @property
    def tokens(self) -> int: ...


L = TypeVar("L", bound=Load)


class Router:
    """Chooses a lane for each request.

    A request without an affinity key goes to the open lane (in flight below capacity) with
    the fewest in-flight tokens (requested max_tokens is the estimate), ties broken by fewer
    requests, then in turn. A request with a key goes to the lane that first served that key,
    where its prefix is cached, unless that lane is full or holds more than `spill_tokens`
    tokens beyond the least-loaded open lane: then it spills to the least-loaded lane without
    moving the key. A key whose lane is gone is given to the next lane chosen for it.

    Args:
        spill_tokens: Imbalance that makes an affinity owner overloaded (None: only when full).
        max_keys: Keys remembered; the least recently used are forgotten first.
    """

    def __init__(self, *, spill_tokens: int | None = 4096, max_keys: int = 100_000) -> None:
        self.spill_tokens = spill_tokens
        self.max_keys = max_keys
        self._owners: OrderedDict[str, object] = OrderedDict()
        self._turn = 0
        self.spills = 0
        """Requests that left their affinity owner because it was overloaded."""

    def owner(self, key: str) -> object | None:
        """The lane that holds `key`'s prefix, if any."""
        return self._owners.get(key)

    def choose(self, lanes: Sequence[L], key: str | None = None, tokens: int = 0) -> L | None:
        """The lane for a request, or None when every lane is full (the caller waits)."""
        open_lanes = [lane for lane in lanes if lane.in_flight < lane.capacity]
        if not open_lanes:
            return None
        least = self._least(open_lanes)
        if key is None:
            return least
        owner = self._owners.get(key)
        if owner is not None and any(owner is lane for lane in lanes):
            self._owners.move_to_end(key)
            chosen = next(lane for lane in lanes if lane is owner)
            overloaded = chosen.in_flight >= chosen.capacity or (
                self.spill_tokens is not None and chosen.tokens - least.tokens > self.spill_tokens
            )
            if not overloaded:
                return chosen
            self.spills += 1
            return least
        self._owners[key] = least
        self._owners.move_to_end(key)
        while len(self._owners) > self.max_keys:
            self._owners.popitem(last=False)
        return least

    def forget(self, lane: object) -> None:
        """Drop every key held by a lane (it died or left the pool)."""
        for key in [k for k, v in self._owners.items() if v is lane]:
            del self._owners[key]

    def _least(self, lanes: Sequence[L]) -> L:
        self._turn += 1
        count = len(lanes)
        # equally loaded lanes take turns: the tie-break rotates with every choice
        best = min(
            range(count),
            key=lambda i: (lanes[i].tokens, lanes[i].in_flight, (i - self._turn) % count),
        )
        return lanes[best]
