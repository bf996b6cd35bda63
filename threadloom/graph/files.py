"""Plan files: a strategy graph read from YAML or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from threadloom.errors import ConfigError, GraphError
from threadloom.graph.builder import graph_from_dict
from threadloom.graph.plan import Graph


def load_plan(path: str | Path) -> Graph:
    """Read a strategy graph from a YAML or JSON file.

    Raises:
        ConfigError: The file is missing or not UTF-8 text.
        GraphError: The file is not valid YAML/JSON, or the plan in it is not a valid graph.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"plan file not found: {source}")
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}); save the plan as UTF-8"
        ) from None
    try:
        data = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if source.suffix == ".json" else "YAML"
        raise GraphError(f"{source} is not valid {kind}: {exc}") from None
    return graph_from_dict(data)
