"""The nodes of a strategy graph: a strategy node, and an explicit join with a wait policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PositiveInt,
    Tag,
    field_validator,
    model_validator,
)

from threadloom.strategies.base import Strategy
from threadloom.strategies.registry import StrategyField, make_strategy
from threadloom.types import Budget

Wait = Literal["all", "first"] | PositiveInt
"""How many of a join's inputs it waits for: all, the first to finish, or the first k."""

CONCAT = "concat"
"""The default reducer: every input's candidates, unchanged."""
FIRST = "first"
"""The reducer name that means: wait for the first branch and keep its candidates as they are."""


class GraphNode(BaseModel):
    """One strategy node of a graph."""

    model_config = ConfigDict(extra="forbid")

    strategy: StrategyField
    """The strategy this node runs (a spec string, a dict with 'kind', or an instance)."""
    inputs: list[str] = Field(default_factory=list)
    """Upstream nodes whose candidates this node receives (empty: starts from the problem)."""
    map: bool = False
    """Run one copy of the strategy per input candidate, in parallel."""
    budget: Budget | None = None
    """Limits for this node alone (the run's limits still apply)."""

    @property
    def wait(self) -> Wait:
        """A strategy node waits for every input."""
        return "all"

    def label(self) -> str:
        return self.strategy.label()


class Join(GraphNode):
    """A node that combines the candidates of several branches with a reducer.

    Written ``{join: [a, b], reducer: vote, wait: all}``. With ``wait: first`` (or
    ``reducer: first``) the first input to finish with candidates wins and the other inputs'
    branches are cancelled: their generations are aborted on the worker. With ``wait: k`` the
    first k inputs to finish are combined and the rest cancelled.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    inputs: list[str] = Field(alias="join", min_length=1)
    """The nodes joined (written ``join: [...]``)."""
    strategy: StrategyField = Field(alias="reducer", default_factory=lambda: make_strategy(CONCAT))
    """The reducer: concat, vote, select, first, or any strategy that consumes inputs
    (written ``reducer: ...``)."""
    wait_for: Wait = Field("all", alias="wait")
    """all, first, or a number k: how many inputs to wait for (written ``wait: ...``)."""
    @model_validator(mode="before")
    @classmethod
    def _first_means_wait_first(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        reducer = data.get("reducer", data.get("strategy"))
        if isinstance(reducer, str) and reducer.strip().lower() == FIRST:
            wait = data.get("wait", data.get("wait_for", FIRST))
            if wait not in (FIRST, 1):
                raise ValueError(
                    f"reducer 'first' keeps the first branch to finish, so it cannot wait for "
                    f"{wait!r}; drop 'wait' or use another reducer (concat, vote, select)"
                )
            data = {k: v for k, v in data.items() if k not in ("reducer", "strategy", "wait_for")}
            data.update(reducer=CONCAT, wait=FIRST)
        return data

    @field_validator("wait_for", mode="before")
    @classmethod
    def _wait_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, str):
            return value.strip().lower()
        return value

    @property
    def wait(self) -> Wait:
        return self.wait_for

    @property
    def races(self) -> bool:
        """True when the join keeps only some of its inputs and cancels the rest."""
        return self.wait_for != "all" and self.needed < len(self.inputs)

    @property
    def needed(self) -> int:
        """How many inputs (with candidates) the join waits for."""
        if self.wait_for == "all":
            return len(self.inputs)
        if self.wait_for == FIRST:
            return 1
        return int(self.wait_for)

    def label(self) -> str:
        return f"join[{self.wait_for}]({self.strategy.label()})"


_NODE_KEYS = ("inputs", "map", "budget")


def node_data(node: Any) -> Any:
    """A node as written in a plan, in the form the node models read.

    A spec string or strategy instance becomes ``{strategy: ...}``; a strategy's own fields
    with ``kind`` (plus inputs/map/budget) are gathered under ``strategy``; joins and nodes
    already written ``{strategy: ...}`` pass unchanged.
    """
    if isinstance(node, (str, Strategy)):
        return {"strategy": node}
    if isinstance(node, Mapping) and "kind" in node and not {"join", "strategy"} & set(node):
        return {
            "strategy": {k: v for k, v in node.items() if k not in _NODE_KEYS},
            **{k: v for k, v in node.items() if k in _NODE_KEYS},
        }
    return node


def _node_tag(value: Any) -> str:
    if isinstance(value, Join) or (isinstance(value, dict) and "join" in value):
        return "join"
    return "strategy"


PlanNode = Annotated[
    Annotated[GraphNode, Tag("strategy")] | Annotated[Join, Tag("join")],
    Discriminator(_node_tag),
    BeforeValidator(node_data),
]
"""A node of a plan: a strategy node, or a join (recognised by its 'join' key)."""
