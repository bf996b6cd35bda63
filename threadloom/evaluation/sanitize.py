"""Make model- and user-provided values safe to store: no lone surrogates in what is written."""

from __future__ import annotations

from typing import Any

from threadloom.unicode_text import replace_lone_surrogates as scrub_text

__all__ = ["scrub", "scrub_text"]


def scrub(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (dict keys, lists, tuples) as U+FFFD.

    Such characters come from non-UTF-8 bytes (argv, files) or lone JSON escapes; UTF-8 cannot
    encode them, so a record holding one could not be written.
    """
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub(v) for v in value)
    return value
