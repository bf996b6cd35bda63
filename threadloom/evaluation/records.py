"""Bench results as JSONL, one line per (problem, strategy), appended as each one finishes."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from threadloom.errors import ConfigError
from threadloom.evaluation.fingerprint import RunFingerprint
from threadloom.evaluation.sanitize import scrub

logger = logging.getLogger(__name__)


class BenchRecord(BaseModel):
    """The outcome of one strategy on one problem."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

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
    """Set when the problem failed; such records count as wrong and are retried on resume."""
    fingerprint: RunFingerprint | None = None
    """What produced the record; None only in files written before fingerprints existed."""
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        # model text and dataset fields may hold lone surrogates, which UTF-8 cannot encode
        return scrub(value)

    def key(self) -> tuple[str, str, str, int]:
        return (self.dataset, self.problem_id, self.strategy, self.seed)


class ResultLog:
    """Append-only JSONL log of BenchRecords; reading it back tells what is already done.

    Writers hold `lock()`, an exclusive `flock` on a sidecar `<name>.lock` file, so two benches
    never work through the same pending problems. The lock file stays in place between runs.
    """

    def __init__(self, path: Path) -> None:
        if path.is_dir():
            raise ConfigError(
                f"the results path {path} is a directory; name a .jsonl file, "
                f"e.g. {path / 'results.jsonl'}"
            )
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the directory for {path}: {exc}") from None
        self._lock_handle: IO[str] | None = None
        self._lock_depth = 0

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the writer lock while the block runs; re-entrant within this object.

        Raises:
            ConfigError: Another writer (another process, or another ResultLog on the same
                file) holds the lock.
        """
        if self._lock_handle is None:
            self._lock_handle = self._acquire()
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                handle, self._lock_handle = self._lock_handle, None
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()

    def _acquire(self) -> IO[str]:
        try:
            handle = self.lock_path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot create the lock file {self.lock_path}: {exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ConfigError(
                f"{self.path} is being written by another bench (process {holder} holds "
                f"{self.lock_path}); wait for it to finish, or pass another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def read(self) -> list[BenchRecord]:
        """All complete records; a torn line (a crash mid-write) is skipped with a warning.

        Lines are decoded one by one, replacing invalid UTF-8, so a line cut inside a
        multi-byte character is skipped like any other incomplete line.
        """
        if not self.path.exists():
            return []
        records: list[BenchRecord] = []
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8", errors="replace")
                    records.append(BenchRecord.model_validate(json.loads(line)))
                except (ValueError, RecursionError, ValidationError):
                    logger.warning(
                        "%s:%d is not a complete record (a write cut short?); skipping it",
                        self.path,
                        number,
                    )
        return records

    def done_keys(self) -> set[tuple[str, str, str, int]]:
        return {r.key() for r in self.read() if r.error is None}

    def check_fingerprint(self, fingerprint: RunFingerprint) -> None:
        """Refuse to add records of `fingerprint` to a log written by another configuration.

        Raises:
            ConfigError: Some records carry another fingerprint, or none; the message lists
                what differs.
        """
        others: dict[str, RunFingerprint] = {}
        unmarked = 0
        for record in self.read():
            if record.fingerprint is None:
                unmarked += 1
            elif record.fingerprint != fingerprint:
                others[record.fingerprint.digest()] = record.fingerprint
        hint = (
            "Pass --new-set to keep this run's results in a separate file beside it, or "
            "another --out"
        )
        if unmarked:
            raise ConfigError(
                f"{self.path} holds {unmarked} records without a fingerprint (written before "
                f"records named their model and settings), so they cannot be trusted to match "
                f"this run. {hint}."
            )
        if others:
            found = "; ".join(
                f"set {digest}: " + ", ".join(other.differences(fingerprint))
                for digest, other in others.items()
            )
            raise ConfigError(
                f"{self.path} holds results of another configuration (stored → this run): "
                f"{found}. {hint}."
            )

    def _ends_mid_line(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"

    def append(self, record: BenchRecord) -> None:
        """Append one record as a line, flushed and fsynced before returning."""
        line = record.model_dump_json().encode("utf-8") + b"\n"
        if self._ends_mid_line():
            # a crash tore the last line: start on a fresh one so this record stays readable
            line = b"\n" + line
        created = not self.path.exists()
        with self.path.open("ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_directory(self.path.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist a new directory entry, so a fresh log survives a power loss with its records."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def separate_set_path(path: Path, fingerprint: RunFingerprint) -> Path:
    """Where `--new-set` keeps a run's results: beside `path`, named by the fingerprint."""
    return path.with_name(f"{path.stem}.{fingerprint.digest()[:8]}{path.suffix or '.jsonl'}")
