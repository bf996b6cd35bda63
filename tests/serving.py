"""A real `threadloom serve` app under uvicorn on 127.0.0.1, in a thread of the test process
(so tests can look at the worker it shares)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from openai_server import HOST, free_port

from threadloom.serve import ServeConfig, create_app
from threadloom.workers.base import Worker


@contextlib.contextmanager
def serving(worker: Worker, **settings: Any) -> Iterator[str]:
    """Serve `worker` with these ServeConfig settings; yield the base URL (…/v1)."""
    port = free_port()
    app = create_app(ServeConfig(host=HOST, port=port, **settings), worker)
    server = uvicorn.Server(
        uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="threadloom-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_until(condition: Any, timeout_s: float) -> bool:
    """Poll `condition()` until it is true or `timeout_s` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return bool(condition())
        time.sleep(0.01)
