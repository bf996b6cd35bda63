"""Trace events: what a run's thought graph sends to its event sink, as typed records.

A run makes one event per trace node, per update and per streamed text delta, so
`ThoughtGraph` builds them with `trusted` (no validation), as it builds its `Trace`; the values
come from the orchestrator itself. A JSONL trace line is an event's `model_dump` (see
`event_line`). Events read back from a file are untrusted: `parse_event` repairs what it can
and validates the rest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

_new = object.__new__
_set = object.__setattr__
# BaseModel's own slots, set through their descriptors: a third cheaper than by name
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__

Model = TypeVar("Model", bound=BaseModel)

Parent = tuple[str, str]
"""(parent node id, edge kind)."""


def trusted(cls: type[Model], fields: dict[str, Any]) -> Model:
    """A model built from values the orchestrator made itself, not validated: what
    `model_construct` does, without its per-field default handling, so every field must be
    given (and `fields` becomes the model's own dict). It costs about a quarter of
    `model_construct` (measured with pydantic 2.14), and a run makes several trace events and
    trace nodes per generation."""
    made = _new(cls)
    _set(made, "__dict__", fields)
    _set_fields_set(made, set(fields))
    _set_extra(made, None)
    _set_private(made, None)
    return made


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str
    """Which event this is: node, update, edge, delta or result."""
    t: float = 0.0
    """Seconds since the trace started."""

    @classmethod
    def trusted(cls, **fields: Any) -> Self:
        """An event from values the orchestrator made itself, not validated (see `trusted`);
        every field must be given."""
        return trusted(cls, fields)


class NodeEvent(_Event):
    """A node was added to the thought graph."""

    event: Literal["node"] = "node"
    id: str
    """The new node's id."""
    kind: str
    """prompt, generation, judge, score, select, vote, node (a plan node), ..."""
    label: str = ""
    parents: list[Parent] = Field(default_factory=list)
    """Edges into the node: (parent id, edge kind)."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Whatever the node records (request id, verifier, value, plan node name, ...)."""


class UpdateEvent(_Event):
    """Data was added to an existing node (a generation's completion, a plan node's outcome)."""

    event: Literal["update"] = "update"
    id: str
    data: dict[str, Any] = Field(default_factory=dict)
    """The keys added; `finish_reason` marks the end of a generation (`abort` when it was
    cancelled)."""


class EdgeEvent(_Event):
    """An edge was added between two existing nodes."""

    event: Literal["edge"] = "edge"
    source: str
    target: str
    kind: str = ""


class DeltaEvent(_Event):
    """A generation produced text."""

    event: Literal["delta"] = "delta"
    id: str
    """The generation's node id."""
    text: str


class ResultEvent(_Event):
    """The run ended; always the last event."""

    event: Literal["result"] = "result"
    answer: str | None = None
    truncated: bool = False


TraceEvent = Annotated[
    NodeEvent | UpdateEvent | EdgeEvent | DeltaEvent | ResultEvent, Field(discriminator="event")
]
"""Any trace event; the `event` field tells which."""

_ADAPTER: TypeAdapter[TraceEvent] = TypeAdapter(TraceEvent)
_KINDS: dict[str, type[_Event]] = {
    "node": NodeEvent,
    "update": UpdateEvent,
    "edge": EdgeEvent,
    "delta": DeltaEvent,
    "result": ResultEvent,
}
_IDS = ("id", "kind", "label", "source", "target", "text")


def event_line(event: TraceEvent) -> str:
    """The event as one JSONL line (no newline): its `model_dump`, with text a model wrote
    that UTF-8 cannot hold (lone surrogates) escaped rather than refused."""
    return json.dumps(event.model_dump(mode="json", fallback=str))


def parse_event(raw: Mapping[str, Any]) -> TraceEvent | None:
    """A trace event from stored data (a JSONL line), or None when it cannot be one.

    Damage that leaves the event meaningful is repaired: unknown keys are dropped, ids and
    labels that are numbers become strings, a node without a kind gets '?', parents that are
    not [id, kind] pairs are left out, and `data` that is not a mapping becomes empty. An event
    missing the ids it is about (a node without `id`, an edge without `target`) is not
    meaningful and gives None.
    """
    cls = _KINDS.get(str(raw.get("event")))
    if cls is None:
        return None
    fields = {k: v for k, v in raw.items() if k in cls.model_fields}
    for key in _IDS:
        value = fields.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            fields[key] = str(value)
    if cls is NodeEvent and fields.get("kind") is None:
        fields["kind"] = "?"
    if "data" in fields and not isinstance(fields["data"], Mapping):
        fields["data"] = {}
    if "parents" in fields:
        parents = fields["parents"] if isinstance(fields["parents"], list) else []
        fields["parents"] = [
            (str(p[0]), str(p[1]))
            for p in parents
            if isinstance(p, list | tuple) and len(p) == 2 and p[0] is not None
        ]
    if not isinstance(fields.get("t", 0.0), int | float) or isinstance(fields.get("t"), bool):
        fields.pop("t")
    try:
        return _ADAPTER.validate_python(fields)
    except ValidationError:
        return None
