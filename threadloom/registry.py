"""One registry helper for the named kinds of strategies, verifiers and workers.

Each registry maps a kind to the text ``"module:attribute"`` and imports it only when asked, so
listing or validating kinds never loads a heavy backend. Third-party packages add kinds through
an entry-point group (``threadloom.strategies``, ``threadloom.verifiers``,
``threadloom.workers``); the entry point's value is the same ``"module:attribute"`` text::

    [project.entry-points."threadloom.strategies"]
    shortest-of-n = "my_package.strategies:ShortestOfN"

Built-in kinds win over a plugin of the same name, and the first plugin to claim a name wins
over later ones; both conflicts are logged.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from threadloom.errors import ConfigError

__all__ = ["BUILTIN_ORIGIN", "Entry", "KindInfo", "Registry", "canonical_name"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUILTIN_ORIGIN = "threadloom"
"""The origin of a kind that ships with threadloom (plugins show their distribution's name)."""


def canonical_name(kind: str) -> str:
    """How kinds are compared: 'Best_Of_N ' and 'best-of-n' name the same kind."""
    return kind.strip().lower().replace("_", "-")


@dataclass(frozen=True)
class Entry:
    """Where a kind lives, and what the listing says about it without importing it.

    Attributes:
        target: ``"module:attribute"`` (the attribute may be dotted).
        summary: One line for the listing; empty means "read it from the target".
        usage: How the kind is written on the command line (default: the kind itself).
        requires: A module that must be importable for the kind to work (e.g. ``"vllm"``).
    """

    target: str
    summary: str = ""
    usage: str = ""
    requires: str | None = None


class KindInfo(BaseModel):
    """One row of a registry's listing (``threadloom strategies --json`` prints these)."""

    model_config = ConfigDict(frozen=True)

    kind: str
    """The canonical name."""
    target: str
    """``"module:attribute"`` the kind resolves to."""
    origin: str
    """``"threadloom"``, or the distribution of the plugin that added it."""
    summary: str
    """What it does, in one line."""
    usage: str
    """How it is written on the command line or in a plan."""
    aliases: list[str]
    """Other names accepted for it."""
    available: bool
    """Whether its module (and any module it requires) can be imported here."""


@dataclass(frozen=True)
class _Found:
    kind: str
    entry: Entry
    origin: str


class Registry(Generic[T]):
    """Named kinds of one sort (strategy, verifier, worker), resolved lazily.

    Args:
        what: The sort, as messages name it ("strategy").
        plural: Its plural ("strategies").
        group: The entry-point group plugins register in ("threadloom.strategies").
        builtins: kind -> ``"module:attribute"`` or an `Entry`, in listing order.
        aliases: other name -> kind.
        example: A hint after the unknown-kind message ("e.g. best-of-n:n=8").
        normalize: How names are compared (default `canonical_name`).
    """

    def __init__(
        self,
        what: str,
        plural: str,
        group: str,
        builtins: Mapping[str, str | Entry],
        *,
        aliases: Mapping[str, str] | None = None,
        example: str = "",
        normalize: Callable[[str], str] = canonical_name,
    ) -> None:
        self.what = what
        self.plural = plural
        self.group = group
        self.example = example
        self._normalize = normalize
        self._builtins = {
            normalize(kind): entry if isinstance(entry, Entry) else Entry(entry)
            for kind, entry in builtins.items()
        }
        self._aliases = {
            normalize(alias): normalize(kind) for alias, kind in (aliases or {}).items()
        }

    def canonical(self, kind: str) -> str:
        """The kind a name (or alias) stands for; unknown names come back normalised."""
        name = self._normalize(kind)
        return self._aliases.get(name, name)

    @property
    def builtin_kinds(self) -> tuple[str, ...]:
        """The kinds that ship with threadloom, in listing order."""
        return tuple(self._builtins)

    def kinds(self) -> list[str]:
        """Every kind: the built-in ones in order, then the plugins' sorted by name."""
        plugins = sorted(found.kind for found in self._plugins())
        return [*self._builtins, *plugins]

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, str) and self._find(self.canonical(kind)) is not None

    def load(self, kind: str) -> T:
        """Import and return what `kind` names.

        Raises:
            ConfigError: an unknown kind (the message lists the known ones), or a plugin that
                cannot be imported or whose entry point names nothing.
        """
        name = self.canonical(kind)
        found = self._find(name)
        if found is None:
            raise ConfigError(
                f"unknown {self.what} {kind!r}; valid {self.plural}: "
                f"{', '.join(sorted(self.kinds()))}"
                + (f" ({self.example})" if self.example else "")
            )
        if found.origin == BUILTIN_ORIGIN:
            loaded: T = _import_target(found.entry.target)
            return loaded
        try:
            loaded = _import_target(found.entry.target)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"the {self.what} {name!r} from the package {found.origin!r} cannot be loaded "
                f"({found.entry.target}: {type(exc).__name__}: {exc}); reinstall or upgrade that "
                "package, or uninstall it"
            ) from None
        return loaded

    def build(self, kind: str, argument: str = "", **options: Any) -> Any:
        """Make an instance of `kind` from a spec's argument (``'kind:argument'``) and options.

        The target is used by this rule, which plugins follow:

        - a class with a ``from_spec(argument, **options)`` classmethod: that is called;
        - another class: called with the options, and an argument is refused;
        - a function: called as ``function(argument, **options)``.

        Raises:
            ConfigError: unknown kind, or an argument the kind does not take.
        """
        target: Any = self.load(kind)
        if isinstance(target, type):
            from_spec = getattr(target, "from_spec", None)
            if callable(from_spec):
                return from_spec(argument, **options)
            if argument:
                raise ConfigError(
                    f"the {self.what} {self.canonical(kind)!r} takes no argument "
                    f"(got {argument!r}); write it as {self.canonical(kind)!r}"
                )
            return target(**options)
        return target(argument, **options)

    def describe(self) -> list[KindInfo]:
        """One row per kind, for the command line's listings. Imports a target only when its
        summary is not written down, and reports a failed import as not available."""
        aliases: dict[str, list[str]] = {}
        for alias, kind in self._aliases.items():
            aliases.setdefault(kind, []).append(alias)
        rows = []
        for found in self._all():
            entry = found.entry
            available = _importable(entry.target.partition(":")[0]) and (
                entry.requires is None or _importable(entry.requires)
            )
            summary = entry.summary
            if not summary and available:
                try:
                    summary = _summary_of(_import_target(entry.target))
                except Exception as exc:  # a listing shows a broken plugin, it does not fail
                    available = False
                    summary = f"cannot be imported: {type(exc).__name__}: {exc}"
            rows.append(
                KindInfo(
                    kind=found.kind,
                    target=entry.target,
                    origin=found.origin,
                    summary=summary,
                    usage=entry.usage or found.kind,
                    aliases=sorted(aliases.get(found.kind, [])),
                    available=available,
                )
            )
        return rows

    def _find(self, name: str) -> _Found | None:
        entry = self._builtins.get(name)
        if entry is not None:
            return _Found(name, entry, BUILTIN_ORIGIN)
        return next((found for found in self._plugins() if found.kind == name), None)

    def _all(self) -> Iterator[_Found]:
        for kind, entry in self._builtins.items():
            yield _Found(kind, entry, BUILTIN_ORIGIN)
        yield from sorted(self._plugins(), key=lambda found: found.kind)

    def _plugins(self) -> list[_Found]:
        """The group's entry points, read afresh each time (a package installed meanwhile
        counts), minus names that are taken or cannot be written in a spec."""
        found: dict[str, _Found] = {}
        for point in metadata.entry_points(group=self.group):
            origin = point.dist.name if point.dist is not None else "an unnamed package"
            name = self.canonical(point.name)
            if not name or any(c in name for c in ":#,= \t"):
                logger.warning(
                    "ignored %s plugin %r from %s: a kind name cannot hold ':', '#', ',', '=' "
                    "or spaces",
                    self.what,
                    point.name,
                    origin,
                )
                continue
            target = f"{point.module}:{point.attr}"
            if name in found and found[name].entry.target == target:
                continue  # the same distribution seen twice on the path
            if name in self._builtins or name in self._aliases or name in found:
                owner = found[name].origin if name in found else BUILTIN_ORIGIN
                logger.warning(
                    "ignored %s plugin %r from %s: the name is taken by %s",
                    self.what,
                    point.name,
                    origin,
                    owner,
                )
                continue
            found[name] = _Found(name, Entry(target), origin)
        return list(found.values())


def _import_target(target: str) -> Any:
    module, _, attribute = target.partition(":")
    value: Any = import_module(module)
    for part in filter(None, attribute.split(".")):
        value = getattr(value, part)
    return value


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def _summary_of(target: Any) -> str:
    summary = getattr(target, "summary", None)
    if isinstance(summary, str) and summary:
        return summary
    doc = (getattr(target, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""
