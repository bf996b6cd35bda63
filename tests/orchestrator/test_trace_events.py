"""Typed trace events: what a run sends its sink, the JSONL line of each, reading damaged lines
back, and the consumers (stream, live view, trace tree) working from the typed events."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import threadloom as tl
from threadloom import FakeWorker, Problem
from threadloom.cli.display import read_trace_events, trace_tree
from threadloom.cli.progress import LiveRun
from threadloom.graph import GraphBuilder
from threadloom.orchestrator import events as trace_events
from threadloom.orchestrator.events import (
    DeltaEvent,
    EdgeEvent,
    NodeEvent,
    ResultEvent,
    TraceEvent,
    UpdateEvent,
    event_line,
    parse_event,
)
from threadloom.orchestrator.streaming import translate
from threadloom.orchestrator.trace import ThoughtGraph

Q = Problem(prompt="What is 6 * 7?", answer_format="number")


async def _events(**kwargs: Any) -> tuple[tl.Result, list[TraceEvent]]:
    seen: list[TraceEvent] = []
    result = await tl.arun(Q, "best-of-n", n=2, on_event=seen.append, **kwargs)
    return result, seen


async def test_a_run_sends_typed_events_that_match_its_trace() -> None:
    result, seen = await _events(worker=FakeWorker(["six sevens are 42"]))
    kinds = [type(e) for e in seen]
    assert set(kinds) <= {NodeEvent, UpdateEvent, DeltaEvent, ResultEvent, EdgeEvent}
    assert kinds[-1] is ResultEvent and seen[-1].answer == "42"  # type: ignore[union-attr]
    nodes = [e for e in seen if isinstance(e, NodeEvent)]
    assert [e.id for e in nodes] == [n.id for n in result.trace.nodes]
    deltas = [e for e in seen if isinstance(e, DeltaEvent)]
    by_node: dict[str, str] = {}
    for delta in deltas:
        by_node[delta.id] = by_node.get(delta.id, "") + delta.text
    texts = {n.id: n.data["text"] for n in result.trace.nodes if n.kind == "generation"}
    assert {k: v.split() for k, v in by_node.items()} == {k: v.split() for k, v in texts.items()}
    ends = [e for e in seen if isinstance(e, UpdateEvent) and "finish_reason" in e.data]
    assert sorted(e.id for e in ends) == sorted(texts)
    times = [e.t for e in seen]
    assert times == sorted(times)


async def test_each_jsonl_line_is_the_event_model_dump_and_reads_back_equal() -> None:
    _, seen = await _events(worker=FakeWorker(["a \ud800 lone surrogate 42"]))
    assert any("\ud800" in getattr(e, "text", "") for e in seen)
    for event in seen:
        line = event_line(event)
        line.encode("utf-8")  # a lone surrogate is escaped, so the line can be written
        assert json.loads(line) == event.model_dump(mode="json", fallback=str)
        assert parse_event(json.loads(line)) == event


def test_events_are_only_built_when_someone_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event was built with nobody listening")

    for cls in (NodeEvent, UpdateEvent, DeltaEvent, ResultEvent, EdgeEvent):
        monkeypatch.setattr(cls, "trusted", refuse)
    quiet = ThoughtGraph()
    node = quiet.add("generation", label="x", parents=[])
    quiet.update(node, finish_reason="stop")
    quiet.delta(node, "text")
    quiet.finish("42", truncated=False)
    assert quiet.graph.nodes[node]["data"] == {"finish_reason": "stop"}


def test_events_on_the_hot_path_skip_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    validated: list[object] = []
    original = trace_events._Event.__init__

    def counting(self: Any, **data: Any) -> None:
        validated.append(data)
        original(self, **data)

    monkeypatch.setattr(trace_events._Event, "__init__", counting)
    seen: list[TraceEvent] = []
    graph = ThoughtGraph(seen.append)
    node = graph.add("generation", label="x", parents=[])
    graph.delta(node, "4")
    graph.update(node, finish_reason="stop")
    graph.finish("4", truncated=False)
    assert [type(e) for e in seen] == [NodeEvent, DeltaEvent, UpdateEvent, ResultEvent]
    assert validated == []


def test_damaged_events_are_repaired_or_left_out() -> None:
    node = parse_event(
        {"event": "node", "id": 7, "parents": [["p0", "fork"], "junk", [None, "x"]], "data": 5}
    )
    assert node == NodeEvent(id="7", kind="?", parents=[("p0", "fork")], data={})
    assert parse_event({"event": "node", "kind": "generation"}) is None
    assert parse_event({"event": "edge", "source": "a"}) is None
    assert parse_event({"event": "teleport", "id": "x"}) is None
    assert parse_event({"event": "delta", "id": "g", "text": "hi", "t": "soon", "x": 1}) == (
        DeltaEvent(id="g", text="hi")
    )


def test_a_damaged_trace_file_is_read_as_the_events_it_still_holds(tmp_path: Path) -> None:
    trace = tmp_path / "damaged.jsonl"
    trace.write_bytes(
        b'{"event": "node", "id": "p0", "kind": "prompt", "label": "q \xff"}\n'
        b'{"event": "node", "kind": "generation"}\n'
        b'{"event": "update", "id": "p0", "data": {"text": "[/INST]"}}\n'
        b"\n"
    )
    events = read_trace_events(trace)
    assert events == [
        NodeEvent(id="p0", kind="prompt", label="q \ufffd"),
        UpdateEvent(id="p0", data={"text": "[/INST]"}),
    ]
    bad = tmp_path / "list.jsonl"
    bad.write_text("[1, 2]\n")
    with pytest.raises(tl.ConfigError, match="not a JSON object"):
        read_trace_events(bad)


def _render(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


async def test_a_race_reads_back_from_jsonl_with_the_loser_aborted_and_cancelled(
    tmp_path: Path,
) -> None:
    def delay(request: tl.GenerationRequest) -> float:
        return 0.0 if request.params.temperature == 0.1 else 0.05

    plan = (
        GraphBuilder()
        .add("quick", "single:temperature=0.1")
        .add("slow", "single:temperature=0.2")
        .join("final", ["quick", "slow"], reducer="first")
        .build()
    )
    log = tmp_path / "race.jsonl"
    with log.open("w", encoding="utf-8") as sink:
        await tl.arun(
            Q,
            plan,
            worker=FakeWorker(["x " * 30], token_delay_s=delay),
            on_event=lambda e: sink.write(event_line(e) + "\n"),
        )
    events = read_trace_events(log)
    updates = [e for e in events if isinstance(e, UpdateEvent)]
    assert any(e.data.get("finish_reason") == "abort" for e in updates)
    assert any(e.data.get("cancelled") is True for e in updates)
    shown = _render(trace_tree(events))
    assert "abort" in shown and "cancelled" in shown and "final: join[first](concat)" in shown


def test_the_live_view_and_the_stream_follow_typed_events() -> None:
    live = LiveRun(Console(file=io.StringIO(), width=100), title="run")
    events: list[TraceEvent] = [
        NodeEvent(id="gen1", kind="generation", label="sample 0"),
        DeltaEvent(id="gen1", text="forty"),
        DeltaEvent(id="gen1", text=" two"),
        UpdateEvent(id="gen1", data={"finish_reason": "abort", "completion_tokens": 2}),
        ResultEvent(answer="42"),
    ]
    for event in events:
        live(event)
    branch = live.branches["gen1"]
    assert (branch.text, branch.tokens, branch.finish, live.answer) == (
        "forty two", 2, "abort", "42"
    )
    translated = [translate(e) for e in events]
    assert [t.type if t else None for t in translated] == [
        "branch_start", "delta", "delta", "branch_end", "answer"
    ]
    assert translated[-1] is not None and translated[-1].text == "42"
