"""OpenAIWorker: generations from any OpenAI-compatible HTTP server (vLLM, llama.cpp, SGLang).

Requests go to `/chat/completions` (chat messages) or `/completions` (raw text, or chat rendered
with a `ChatTemplate`), plain or streamed as server-sent events. Connection failures, 429 and
5xx replies are retried with jittered exponential backoff; other 4xx replies raise at once as
the project's typed errors.

An assistant `prefix` is continued in one of two ways:

- with a `chat_template` (e.g. `ChatTemplate.from_gguf(path)`), the chat is rendered here and
  `/completions` continues the text: this works with every server, llama_cpp.server included;
- without one, the prefix is sent as a trailing assistant message with
  `continue_final_message: true, add_generation_prompt: false`, which vLLM and SGLang honour
  (llama_cpp.server ignores both fields and would answer in a new turn).

How `stream` talks to the server (`streaming`): server-sent events until the server cuts one
short (llama_cpp.server as usually started stops a stream whenever another request arrives),
plain requests from then on, each reply yielded as one delta. An abort closes the HTTP request
either way (a server that honours it stops decoding; llama_cpp.server does so for streams
only). A stream the server cuts short is never a failed generation: it is resumed
as a plain request that continues the text received (when the request can continue a prefix:
raw text, a chat template, or a vLLM/SGLang server), or else asked again from the start as a
plain request; the final Completion is then authoritative (deltas already delivered may differ
from its text).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from threadloom.errors import (
    ConfigError,
    ThreadloomError,
    WorkerError,
    WorkerUnavailable,
    describe_errors,
)
from threadloom.types import Completion, GenerationRequest, Timings, TokenUsage
from threadloom.workers.base import StreamDelta, WorkerCapabilities
from threadloom.workers.chat_template import ChatTemplate
from threadloom.workers.core import BaseWorker, aborted_completion
from threadloom.workers.openai.config import OpenAIWorkerConfig
from threadloom.workers.openai.dialects import Dialect, describe, detect_dialect, dialect_named
from threadloom.workers.openai.http import Aborted, Connection, Flight, Flights, redact_url
from threadloom.workers.openai.protocol import Call, EventStreamDecoder, build_call
from threadloom.workers.openai.replies import parse_choices, parse_usage, split_tokens
from threadloom.workers.openai.stream import StreamCut, StreamState, next_line
from threadloom.workers.openai.tokens import fewest_tokens, settle_count, within_limit

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["ChatTemplate", "OpenAIWorker", "OpenAIWorkerConfig"]


class OpenAIWorker(BaseWorker):
    """A worker that sends requests to an OpenAI-compatible server.

    Args:
        config: Connection settings; or pass its fields as keyword arguments.
        worker_id: Name used in traces and pools.

    `generate` makes one plain request (exact usage, several choices with `generate_n`);
    `stream` reads server-sent events. An aborted request ends with finish_reason "abort" and
    the text received so far (none for `generate`), and its HTTP request is closed, which vLLM
    and llama.cpp's server take as a cancellation. Without a `usage` in the stream (llama_cpp
    .server sends none) a streamed completion counts one token per chunk and no prompt tokens.

    Replies are untrusted: malformed ones raise `WorkerError`; a reported usage below what the
    client counted itself is overruled (see `openai_tokens`); a server that goes on past
    `max_tokens` is cut off there (a stream's connection is closed). `api_key` (or
    OPENAI_API_KEY) is sent only over https or to this machine unless `allow_key_over_http`.
    """

    def __init__(
        self,
        config: OpenAIWorkerConfig | None = None,
        *,
        worker_id: str | None = None,
        **fields: Any,
    ) -> None:
        try:
            if config is None:
                config = OpenAIWorkerConfig(**fields)
            elif fields:
                config = OpenAIWorkerConfig(**{**config.model_dump(), **fields})
        except ValidationError as exc:
            raise ConfigError(f"invalid OpenAI worker settings: {describe_errors(exc)}") from None
        self.config = config
        self.worker_id = worker_id or f"openai-{uuid.uuid4().hex[:6]}"
        self._http = Connection(config, self.worker_id)
        self._flights = Flights()
        self._model = config.model
        self._dialect: Dialect | None = (
            dialect_named(config.dialect) if config.dialect != "auto" else None
        )
        self._model_resolved = config.model is not None and self._dialect is not None
        self._resolving: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._max_context = config.max_context
        self._cuts_streams = False

    def __repr__(self) -> str:
        return f"OpenAIWorker({self.worker_id!r}, {redact_url(self.config.base_url)!r})"

    @property
    def capabilities(self) -> WorkerCapabilities:
        return WorkerCapabilities(
            logprobs=True,
            max_context=self._max_context,
            max_batch=self.config.max_concurrency,
            # without a template a prefix travels as a final assistant message, which only
            # some servers continue (vLLM, SGLang); llama_cpp.server starts a new turn
            continues_prefix=self.config.chat_template is not None,
            model=self._model or "",
        )

    # ----- Worker protocol ------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Completion:
        return (await self._call(request, n=1))[0]

    async def generate_n(self, request: GenerationRequest, n: int) -> list[Completion]:
        """`n` completions of one request, asked for in one call (`n` in the body).

        Servers that return fewer choices than asked (llama_cpp.server ignores `n`) are asked
        again for the rest, one choice a call, with the seed (if any) moved on by one each.
        """
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        await self._ensure_resolved()
        assert self._dialect is not None
        # a server that ignores n is asked once per choice straight away
        done = await self._call(request, n=n if self._dialect.honours_n else 1)
        missing = n - len(done)
        if missing <= 0 or any(c.finish_reason == "abort" for c in done):
            return done[:n]
        seed = request.params.seed

        def reseeded(offset: int) -> GenerationRequest:
            if seed is None:
                return request
            params = request.params.model_copy(update={"seed": seed + offset})
            return request.model_copy(update={"params": params})

        more = await asyncio.gather(
            *(self._call(reseeded(len(done) + i), n=1) for i in range(missing))
        )
        return done + [c for batch in more for c in batch]

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        await self._ensure_resolved()
        if not self._streams():
            completion = await self.generate(request)
            if completion.text:
                yield StreamDelta(text=completion.text, tokens=completion.usage.completion_tokens)
            yield StreamDelta(text="", completion=completion)
            return
        run = StreamState(request, self.worker_id, self._http.where)
        cut: StreamCut | None = None
        with self._flights.track(request.request_id) as flight:
            slots = self._http.session().slots
            try:
                await flight.race(slots.acquire())
            except Aborted:
                run.finish = "abort"
            else:
                try:
                    run.result.mark_started()
                    events = self._stream_events(request, flight, run)
                    # closing the events when the consumer stops early closes the HTTP stream
                    async with contextlib.aclosing(events):
                        async for text in events:
                            yield StreamDelta(text=text, tokens=run.last_tokens)
                except StreamCut as exc:
                    cut = exc
                finally:
                    slots.release()
            if cut is not None:
                recovered = await self._recover(request, run, cut)
                extra = (
                    recovered.text[len(run.text) :]
                    if recovered.text.startswith(run.text)
                    else recovered.text
                )
                if extra:
                    yield StreamDelta(text=extra, tokens=None)
                yield StreamDelta(text="", completion=recovered)
                return
        yield StreamDelta(text="", completion=run.completion())

    async def abort(self, request_id: str) -> bool:
        return self._flights.abort(request_id)

    async def _shutdown(self) -> None:
        self._flights.abort_all()
        await self._http.close()

    # ----- choosing and recovering streams ---------------------------------------------------

    def _streams(self) -> bool:
        """Whether `stream` reads server-sent events (see `streaming`)."""
        mode = self.config.streaming
        if mode != "auto":
            return mode == "always"
        return not self._cuts_streams

    def _continues(self, request: GenerationRequest) -> bool:
        """Whether a plain request can continue this request's text where it stopped."""
        assert self._dialect is not None
        return (
            request.text is not None
            or self.config.chat_template is not None
            or self._dialect.continues_prefix
        )

    async def _recover(
        self, request: GenerationRequest, run: StreamState, cut: StreamCut
    ) -> Completion:
        """The completion of a stream the server cut short, asked for as a plain request."""
        if not self._cuts_streams:
            logger.warning(
                "%s: %s; later generations use plain requests (set streaming='never' to skip "
                "this, or start the server so that it lets streams finish)",
                self.worker_id, cut,
            )  # fmt: skip
        self._cuts_streams = True
        received = run.text
        counted = max(run.tally.counted, len(run.logprobs or ()))
        params = request.params
        if not received or not self._continues(request) or counted >= params.max_tokens:
            logger.info("%s: asking again from the start: %s", self.worker_id, request.request_id)
            return await self.generate(request)
        rest = request.model_copy(
            update={
                "prefix": request.prefix + received,
                "params": params.model_copy(update={"max_tokens": params.max_tokens - counted}),
            }
        )
        more = await self.generate(rest)
        logprobs = (
            tuple(run.logprobs) + more.logprobs
            if run.logprobs is not None and more.logprobs is not None
            else None
        )
        return more.model_copy(
            update={
                "text": received + more.text,
                "usage": more.usage.model_copy(
                    update={"completion_tokens": counted + more.usage.completion_tokens}
                ),
                "logprobs": logprobs,
                "request_id": request.request_id,
            }
        )

    # ----- plain requests -------------------------------------------------------------------

    async def _call(self, request: GenerationRequest, *, n: int) -> list[Completion]:
        self.check_open()
        started = time.perf_counter()
        with self._flights.track(request.request_id) as flight:
            slots = self._http.session().slots
            try:
                await flight.race(slots.acquire())
            except Aborted:
                return [self._aborted(request, started)]
            queued = time.perf_counter() - started
            try:
                call = await flight.race(self._build(request, n=n, stream=False))
                reply = await flight.race(self._http.post_json(call.path, call.body))
            except Aborted:
                return [self._aborted(request, started, queued_s=queued)]
            finally:
                slots.release()
        total = time.perf_counter() - started
        timings = Timings(queued_s=queued, first_token_s=total, total_s=total)
        return self._completions(request, call, reply, timings)

    def _completions(
        self, request: GenerationRequest, call: Call, reply: dict[str, Any], timings: Timings
    ) -> list[Completion]:
        choices = self._read(parse_choices, reply, call.chat, request.params.stop)
        usage = self._read(parse_usage, reply)
        if not choices:
            raise WorkerError(
                f"{self._http.where} answered without choices ({str(reply)[:200]}); check "
                "that it is an OpenAI-compatible server"
            )
        limit = request.params.max_tokens
        kept = [within_limit(c, limit, self._http.where) for c in choices]
        reported = usage.completion_tokens if usage is not None else None
        counts: list[int | None]
        if len(kept) == 1:
            counts = [reported]
        elif all(c.logprobs is not None for c in kept):
            counts = [len(c.logprobs or ()) for c in kept]
        elif reported is not None:
            counts = list(split_tokens(reported, [c.text for c in kept]))
        else:
            counts = [None] * len(kept)
        prompt = usage.prompt if usage is not None else 0
        cached = usage.cached if usage is not None else 0
        return [
            Completion(
                text=c.text,
                finish_reason=c.finish_reason or "stop",
                stop_reason=c.stop_reason,
                usage=TokenUsage(
                    prompt_tokens=prompt,
                    completion_tokens=settle_count(
                        count,
                        fewest_tokens(c.text, len(c.logprobs or ())),
                        limit,
                        where=self._http.where,
                    ),
                    # the server read the prompt once for all choices
                    cached_prompt_tokens=cached if i == 0 else prompt,
                ),
                logprobs=c.logprobs,
                worker_id=self.worker_id,
                request_id=request.request_id,
                timings=timings,
            )
            for i, (c, count) in enumerate(zip(kept, counts, strict=True))
        ]

    def _read(self, parse: Callable[..., T], *args: Any) -> T:
        """Run a parser of the server's reply; a malformed reply names the server."""
        try:
            return parse(*args)
        except WorkerError as exc:
            raise WorkerError(
                f"{self._http.where} sent a malformed reply: {exc}. Check that it is an "
                "OpenAI-compatible server"
            ) from None

    # ----- streams --------------------------------------------------------------------------

    async def _stream_events(
        self, request: GenerationRequest, flight: Flight, run: StreamState
    ) -> AsyncGenerator[str, None]:
        try:
            call = await flight.race(self._build(request, n=1, stream=True))
            response = await flight.race(self._http.open_stream(call.path, call.body))
        except Aborted:
            run.finish = "abort"
            return
        try:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # a server that ignores "stream" answers with one JSON reply
                await response.aread()
                reply = self._http.read_json(response)
                if not isinstance(reply.get("choices"), list):
                    raise WorkerError(
                        f"{self._http.where} answered a streamed request without choices "
                        f"({str(reply)[:200]}); check that it is an OpenAI-compatible server"
                    )
                text = self._read(run.take, reply, call, request)
                run.finish = run.finish or "stop"
                if text:
                    yield text
                return
            events = self._read_events(response, flight, run, call, request)
            async with contextlib.aclosing(events):
                async for text in events:
                    yield text
        finally:
            await response.aclose()
        if run.finish is None:
            raise StreamCut(
                f"the stream from {self._http.where} ended without a finish reason "
                f"({'after' if run.saw_done else 'and without'} its [DONE] event; "
                "llama_cpp.server cuts a stream short when another request arrives unless it "
                "runs with --interrupt_requests False)"
            )

    async def _read_events(
        self,
        response: httpx.Response,
        flight: Flight,
        run: StreamState,
        call: Call,
        request: GenerationRequest,
    ) -> AsyncGenerator[str, None]:
        """The text of each event, until the stream ends, is cut off, or runs out of time.

        Two deadlines bound the wait for the next line: `stream_timeout` for the whole stream
        and `timeout` since the last event with data (keep-alive comments do not count).
        """
        loop = asyncio.get_running_loop()
        sent_at = run.started + run.queued_s  # waiting here for a slot does not count
        ends_at = loop.time() + self.config.stream_timeout - (time.perf_counter() - sent_at)
        last_data = loop.time()
        decoder = EventStreamDecoder()
        lines = response.aiter_lines()
        while True:
            deadline = min(ends_at, last_data + self.config.timeout)
            try:
                async with asyncio.timeout_at(deadline):
                    line = await flight.race(next_line(lines))
            except Aborted:
                run.finish = "abort"
                return
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise self._stream_timed_out(whole=deadline >= ends_at) from exc
            except httpx.TransportError as exc:
                raise StreamCut(f"the stream from {self._http.where} broke off ({exc!r})") from exc
            data = decoder.feed(line) if line is not None else decoder.flush()
            if data == "[DONE]":
                run.saw_done = True
            elif data is not None:
                last_data = loop.time()
                chunk = self._http.event_json(data)
                if not isinstance(chunk.get("choices"), list) and "usage" not in chunk:
                    raise WorkerError(
                        f"{self._http.where} streamed an event without choices "
                        f"({data[:200]!r}); check that it is an OpenAI-compatible server"
                    )
                text = self._read(run.take, chunk, call, request)
                if text:
                    yield text
                if run.tally.cut:
                    logger.warning(
                        "%s: %s went on past max_tokens=%d; the stream was cut off there",
                        self.worker_id, self._http.where, request.params.max_tokens,
                    )  # fmt: skip
                    return
            if line is None:
                return

    def _stream_timed_out(self, *, whole: bool) -> WorkerUnavailable:
        if whole:
            return WorkerUnavailable(
                f"the stream from {self._http.where} did not end within stream_timeout="
                f"{self.config.stream_timeout:g}s; the connection was closed. Raise "
                "stream_timeout for longer generations, or check the server"
            )
        return WorkerUnavailable(
            f"{self._http.where} sent no data for {self.config.timeout:g}s in the middle of a "
            "stream (keep-alive comments do not count); the connection was closed. Raise "
            "timeout or check the server"
        )

    # ----- helpers --------------------------------------------------------------------------

    async def _build(self, request: GenerationRequest, *, n: int, stream: bool) -> Call:
        await self._ensure_resolved()
        return build_call(
            request,
            endpoint=self.config.endpoint,
            model=self._model,
            template=self.config.chat_template,
            n=n,
            stream=stream,
            dialect=self._dialect,
            worker=self.worker_id,
        )

    async def _ensure_resolved(self) -> None:
        """Read the server's model list once, however many requests wait for it."""
        if self._model_resolved:
            return
        loop = asyncio.get_running_loop()
        if self._resolving is None or self._resolving[0] is not loop:
            self._resolving = (loop, asyncio.Lock())
        async with self._resolving[1]:
            if not self._model_resolved:
                await self._resolve_model()

    async def _resolve_model(self) -> None:
        """Ask the server which models it serves and which dialect it speaks."""
        try:
            listing = await self._http.get_json("/models")
        except ThreadloomError as exc:
            if getattr(exc, "status_code", None) != 404:
                raise
            listing = {}  # no model list: send requests without a model name
        if self._dialect is None:
            self._dialect = detect_dialect(listing)
            logger.info("%s: %s speaks the %s dialect", self.worker_id, self._http.where,
                        self._dialect.name)  # fmt: skip
        models = listing.get("data")
        entries = [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []
        if self._model is None and len(entries) > 1:
            raise ConfigError(
                f"{self._http.where} serves several models ({describe(listing)}); name one "
                "with model= (on the command line: --worker 'openai:URL#model=NAME')"
            )
        chosen = next((m for m in entries if m.get("id") == self._model), None)
        if self._model is None and entries:
            chosen = entries[0]
            self._model = str(chosen.get("id") or "") or None
        if chosen is not None:
            length = chosen.get("max_model_len") or 0
            if not self._max_context and (
                isinstance(length, bool) or not isinstance(length, int) or length < 0
            ):
                raise WorkerError(
                    f"{self._http.where} lists max_model_len={str(length)[:40]!r}, not a whole "
                    "number of tokens; set max_context to skip reading it"
                )
            self._max_context = self._max_context or length
        self._model_resolved = True

    def _aborted(
        self, request: GenerationRequest, started: float, *, queued_s: float = 0.0
    ) -> Completion:
        total = time.perf_counter() - started
        return aborted_completion(request, self.worker_id, queued_s=queued_s, total_s=total)
