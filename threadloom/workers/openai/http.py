"""The HTTP side of OpenAIWorker: a client per event loop, retries, typed errors, aborts."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from threadloom.errors import AuthenticationError, RateLimited, WorkerError, WorkerUnavailable
from threadloom.unicode_text import replace_lone_surrogates_in
from threadloom.workers.openai.protocol import ErrorBody, request_error, retry_after_s

if TYPE_CHECKING:
    from threadloom.workers.openai.config import OpenAIWorkerConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Aborted(Exception):
    """The request was aborted while it waited."""


class Transient(Exception):
    """A failure worth retrying (connection, 429, 5xx); becomes a typed error at the end."""

    def __init__(self, detail: str, *, rate_limited: bool = False, wait_s: float | None = None):
        super().__init__(detail)
        self.detail = detail
        self.rate_limited = rate_limited
        self.wait_s = wait_s

    def final(self, attempts: int) -> WorkerUnavailable:
        tried = f"(gave up after {attempts} attempt{'s' if attempts > 1 else ''})"
        if self.rate_limited:
            return RateLimited(
                f"{self.detail} {tried}; lower max_concurrency or try again later",
                retry_after_s=self.wait_s,
            )
        return WorkerUnavailable(f"{self.detail} {tried}")


@dataclass
class Flight:
    """A request being served: aborting it sets the event, and every wait races the event."""

    aborted: asyncio.Event = field(default_factory=asyncio.Event)
    users: int = 0

    async def race(self, work: Awaitable[T]) -> T:
        """Await `work` unless the request is aborted first (then raise Aborted)."""
        if self.aborted.is_set():
            if asyncio.iscoroutine(work):
                work.close()
            raise Aborted
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self.aborted.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                # whatever the cancelled work ends with, nobody waits for it any more
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if not task.done():
            raise Aborted
        return task.result()


class Flights:
    """The requests in flight, by id (calls that share an id share one abort)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Flight] = {}

    @contextlib.contextmanager
    def track(self, request_id: str) -> Iterator[Flight]:
        flight = self._by_id.setdefault(request_id, Flight())
        flight.users += 1
        try:
            yield flight
        finally:
            flight.users -= 1
            if flight.users <= 0 and self._by_id.get(request_id) is flight:
                del self._by_id[request_id]

    def abort(self, request_id: str) -> bool:
        flight = self._by_id.get(request_id)
        if flight is None:
            return False
        flight.aborted.set()
        return True

    def abort_all(self) -> None:
        for flight in self._by_id.values():
            flight.aborted.set()


