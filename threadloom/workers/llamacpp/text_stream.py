"""Incremental detokenization with stop strings: emits only text that no stop string can claim."""

from __future__ import annotations

import codecs


class StopAwareText:
    """Accumulates token bytes into text, cutting at the first stop string.

    Text that might be the beginning of a stop string is held back until it is decided, so a
    streamed delta never shows part of a stop string.
    """

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._stop = tuple(s for s in stop if s)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._emitted = 0
        self.stopped = False
        self.matched: str | None = None
        """The stop string that ended the text, if any."""

    @property
    def text(self) -> str:
        """All text decided so far (stop string excluded)."""
        return self._text

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; return the newly safe text (possibly empty)."""
        if self.stopped:
            return ""
        self._text += self._decoder.decode(piece)
        if self._stop:
            search_from = max(0, self._emitted - self._longest_stop)
            hits = [(i, s) for s in self._stop if (i := self._text.find(s, search_from)) >= 0]
            if hits:
                index, self.matched = min(hits)
                self._text = self._text[:index]
                self.stopped = True
                return self._release(len(self._text))
            return self._release(len(self._text) - self._held_back())
        return self._release(len(self._text))

    def finish(self) -> str:
        """Flush everything still held back (the sequence ended without a stop string)."""
        if not self.stopped:
            self._text += self._decoder.decode(b"", final=True)
        return self._release(len(self._text))

    def _held_back(self) -> int:
        text = self._text
        for length in range(min(self._longest_stop - 1, len(text)), 0, -1):
            tail = text[-length:]
            if any(s.startswith(tail) for s in self._stop):
                return length
        return 0

    def _release(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        delta = self._text[self._emitted : upto]
        self._emitted = upto
        return delta
