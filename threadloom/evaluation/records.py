"""Bench results as JSONL, one line per (problem, strategy), appended as each one finishes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

logger = logging.getLogger(__name__)


class BenchRecord(BaseModel):
    """The outcome of one strategy on one problem."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    problem_id: str
    strategy: str
    """The strategy's label, e.g. 'best-of-n:n=8'."""
    seed: int
    answer: str | None = None
    reference: str | None = None
    correct: bool = False
    """The chosen answer passes the dataset's grader (with the reference)."""
    covered: bool = False
    """At least one candidate passes the grader (pass@k over all candidates)."""
    candidates: int = 0
    truncated: bool = False
    generations: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    verifier_calls: int = 0
    wall_time_s: float = 0.0
    error: str | None = None
    """Set when the problem failed; such records are retried on resume."""
    extra: dict[str, Any] = Field(default_factory=dict)

    def key(self) -> tuple[str, str, str, int]:
        return (self.dataset, self.problem_id, self.strategy, self.seed)


class ResultLog:
    """Append-only JSONL log of BenchRecords; reading it back tells what is already done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> list[BenchRecord]:
        """All complete records; a torn last line (a crash mid-write) is skipped."""
        if not self.path.exists():
            return []
        records: list[BenchRecord] = []
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    records.append(BenchRecord.model_validate(json.loads(line)))
                except (json.JSONDecodeError, ValidationError):
                    logger.warning("%s:%d is not a complete record; ignoring it", self.path, number)
        return records

    def done_keys(self) -> set[tuple[str, str, str, int]]:
        return {r.key() for r in self.read() if r.error is None}

    def _ends_mid_line(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"

    def append(self, record: BenchRecord) -> None:
        line = record.model_dump_json() + "\n"
        if self._ends_mid_line():
            # a crash tore the last line: start on a fresh one so this record stays readable
            line = "\n" + line
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
