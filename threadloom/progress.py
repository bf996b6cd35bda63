"""Live progress of a run from its trace events (used by the CLI)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class RunProgress:
    """A rich spinner line fed by trace events: generations started and done, tokens, speed."""

    def __init__(self, console: Console, title: str) -> None:
        self.started = 0
        self.done = 0
        self.deltas = 0
        self.completion_tokens = 0
        self._t0 = time.perf_counter()
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task(title, status="starting", total=None)

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "node" and event.get("kind") == "generation":
            self.started += 1
        elif kind == "delta":
            self.deltas += 1
        elif kind == "update" and "finish_reason" in event.get("data", {}):
            data = event["data"]
            if "completion_tokens" in data:
                self.done += 1
                self.completion_tokens += int(data["completion_tokens"])
        else:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-6)
        tokens = max(self.completion_tokens, self.deltas)
        status = (
            f"generations {self.done}/{self.started} · {tokens} tokens · "
            f"{tokens / elapsed:.0f} tok/s"
        )
        self._progress.update(self._task, status=status)
