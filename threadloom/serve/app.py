"""The ASGI app: OpenAI-compatible endpoints over one shared worker.

Every request is one run on the same worker, so concurrent requests share its batch. A run
slot is taken before a run starts (`Admission`); a client that disconnects, while queued or
while its run executes, cancels the run, which aborts its generations on the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from threadloom.errors import ThreadloomError
from threadloom.orchestrator.runner import arun
from threadloom.serve.admission import Admission, Slot
from threadloom.serve.config import ServeConfig
from threadloom.serve.http_errors import ApiError, from_threadloom
from threadloom.serve.metrics import ServerMetrics
from threadloom.serve.planning import RunPlan, plan_chat, plan_completion
from threadloom.serve.resolve import Catalog
from threadloom.serve.responses import completion_body, completion_id
from threadloom.serve.streaming import sse_events
from threadloom.types import Result
from threadloom.workers.base import Worker

logger = logging.getLogger(__name__)

T = TypeVar("T")
Planner = Callable[[dict[str, Any], Catalog, ServeConfig], RunPlan]


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


@dataclass
class ServerState:
    """What the handlers share: one per app, never module-level."""

    config: ServeConfig
    worker: Worker
    catalog: Catalog
    admission: Admission
    metrics: ServerMetrics
    owns_worker: bool


def create_app(config: ServeConfig, worker: Worker, *, owns_worker: bool = False) -> Starlette:
    """Build the server around one worker.

    Args:
        config: Limits, security and what to serve.
        worker: The worker every run uses (its batch is shared by concurrent requests).
        owns_worker: Close the worker when the app shuts down.

    Raises:
        ConfigError: Unsafe settings (see `ServeConfig.check_security`) or a bad graph folder.
    """
    config.check_security()
    model_name = config.model_name or worker.capabilities.model or "default"
    admission = Admission(config.max_concurrent_runs, config.max_queued_runs)
    metrics = ServerMetrics()
    metrics.in_flight.set_function(lambda: admission.running)
    metrics.queued.set_function(lambda: admission.queued)
    state = ServerState(
        config=config,
        worker=worker,
        catalog=Catalog(model_name, config.graph_dir),
        admission=admission,
        metrics=metrics,
        owns_worker=owns_worker,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if state.owns_worker:
                await state.worker.close()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _endpoint(state, plan_chat), methods=["POST"]),
            Route("/v1/completions", _endpoint(state, plan_completion), methods=["POST"]),
            Route("/v1/models", _models(state), methods=["GET"]),
            Route("/health", _health(state), methods=["GET"]),
            Route("/metrics", _metrics(state), methods=["GET"]),
        ],
        exception_handlers={
            ApiError: _api_error,  # type: ignore[dict-item]
            HTTPException: _http_error,  # type: ignore[dict-item]
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.threadloom = state
    return app


async def _api_error(request: Request, exc: ApiError) -> Response:
    return exc.response()


async def _http_error(request: Request, exc: HTTPException) -> Response:
    error = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
    return error.response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    error = ApiError(500, f"the server failed: {type(exc).__name__}", type="server_error")
    return error.response()


def _check_key(request: Request, config: ServeConfig) -> None:
    if config.api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip().encode("utf-8", "replace")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given, config.api_key.encode("utf-8")
    ):
        raise ApiError(
            401,
            "missing or wrong API key; send it as 'Authorization: Bearer <key>' "
            "(the openai SDK's api_key)",
            code="invalid_api_key",
        )


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length", "")
    too_big = ApiError(413, f"the request body is over {limit} bytes", code="body_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_big
        parts.append(part)
    try:
        body = json.loads(b"".join(parts))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


async def _until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and waiting for it to wind down) if the client leaves."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        raise ClientGone
    finally:
        for pending in (task, watcher):
            pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)


def _endpoint(state: ServerState, planner: Planner) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        _check_key(request, state.config)
        body = await _read_json(request, state.config.max_body_bytes)
        plan = planner(body, state.catalog, state.config)
        family = plan.resolved.family
        try:
            waited = time.perf_counter()
            try:
                slot = await _until_disconnected(request, state.admission.acquire())
            except ApiError:
                state.metrics.runs.labels(family, "rejected").inc()
                raise
            state.metrics.queue_wait.observe(time.perf_counter() - waited)
        except BaseException:
            plan.close()
            raise
        response_id = completion_id(plan.chat)
        logger.info("%s: %s, n=%d, stream=%s", response_id, family, plan.n, plan.stream)
        if plan.stream:
            return _streamed(state, plan, slot, response_id)
        return await _answered(state, request, plan, slot, response_id)

    return endpoint


def _finisher(
    state: ServerState, plan: RunPlan, slot: Slot
) -> Callable[[str, Result | None], None]:
    """What ends a request's run, whichever way it ends; only its first call counts."""
    started = time.perf_counter()
    finished = False

    def done(outcome: str, result: Result | None) -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        seconds = time.perf_counter() - started
        slot.release()
        plan.close()
        state.admission.observe(seconds)
        if outcome == "ok" and result is not None:
            state.metrics.record_usage(plan.resolved.family, result.usage, seconds)
        else:
            state.metrics.runs.labels(plan.resolved.family, outcome).inc()

    return done


class _RunStream(EventSourceResponse):
    """An event stream that, however the response ends, closes its run and frees its slot,
    even when the client left before the first event was sent."""

    def __init__(
        self, events: AsyncGenerator[dict[str, str], None], done: Callable[[str, None], None]
    ) -> None:
        super().__init__(events, ping=15)
        self._events = events
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()
            self._done("cancelled", None)


def _streamed(state: ServerState, plan: RunPlan, slot: Slot, response_id: str) -> Response:
    done = _finisher(state, plan, slot)
    return _RunStream(sse_events(plan, state.worker, response_id, done), done)


async def _answered(
    state: ServerState, request: Request, plan: RunPlan, slot: Slot, response_id: str
) -> Response:
    done = _finisher(state, plan, slot)
    try:
        result = await _until_disconnected(
            request, arun(worker=state.worker, **plan.arguments())
        )
    except ClientGone:
        done("cancelled", None)
        return Response(status_code=499)
    except ThreadloomError as exc:
        done("error", None)
        raise from_threadloom(exc) from None
    except BaseException:
        done("cancelled", None)
        raise
    done("ok", result)
    return JSONResponse(completion_body(plan, result, response_id))


def _models(state: ServerState) -> Callable[[Request], Awaitable[Response]]:
    async def models(request: Request) -> Response:
        _check_key(request, state.config)
        data = [
            {"id": model_id, "object": "model", "created": 0, "owned_by": "threadloom"}
            for model_id in state.catalog.model_ids()
        ]
        return JSONResponse({"object": "list", "data": data})

    return models


def _health(state: ServerState) -> Callable[[Request], Awaitable[Response]]:
    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": state.catalog.model_name,
                "runs_in_flight": state.admission.running,
                "runs_queued": state.admission.queued,
            }
        )

    return health


def _metrics(state: ServerState) -> Callable[[Request], Awaitable[Response]]:
    async def metrics(request: Request) -> Response:
        _check_key(request, state.config)
        return Response(
            state.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return metrics
