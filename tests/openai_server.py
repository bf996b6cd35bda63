"""Servers on 127.0.0.1 for the OpenAI worker's tests.

`llama_server` runs llama_cpp.server on the bundled model in a subprocess; `ScriptedServer`
answers from a script of replies (failures, slow streams, odd shapes) and records every request.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def llama_server(
    *, n_ctx: int = 1024, ready_timeout_s: float = 180.0, server_defaults: bool = False
) -> Iterator[str]:
    """Run llama_cpp.server on the bundled model; yield its base URL (…/v1).

    `server_defaults` starts it as users usually do, with its own defaults (it then cuts a
    running stream short whenever another request arrives).

    THREADLOOM_LLAMA_SERVER_ARGS adds arguments to the server's command line (e.g.
    "--n_batch 1" for a llama.cpp build that crashes when it evaluates a prompt in batches).
    """
    from threadloom.workers.models import bundled_model_path

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(bundled_model_path()),
        "--host",
        HOST,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "2",
        # serve concurrent streams one after another instead of cutting the running one short
        *(() if server_defaults else ("--interrupt_requests", "False")),
        *shlex.split(os.environ.get("THREADLOOM_LLAMA_SERVER_ARGS", "")),
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            base_url = f"http://{HOST}:{port}/v1"
            _wait_ready(process, f"{base_url}/models", ready_timeout_s, log)
            yield base_url
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout_s: float, log: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"llama_cpp.server exited with {process.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0, trust_env=False).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"llama_cpp.server did not answer {url} within {timeout_s:g}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the server and everything it started (its own process group)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# ----- a scripted server --------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer: JSON (or raw text), or server-sent events when `events` is set."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Pause before answering."""
    events: list[Any] | Callable[[], Iterable[Any]] | None = None
    """Data of each event (dicts become JSON, bytes are sent as they are, e.g. a keep-alive
    comment); a stream ends when they run out. A function gives a fresh (maybe endless)
    iterable for each request."""
    event_delay_s: float = 0.0
    """Pause before each event."""


@dataclass
class Seen:
    """A request the scripted server received."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]


def completion_reply(text: str = "hello", **extra: Any) -> dict[str, Any]:
    """A /completions reply with one choice."""
    return {
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        **extra,
    }


def chat_reply(text: str = "hello", **extra: Any) -> dict[str, Any]:
    """A /chat/completions reply with one choice."""
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        **extra,
    }


class _ServedInThread:
    """An HTTP server on this machine, run in a thread while the `with` block lasts."""

    def __init__(self, host: str = HOST) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        # shutdown() waits for the serving loop's next poll: a short one keeps each test short
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError


class ScriptedServer(_ServedInThread):
    """Answers each POST with the next scripted reply (the last one repeats).

    GET /v1/models answers `models` (404 when None). Every request is recorded in `seen`;
    `disconnects` counts streams the client closed before they ended, `disconnected_at` says
    when (time.monotonic) and `events_sent` counts the events written to all streams.
    """

    def __init__(
        self, replies: list[Reply], *, models: dict[str, Any] | None = None, host: str = HOST
    ) -> None:
        if not replies:
            raise ValueError("a ScriptedServer needs at least one reply")
        self.replies = replies
        self.models = models
        self.seen: list[Seen] = []
        self.disconnects = 0
        self.disconnected_at: list[float] = []
        self.events_sent = 0
        super().__init__(host)

    @property
    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    def _next_reply(self) -> Reply:
        with self._lock:
            index = min(len(self.posts) - 1, len(self.replies) - 1)
            return self.replies[index]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _record(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with server._lock:
                    server.seen.append(Seen(method, self.path, body, dict(self.headers.items())))

            def do_GET(self) -> None:
                self._record("GET")
                if self.path.endswith("/models") and server.models is not None:
                    self._send_json(200, server.models, {})
                else:
                    self._send_json(404, {"error": {"message": "not found"}}, {})

            def do_POST(self) -> None:
                self._record("POST")
                reply = server._next_reply()
                time.sleep(reply.delay_s)
                if reply.events is None:
                    self._send_json(reply.status, reply.body, reply.headers)
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                events = reply.events() if callable(reply.events) else reply.events
                try:
                    for event in events:
                        time.sleep(reply.event_delay_s)
                        self.wfile.write(_event_bytes(event))
                        self.wfile.flush()
                        with server._lock:
                            server.events_sent += 1
                except (BrokenPipeError, ConnectionResetError):
                    with server._lock:
                        server.disconnects += 1
                        server.disconnected_at.append(time.monotonic())

            def _send_json(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        return Handler


def _event_bytes(event: Any) -> bytes:
    if isinstance(event, bytes):
        return event
    data = event if isinstance(event, str) else json.dumps(event)
    return f"data: {data}\n\n".encode()


class RewritingProxy(_ServedInThread):
    """Forwards each request to another server after `rewrite` changed its JSON body.

    It relays answers as they arrive (streams included) and counts, in `disconnects`, answers
    whose client hung up before they ended; it then closes the upstream request too.
    """

    def __init__(self, target_url: str, rewrite: Callable[[dict[str, Any]], dict[str, Any]]):
        self.target_root = target_url.removesuffix("/v1")
        self.rewrite = rewrite
        self.disconnects = 0
        self.bodies: list[dict[str, Any]] = []
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._forward("GET", None)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = proxy.rewrite(json.loads(self.rfile.read(length)))
                with proxy._lock:
                    proxy.bodies.append(body)
                self._forward("POST", body)

            def _forward(self, method: str, body: dict[str, Any] | None) -> None:
                url = proxy.target_root + self.path
                with (
                    httpx.Client(trust_env=False, timeout=300) as client,
                    client.stream(method, url, json=body) as upstream,
                ):
                    self.send_response(upstream.status_code)
                    self.send_header("Content-Type", upstream.headers.get("content-type", ""))
                    self.end_headers()
                    try:
                        for piece in upstream.iter_raw():
                            self.wfile.write(piece)
                            self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        with proxy._lock:
                            proxy.disconnects += 1

        return Handler