@dataclass
class Session:
    """The HTTP client and the concurrency limit of one event loop."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    slots: asyncio.Semaphore


class Connection:
    """Sends requests to one server: retries with jittered backoff, errors typed."""

    def __init__(self, config: OpenAIWorkerConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.where = f"the server at {redact_url(config.base_url)}"
        self._key, self.key_withheld = _bearer_key(config)
        if self.key_withheld:
            logger.warning(
                "%s: OPENAI_API_KEY is not sent to %s: plain http to a host that is not this "
                "machine would expose it. Use https, or pass api_key with allow_key_over_http",
                name, self.where,
            )  # fmt: skip
        self._session: Session | None = None

    def session(self) -> Session:
        """The client of the running event loop (a worker may outlive one asyncio.run)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.loop is not loop:
            config = self.config
            headers = dict(config.headers)
            if self._key is not None:
                headers["Authorization"] = f"Bearer {self._key.get_secret_value()}"
            client = httpx.AsyncClient(
                base_url=config.base_url,
                headers=headers,
                timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
                limits=httpx.Limits(max_connections=config.max_concurrency + 4),
                # a proxy from the environment must not capture requests to this machine
                trust_env=not is_loopback(config.base_url),
            )
            self._session = Session(loop, client, asyncio.Semaphore(config.max_concurrency))
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and session.loop is _running_loop():
            await session.client.aclose()

    async def get_json(self, path: str) -> dict[str, Any]:
        session = self.session()

        async def attempt() -> dict[str, Any]:
            return self.read_json(await self._send(session, "GET", path, None, stream=False))

        return await self.with_retries(attempt)

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request and its JSON reply; the whole of it within `timeout`."""
        session = self.session()

        async def attempt() -> dict[str, Any]:
            try:
                async with asyncio.timeout(self.config.timeout):
                    response = await self._send(session, "POST", path, body, stream=False)
            except TimeoutError as exc:
                raise self._timed_out() from exc
            return self.read_json(response)

        return await self.with_retries(attempt)

    async def open_stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """A response whose body is still to be read; the caller closes it."""
        session = self.session()
        return await self.with_retries(lambda: self._send(session, "POST", path, body, stream=True))

    async def _send(
        self,
        session: Session,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        stream: bool,
    ) -> httpx.Response:
        """One attempt; failures worth retrying raise Transient, the rest typed errors."""
        try:
            # a lone surrogate (undecodable input, or one a server sent) cannot be encoded
            payload = replace_lone_surrogates_in(body)
            message = session.client.build_request(method, path, json=payload)
            response = await session.client.send(message, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Transient(
                f"cannot reach {self.where} ({exc!r}); start the server or fix base_url"
            ) from exc
        except httpx.TimeoutException as exc:
            raise self._timed_out() from exc
        except httpx.TransportError as exc:
            raise Transient(f"{self.where} dropped the connection ({exc!r})") from exc
        if response.status_code < 400:
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        error = ErrorBody.parse(response.text)
        status = response.status_code
        wait_s = retry_after_s(response.headers.get("retry-after"))
        if status == 429:
            raise Transient(
                f"{self.where} is rate limiting requests (429: {error.message})",
                rate_limited=True,
                wait_s=wait_s,
            )
        if status >= 500:
            raise Transient(
                f"{self.where} failed ({status}: {error.message}); check the server's log",
                wait_s=wait_s,
            )
        refusal = request_error(status, error, self.where)
        if self.key_withheld and isinstance(refusal, AuthenticationError):
            refusal = AuthenticationError(
                f"{refusal} OPENAI_API_KEY was not sent, because {self.where} is plain http to "
                "another host: use https, or pass api_key with allow_key_over_http=True"
            )
        raise refusal

    def _timed_out(self) -> WorkerUnavailable:
        return WorkerUnavailable(
            f"{self.where} did not answer within {self.config.timeout:g}s; raise timeout or "
            "check the server"
        )

    async def with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        attempts = 0

        async def counted() -> T:
            nonlocal attempts
            attempts += 1
            return await attempt()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=self._backoff,
            retry=retry_if_exception_type(Transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return await retrying(counted)
        except Transient as exc:
            raise exc.final(attempts) from exc.__cause__

    def _backoff(self, state: RetryCallState) -> float:
        jitter = wait_random_exponential(
            multiplier=self.config.backoff_s, max=self.config.max_backoff_s
        )
        pause = jitter(state)
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, Transient) and error.wait_s is not None:
            pause = max(pause, error.wait_s)
        return min(pause, self.config.max_backoff_s)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        pause = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "%s: %s; retry %d of %d in %.2fs",
            self.name,
            error,
            state.attempt_number,
            self.config.max_retries,
            pause,
        )

    def read_json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise WorkerError(
                f"{self.where} answered {response.status_code} with a body that is not JSON "
                f"({response.text[:200]!r}); check that base_url points at the API (…/v1)"
            ) from exc
        if not isinstance(data, dict):
            raise WorkerError(f"{self.where} answered {type(data).__name__}, not a JSON object")
        return data

    def event_json(self, data: str) -> dict[str, Any]:
        """One streamed event's JSON; an error event raises its typed error."""
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise WorkerError(
                f"{self.where} streamed an event that is not JSON: {data[:200]!r}"
            ) from exc
        if not isinstance(chunk, dict):
            raise WorkerError(f"{self.where} streamed {type(chunk).__name__}, not a JSON object")
        if "error" in chunk and not chunk.get("choices"):
            error = ErrorBody.parse(data)
            status = chunk["error"].get("code") if isinstance(chunk["error"], dict) else None
            if isinstance(status, int) and 400 <= status < 500:
                raise request_error(status, error, self.where)
            raise WorkerUnavailable(
                f"{self.where} failed in the middle of a stream ({error.message}); check the "
                "server's log"
            )
        return chunk


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposes_secrets(url: str) -> bool:
    """True when `url` is plain http to a host that is not this machine (readable in transit)."""
    return urlsplit(url).scheme == "http" and not is_loopback(url)


def redact_url(url: str) -> str:
    """`url` with any user name and password in it replaced by '***'."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _bearer_key(config: OpenAIWorkerConfig) -> tuple[SecretStr | None, bool]:
    """The key to send, and whether OPENAI_API_KEY was held back (plain http to another host).

    An explicit `api_key` was already checked against the URL by the config.
    """
    if config.api_key is not None:
        return config.api_key, False
    found = os.environ.get("OPENAI_API_KEY")
    if not found:
        return None, False
    if exposes_secrets(config.base_url) and not config.allow_key_over_http:
        return None, True
    return SecretStr(found), False
