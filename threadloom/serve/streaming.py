"""`stream=true`: the run's work as server-sent events in OpenAI's chunk format.

One plain sample streams the answer's tokens as they are decoded. Strategies that choose at the
end stream their progress (branches starting, branch deltas, scores, selections, branches
ending) in a `threadloom` field of chunks with an empty delta, then the chosen answers as
content. A client that goes away closes this generator, which cancels the run and so aborts
its generations on the worker.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from threadloom.errors import ThreadloomError
from threadloom.orchestrator.streaming import RunEvent, stream
from threadloom.serve.http_errors import ApiError, from_threadloom
from threadloom.serve.planning import RunPlan
from threadloom.serve.responses import choice_extras, chosen, chunk, finish_reason, run_summary
from threadloom.types import Result
from threadloom.workers.base import Worker

logger = logging.getLogger(__name__)

DONE = "[DONE]"


def progress(event: RunEvent) -> dict[str, Any] | None:
    """What a client sees of one run event (None: nothing). The prompt node is left out: its
    label is the client's own prompt."""
    data = event.data
    if event.type == "delta":
        return {"type": "delta", "node": event.node, "text": event.text}
    if event.type == "branch_start":
        return {
            "type": "branch_start",
            "node": event.node,
            "kind": data.get("kind"),
            "label": event.label,
            "parents": [p[0] for p in data.get("parents", [])],
        }
    if event.type == "branch_end":
        return {
            "type": "branch_end",
            "node": event.node,
            "finish_reason": data.get("finish_reason"),
            "completion_tokens": data.get("completion_tokens"),
        }
    if event.type == "score":
        return {
            "type": "score",
            "node": event.node,
            "verifier": data.get("verifier"),
            "value": data.get("value"),
            "passed": data.get("passed"),
            "parents": [p[0] for p in data.get("parents", [])],
        }
    if event.type in ("select", "node") and data.get("kind") != "prompt":
        return {"type": event.type, "node": event.node, "kind": data.get("kind"),
                "label": event.label}
    return None


async def sse_events(
    plan: RunPlan,
    worker: Worker,
    response_id: str,
    on_done: Callable[[str, Result | None], None],
) -> AsyncGenerator[dict[str, str], None]:
    """The response's events (`{"data": json}` for sse-starlette), ending with `[DONE]`.

    `on_done(outcome, result)` is called once, however the stream ends: "ok", "error" or
    "cancelled" (the client went away).
    """
    created = int(time.time())
    outcome, result = "cancelled", None

    def send(body: dict[str, Any]) -> dict[str, str]:
        return {"data": json.dumps(body, ensure_ascii=False)}

    try:
        yield send(chunk(plan, response_id, created, role=True, content=""))
        answer_nodes: set[str] = set()
        async for event in stream(worker=worker, **plan.arguments()):
            if event.type == "result":
                result = event.result
            elif plan.streams_answer:
                if event.type == "branch_start" and event.data.get("kind") == "generation":
                    answer_nodes.add(str(event.node))
                elif event.type == "delta" and event.node in answer_nodes and event.text:
                    yield send(chunk(plan, response_id, created, content=event.text))
            elif (shown := progress(event)) is not None:
                yield send(chunk(plan, response_id, created, extra=shown))
        assert result is not None  # stream() always ends with the result event
        candidates = chosen(result, plan.n)
        for index, candidate in enumerate(candidates):
            if not plan.streams_answer and candidate is not None and candidate.text:
                yield send(chunk(plan, response_id, created, index=index, content=candidate.text))
            extras: dict[str, Any] = choice_extras(candidate) if candidate is not None else {}
            if index == len(candidates) - 1:
                extras = {**extras, "run": run_summary(plan, result)}
            yield send(
                chunk(
                    plan, response_id, created, index=index, finish=finish_reason(candidate),
                    extra={"type": "choice", **extras},
                )
            )
        if plan.include_usage:
            yield send(chunk(plan, response_id, created, usage=result.usage, no_choices=True))
        yield {"data": DONE}
        outcome = "ok"
    except ThreadloomError as exc:
        outcome = "error"
        logger.warning("streamed run %s failed: %s", response_id, type(exc).__name__)
        yield send(from_threadloom(exc).body())
    except Exception as exc:  # a bug must still end the stream with an error the client reads
        outcome = "error"
        logger.error("streamed run %s failed: %s", response_id, type(exc).__name__)
        failure = ApiError(500, f"the run failed: {type(exc).__name__}", type="server_error")
        yield send(failure.body())
    finally:
        on_done(outcome, result)
