"""`--param KEY=VALUE` on the command line: any SamplingParams field, values read as JSON."""

from __future__ import annotations

import json
from typing import Any

from threadloom.errors import ConfigError
from threadloom.types import SamplingParams

__all__ = ["parse_param_flags"]

_SET_BY_OTHER_FLAGS = {"temperature", "top_p", "max_tokens", "seed"}


def parse_param_flags(pairs: list[str]) -> dict[str, Any]:
    """Sampling fields from 'top_k=20', 'stop_token_ids=[2, 7]', 'structured_outputs={...}'.

    A value is read as JSON when it parses (numbers, lists, objects, true/false), else as a
    string. Fields with their own flag (--temperature, --top-p, --max-tokens, --seed) are
    refused here so that one setting has one place.

    Raises:
        ConfigError: a pair without '=', an unknown field, or one with its own flag.
    """
    fields: dict[str, Any] = {}
    known = set(SamplingParams.model_fields)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--param {pair!r}: write KEY=VALUE, e.g. --param top_k=20")
        if key in _SET_BY_OTHER_FLAGS:
            raise ConfigError(f"--param {key}: use --{key.replace('_', '-')} instead")
        if key not in known:
            raise ConfigError(
                f"--param {key}: not a sampling field; known: "
                f"{', '.join(sorted(known - _SET_BY_OTHER_FLAGS))}"
            )
        try:
            fields[key] = json.loads(raw)
        except ValueError:
            fields[key] = raw
    return fields
