"""Settings and results of a sandboxed run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Isolation", "SandboxLimits", "SandboxResult", "Verdict"]

Isolation = Literal["bwrap", "guards"]
"""How untrusted code is contained.

``bwrap``: by the operating system (bubblewrap namespaces, seccomp, a capped tmpfs); the
default, and it fails closed (`SandboxUnavailable`) where it cannot be set up. ``guards``: by
Python-level guards and resource limits only, which code can get around; only when asked for.
"""


class SandboxLimits(BaseModel):
    """Limits on one sandboxed run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(10.0, gt=0)
    """Wall-clock limit; when it runs out everything the run started is killed."""
    cpu_s: int = Field(10, ge=1)
    """CPU seconds per process (RLIMIT_CPU); SIGXCPU, then SIGKILL a second later."""
    memory_mb: int = Field(512, ge=64)
    """Address-space limit per process (RLIMIT_AS) in MiB; past it allocations fail."""
    file_size_mb: int = Field(10, ge=0)
    """Largest file the code may write (RLIMIT_FSIZE), in MiB."""
    disk_mb: int = Field(32, ge=1)
    """Size of the sandbox's only writable file system (a tmpfs), in MiB (bwrap isolation)."""
    max_processes: int = Field(32, ge=1)
    """RLIMIT_NPROC under guards isolation (bwrap isolation allows no new processes at all)."""
    max_open_files: int = Field(64, ge=16)
    """RLIMIT_NOFILE: open file descriptors."""
    max_output_bytes: int = Field(64 * 1024, ge=1024)
    """Bytes kept from each of stdout and stderr; the rest is read and dropped."""


class Verdict(BaseModel):
    """What the judge process reported after running a problem's tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    passed: bool
    """The tests returned without an error."""
    detail: str = Field(max_length=4000)
    """"passed", or why not."""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did."""

    returncode: int
    """Exit status; negative when a signal ended the run (-9 after the wall-clock kill)."""
    timed_out: bool
    """The wall-clock limit ran out and the run was killed."""
    stdout: str
    stderr: str
    truncated: bool
    """Output went past `max_output_bytes` on stdout or stderr and was cut."""
    killed_by_signal: int | None
    """The signal that ended the run, if one did."""
    duration_s: float
    verdict: Verdict | None = None
    """The judge's verdict when tests were run (None for a plain program, or no verdict)."""

    @property
    def ok(self) -> bool:
        """The program exited with status 0 within its time limit."""
        return self.returncode == 0 and not self.timed_out
