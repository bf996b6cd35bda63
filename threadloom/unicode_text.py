"""Text that cannot be encoded: lone surrogates, which is how Python carries undecodable bytes.

A command-line argument that is not valid UTF-8 reaches Python with its bad bytes as lone
surrogates ('\\udcff'), and a JSON string may spell one out ("\\ud800"). Such a string cannot be
encoded to UTF-8, so it must be found at the edges and replaced or refused there.
"""

from __future__ import annotations

import re
from typing import Any

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
REPLACEMENT = "\ufffd"
"""What a lone surrogate becomes: U+FFFD REPLACEMENT CHARACTER."""


def first_lone_surrogate(text: str) -> int | None:
    """The index of the first character that UTF-8 cannot encode, or None when there is none."""
    found = _LONE_SURROGATE.search(text)
    return found.start() if found else None


def replace_lone_surrogates(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a valid pair is kept as one char)."""
    if first_lone_surrogate(text) is None:
        return text
    # through UTF-16, a pair spelt as two code points becomes its one character and the
    # decoder's "replace" turns each unpaired one into U+FFFD
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def replace_lone_surrogates_in(value: Any) -> Any:
    """JSON-like data (dicts, lists, strings) with lone surrogates replaced in every string."""
    if isinstance(value, str):
        return replace_lone_surrogates(value)
    if isinstance(value, dict):
        return {
            replace_lone_surrogates_in(key): replace_lone_surrogates_in(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [replace_lone_surrogates_in(item) for item in value]
    return value
