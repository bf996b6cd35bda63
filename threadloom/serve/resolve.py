"""From a request to a run: which strategy, graph and model a model id names, under the caps.

A model id is a strategy spec (`best-of-n:n=8`), a named graph (a plan file's stem in
`--graph-dir`) or the served model's own name (one plain generation); a spec or graph may end
in `@model` naming the served model. `extra_body={"threadloom": {"strategy": ...}}` overrides
the id's strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threadloom.errors import ConfigError
from threadloom.orchestrator.plan import load_plan
from threadloom.serve.config import ServeConfig
from threadloom.serve.http_errors import ApiError
from threadloom.strategies.base import Strategy
from threadloom.strategies.registry import STRATEGIES, make_strategy, parse_spec

SERVED_STRATEGIES = tuple(
    kind for kind in STRATEGIES if kind not in ("graph", "vote", "select", "concat")
)
"""Strategy kinds a model id may name (reducers need upstream inputs; graphs come from files)."""
PLAN_SUFFIXES = (".yaml", ".yml", ".json")
SAMPLE_COUNT_OPTIONS = frozenset({"n", "max_n", "k", "width", "max_threads", "wave"})
"""Strategy options that set how many samples run (capped by `--max-n`)."""


@dataclass(frozen=True)
class ResolvedModel:
    """What a model id asks for."""

    strategy: Strategy
    family: str
    """Bounded name for metrics: the strategy kind, or 'graph:<name>'."""
    plain: bool
    """True for the served model's own name: one ordinary generation per choice."""


class Catalog:
    """The model ids this server answers to: the served model, strategies and named graphs.

    Args:
        model_name: The served model's name.
        graph_dir: Folder of plan files served as named graphs (read once, at start).
    """

    def __init__(self, model_name: str, graph_dir: Path | None = None) -> None:
        self.model_name = model_name
        self.graphs: dict[str, Strategy] = {}
        if graph_dir is not None:
            if not graph_dir.is_dir():
                raise ConfigError(f"--graph-dir {graph_dir} is not a folder of plan files")
            for path in sorted(graph_dir.iterdir()):
                if path.suffix in PLAN_SUFFIXES and path.stem not in self.graphs:
                    self.graphs[path.stem] = load_plan(path)

    def model_ids(self) -> list[str]:
        """Every id `/v1/models` lists."""
        return [self.model_name, *SERVED_STRATEGIES, *self.graphs]

    def resolve(self, model: str, override: str | dict[str, Any] | None, n: int) -> ResolvedModel:
        """The strategy for a request's `model` (and `threadloom.strategy`, which wins).

        Raises:
            ApiError: 404 for an id this server does not serve, 400 for bad options.
        """
        spec, alias = _split_alias(model)
        if alias is not None and alias != self.model_name:
            raise ApiError(
                404,
                f"model {alias!r} is not served here; this server serves {self.model_name!r} "
                f"(write e.g. best-of-n:n=8@{self.model_name})",
                param="model",
                code="model_not_found",
            )
        if override is not None:
            return self._strategy(override, param="threadloom.strategy")
        if spec in ("", self.model_name):
            return self._plain(n)
        return self._strategy(spec, param="model")

    def _plain(self, n: int) -> ResolvedModel:
        # n plain samples are n independent generations: best-of-n returns them all
        strategy = make_strategy("single") if n == 1 else make_strategy("best-of-n", n=n)
        return ResolvedModel(strategy=strategy, family="plain", plain=True)

    def _strategy(self, spec: str | dict[str, Any], *, param: str) -> ResolvedModel:
        if isinstance(spec, str) and spec in self.graphs:
            return ResolvedModel(self.graphs[spec], family=f"graph:{spec}", plain=False)
        kind = parse_spec(spec)[0] if isinstance(spec, str) else str(spec.get("kind", ""))
        if kind not in SERVED_STRATEGIES:
            raise ApiError(
                404,
                f"model {spec!r} is not served here; use {self.model_name!r}, a strategy spec "
                f"such as 'best-of-n:n=8' (strategies: {', '.join(SERVED_STRATEGIES)})"
                + (f" or a named graph ({', '.join(self.graphs)})" if self.graphs else ""),
                param=param,
                code="model_not_found",
            )
        try:
            strategy = make_strategy(spec)
        except ConfigError as exc:
            raise ApiError(400, str(exc), param=param) from None
        return ResolvedModel(strategy=strategy, family=kind, plain=False)


def _split_alias(model: str) -> tuple[str, str | None]:
    spec, at, alias = model.rpartition("@")
    if not at:
        return model.strip(), None
    return spec.strip(), alias.strip()


def check_caps(strategy: Strategy, n: int, config: ServeConfig) -> None:
    """Refuse a request that asks for more samples than the server allows.

    Raises:
        ApiError: 400 naming the option over the cap.
    """
    if n > config.max_n:
        raise ApiError(
            400, f"n={n} is over this server's cap of {config.max_n}; ask for fewer choices",
            param="n", code="over_cap",
        )
    for path, value in _sample_counts(strategy.model_dump()):
        if value > config.max_n:
            raise ApiError(
                400,
                f"strategy option {path}={value} is over this server's cap of {config.max_n} "
                "samples; ask for fewer",
                param="model", code="over_cap",
            )


def _sample_counts(data: Any, path: str = "") -> list[tuple[str, int]]:
    """Every integer option named like a sample count, anywhere in a (nested) strategy."""
    found: list[tuple[str, int]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if key in SAMPLE_COUNT_OPTIONS and isinstance(
                value, int
            ) and not isinstance(value, bool):
                found.append((where, value))
            else:
                found.extend(_sample_counts(value, where))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.extend(_sample_counts(value, f"{path}[{index}]"))
    return found
