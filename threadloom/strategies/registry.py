"""Strategy kinds by name, resolved lazily (plugins too), and the 'kind:key=value,...' spec
syntax."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from pydantic import BeforeValidator, SerializeAsAny, ValidationError

from threadloom.errors import ConfigError
from threadloom.registry import Registry, canonical_name
from threadloom.strategies.base import Strategy

STRATEGIES: dict[str, str] = {
    "single": "threadloom.strategies.single:Single",
    "best-of-n": "threadloom.strategies.best_of_n:BestOfN",
    "self-consistency": "threadloom.strategies.self_consistency:SelfConsistency",
    "adaptive-consistency": "threadloom.strategies.adaptive_consistency:AdaptiveConsistency",
    "confidence-vote": "threadloom.strategies.confidence_vote:ConfidenceVote",
    "first-finish": "threadloom.strategies.first_finish:FirstFinish",
    "skeleton-of-thought": "threadloom.strategies.skeleton:SkeletonOfThought",
    "threads": "threadloom.strategies.threads:Threads",
    "beam-search": "threadloom.strategies.beam:BeamSearch",
    "dvts": "threadloom.strategies.beam:DVTS",
    "a-star": "threadloom.strategies.astar:AStar",
    "particle-filtering": "threadloom.strategies.particles:ParticleFiltering",
    "weighted-majority": "threadloom.strategies.weighted_majority:WeightedMajority",
    "graph": "threadloom.graph.plan:Graph",
    "vote": "threadloom.strategies.reducers:Vote",
    "select": "threadloom.strategies.reducers:Select",
    "concat": "threadloom.strategies.reducers:Concat",
    "tournament": "threadloom.strategies.tournament:Tournament",
}
"""kind -> 'module:Class' of the built-in strategies. A new one registers here; nothing else
changes. Other packages add kinds through the 'threadloom.strategies' entry-point group."""

strategy_kinds: Registry[type[Strategy]] = Registry(
    "strategy", "strategies", "threadloom.strategies", STRATEGIES
)
"""Every strategy kind: the built-in ones and those of installed plugins."""


def canonical_kind(kind: str) -> str:
    """'Best_Of_N' -> 'best-of-n' (aliases are not resolved here)."""
    return canonical_name(kind)


_BUILTIN_KINDS = frozenset(strategy_kinds.builtin_kinds)
_CACHED_SPECS = 256
"""Spec strings whose parsed form is kept: a batch or a server builds the same few over and
over, once per run."""
_CACHED_SPEC_CHARS = 200
"""Longer specs are parsed every time, so requests cannot fill the cache with large strings."""


def strategy_class(kind: str) -> type[Strategy]:
    """The Strategy subclass of a kind (built-in or from a plugin).

    A built-in kind's class is looked up and checked once; a plugin's is resolved every time,
    as its package may be installed or removed while the process runs.

    Raises:
        ConfigError: an unknown kind, or a plugin whose target is not a Strategy of that kind.
    """
    name = strategy_kinds.canonical(kind)
    if name in _BUILTIN_KINDS:
        return _builtin_class(name)
    return _checked_class(kind)


@functools.cache
def _builtin_class(name: str) -> type[Strategy]:
    return _checked_class(name)


def _checked_class(kind: str) -> type[Strategy]:
    cls: object = strategy_kinds.load(kind)
    name = strategy_kinds.canonical(kind)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(
            f"the strategy {name!r} names {cls!r}, which is not a threadloom Strategy subclass; "
            "its package must register a Strategy class"
        )
    declared = cls.model_fields["kind"].default
    if declared != name:
        raise ConfigError(
            f"the strategy registered as {name!r} declares kind {declared!r}; its package must "
            "register it under the same name as its `kind` field"
        )
    return cls


def _parse_value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return raw


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'best-of-n:n=8,temperature=0.7' -> ('best-of-n', {'n': 8, 'temperature': 0.7})."""
    read = _read_spec if len(spec) <= _CACHED_SPEC_CHARS else _read_spec.__wrapped__
    kind, options = read(spec)
    return kind, dict(options)


@functools.lru_cache(maxsize=_CACHED_SPECS)
def _read_spec(spec: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """The spec's kind and options, as immutable values that a cache can share."""
    kind, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(
                f"cannot read {part!r} in strategy spec {spec!r}; write options as key=value, "
                "e.g. best-of-n:n=8,temperature=0.7"
            )
        options[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return canonical_kind(kind), tuple(options.items())


def make_strategy(spec: str | Strategy | dict[str, Any], **overrides: Any) -> Strategy:
    """Build a strategy from a spec string, a dict with 'kind', or an instance.

    `overrides` with a None value are ignored, so CLI flags left unset change nothing.
    """
    if isinstance(spec, Strategy):
        wanted = {k: v for k, v in overrides.items() if v is not None}
        if not wanted:
            return spec
        kind = spec.kind
        options = {name: getattr(spec, name) for name in spec.model_fields_set}
    elif isinstance(spec, dict):
        options = dict(spec)
        kind = str(options.pop("kind", ""))
    else:
        kind, options = parse_spec(spec)
    cls = strategy_class(kind)
    options.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(options) - set(cls.model_fields)
    if unknown:
        raise ConfigError(
            f"strategy {cls.model_fields['kind'].default!r} has no option "
            f"{', '.join(sorted(unknown))}; its options: "
            f"{', '.join(sorted(set(cls.model_fields) - {'kind'}))}"
        )
    try:
        return cls(**options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid options for strategy {kind!r}: {problems}") from None


def _coerce(value: Any) -> Any:
    if isinstance(value, (str, dict)) and not isinstance(value, Strategy):
        return make_strategy(value)
    return value


StrategyField = Annotated[SerializeAsAny[Strategy], BeforeValidator(_coerce)]
"""A config field holding a nested strategy, written as a spec string, a dict or an instance."""
