"""Live display of a run from its trace events: one line per active branch, the leading answer.

Labels, model text and answers are shown as `Text`, never parsed as markup: a model that writes
'[/INST]' must not break the display.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from threadloom.orchestrator.events import (
    DeltaEvent,
    NodeEvent,
    ResultEvent,
    TraceEvent,
    UpdateEvent,
    parse_event,
)
from threadloom.unicode_text import replace_lone_surrogates

_MAX_ROWS = 12


@dataclass
class _Branch:
    label: str
    started: float
    tokens: int = 0
    text: str = ""
    finish: str | None = None
    ended: float = 0.0


@dataclass
class LiveRun:
    """Feed it trace events; it redraws a rich Live view (use as a context manager)."""

    console: Console
    title: str
    branches: dict[str, _Branch] = field(default_factory=dict)
    answer: str | None = None
    _t0: float = field(default_factory=time.perf_counter)
    _live: Live | None = None

    def __enter__(self) -> LiveRun:
        self._live = Live(
            self._render(), console=self.console, refresh_per_second=8, transient=True
        )
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def __call__(self, event: TraceEvent | Mapping[str, Any]) -> None:
        """Take one trace event (a stored one as a mapping is read with `parse_event`)."""
        if isinstance(event, Mapping):
            parsed = parse_event(event)
            if parsed is None:
                return
            event = parsed
        now = time.perf_counter()
        if isinstance(event, NodeEvent) and event.kind == "generation":
            self.branches[event.id] = _Branch(label=event.label, started=now)
        elif isinstance(event, DeltaEvent) and event.id in self.branches:
            branch = self.branches[event.id]
            branch.tokens += 1
            branch.text = (branch.text + event.text)[-400:]
        elif isinstance(event, UpdateEvent) and event.id in self.branches:
            branch = self.branches[event.id]
            tokens = event.data.get("completion_tokens")
            if isinstance(tokens, int):
                branch.tokens = tokens
            if "finish_reason" in event.data:
                branch.finish = str(event.data["finish_reason"])
                branch.ended = now
        elif isinstance(event, ResultEvent):
            self.answer = event.answer
        else:
            return
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        now = time.perf_counter()
        title = Text(replace_lone_surrogates(self.title))
        table = Table(title=title, expand=True, show_edge=False, pad_edge=False)
        table.add_column("branch", no_wrap=True, max_width=22)
        table.add_column("state", no_wrap=True)
        table.add_column("tokens", justify="right")
        table.add_column("tok/s", justify="right")
        table.add_column("latest text", no_wrap=True, overflow="ellipsis", ratio=1)
        active = [b for b in self.branches.values() if b.finish is None]
        recent = [b for b in self.branches.values() if b.finish is not None][-4:]
        for branch in (active + recent)[:_MAX_ROWS]:
            end = branch.ended or now
            rate = branch.tokens / max(end - branch.started, 1e-3)
            state = Text(branch.finish) if branch.finish else Text("running", style="green")
            label = Text(replace_lone_surrogates(branch.label))
            tail = Text(replace_lone_surrogates(" ".join(branch.text.split())[-80:]))
            table.add_row(label, state, str(branch.tokens), f"{rate:.0f}", tail)
        done = sum(b.finish is not None for b in self.branches.values())
        tokens = sum(b.tokens for b in self.branches.values())
        elapsed = now - self._t0
        leader = max(active, key=lambda b: b.tokens, default=None)
        lines: list[RenderableType] = [
            table,
            Text(
                f"{done}/{len(self.branches)} branches done · {tokens} tokens · "
                f"{tokens / max(elapsed, 1e-3):.0f} tok/s · {elapsed:.1f}s",
                style="dim",
            ),
        ]
        if self.answer is not None:
            answer = replace_lone_surrogates(f"answer: {self.answer}")
            lines.append(Text(answer, style="bold green"))
        elif leader is not None:
            lines.append(
                Text(
                    replace_lone_surrogates(
                        f"leading ({leader.label}): {' '.join(leader.text.split())[-100:]}"
                    ),
                    style="cyan",
                )
            )
        return Group(*lines)
