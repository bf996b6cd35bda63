"""`stream`: a run's events as they happen, ending with the Result."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from threadloom.orchestrator.events import (
    DeltaEvent,
    NodeEvent,
    ResultEvent,
    TraceEvent,
    UpdateEvent,
)
from threadloom.strategies.base import Strategy
from threadloom.types import Problem, Result

EventType = Literal[
    "branch_start", "delta", "branch_end", "score", "select", "node", "answer", "result"
]


class RunEvent(BaseModel):
    """One thing that happened during a run."""

    model_config = ConfigDict(extra="forbid")

    type: EventType
    """branch_start / delta / branch_end (a generation), score, select (a selection, vote or
    join), node (other trace nodes), answer (the committed answer), result (the last event)."""
    t: float = 0.0
    """Seconds since the run started."""
    node: str | None = None
    """Thought-graph node the event belongs to."""
    label: str = ""
    text: str = ""
    """Text delta (delta) or the committed answer (answer)."""
    data: dict[str, Any] = Field(default_factory=dict)
    result: Result | None = None
    """The Result, on the final event only."""


_RUN_EVENT_TYPES: dict[str, EventType] = {  # trace node kind -> what a stream calls it
    "generation": "branch_start",
    "score": "score",
    "select": "select",
    "vote": "select",
    "join": "select",
}


def translate(event: TraceEvent) -> RunEvent | None:
    """The RunEvent a trace event stands for, or None for events a stream does not show."""
    if isinstance(event, DeltaEvent):
        return RunEvent(type="delta", t=event.t, node=event.id, text=event.text)
    if isinstance(event, NodeEvent):
        data = {**event.data, "kind": event.kind, "parents": [list(p) for p in event.parents]}
        return RunEvent(
            type=_RUN_EVENT_TYPES.get(event.kind, "node"),
            t=event.t,
            node=event.id,
            label=event.label,
            data=data,
        )
    if isinstance(event, UpdateEvent) and "finish_reason" in event.data:
        return RunEvent(type="branch_end", t=event.t, node=event.id, data=dict(event.data))
    if isinstance(event, ResultEvent):
        return RunEvent(
            type="answer", t=event.t, text=event.answer or "", data=event.model_dump()
        )
    return None


async def stream(
    problem: Problem | str, strategy: str | Strategy = "best-of-n", **kwargs: Any
) -> AsyncIterator[RunEvent]:
    """Run like `arun` and yield events as they happen; the last event carries the Result.

    Closing the iterator early cancels the run, which aborts its generations on the worker.
    Accepts the same arguments as `arun` (except `on_event`).
    """
    from threadloom.orchestrator.runner import arun

    if "on_event" in kwargs:
        raise TypeError("stream() produces the events itself; do not pass on_event")
    queue: asyncio.Queue[RunEvent] = asyncio.Queue()

    def sink(raw: TraceEvent) -> None:
        event = translate(raw)
        if event is not None:
            queue.put_nowait(event)

    task = asyncio.create_task(arun(problem, strategy, on_event=sink, **kwargs))
    getter: asyncio.Future[RunEvent] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            while not queue.empty():
                yield queue.get_nowait()
            result = task.result()
            yield RunEvent(
                type="result", t=result.usage.wall_time_s, text=result.answer or "", result=result
            )
            return
    finally:
        if getter is not None:
            getter.cancel()  # a consumer that went away leaves no pending queue read behind
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
