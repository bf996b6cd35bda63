"""Make model- and user-provided text safe to store: no lone surrogates in what is written."""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def scrub_text(text: str) -> str:
    """`text` with every surrogate code point replaced by U+FFFD.

    A Python str holds surrogates only where a string was decoded with `surrogateescape`
    (non-UTF-8 bytes from argv or a file) or built from a lone `\\udXXX` JSON escape; neither
    can be encoded as UTF-8, so they are replaced before a record is written.
    """
    return _SURROGATE.sub(REPLACEMENT, text)


def scrub(value: Any) -> Any:
    """`value` with `scrub_text` applied to every string inside it (dicts, lists, tuples)."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub(v) for v in value)
    return value
