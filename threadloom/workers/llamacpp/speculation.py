"""Speculative decoding that stays on only while it pays: prompt-lookup drafts and a controller.

Two backend-independent parts, used by the llama.cpp engine and usable by any worker that can
verify drafted tokens:

- `PromptLookup` proposes draft tokens for a sequence by finding the most recent earlier
  occurrence of its last few tokens (an n-gram) in its own history (prompt plus generated text)
  and proposing what followed it. Copy-heavy tasks (rewrite this code, quote the passage,
  fill in the form) are full of such repeats.
- `DraftPacer` sizes one sequence's next draft by how its last one fared, so a sequence writing
  free-form text stops paying for drafts that are rejected while one copying a passage keeps
  full drafts.
- `SpeculationController` decides, step by step, whether to speculate. In "on" and "off" it
  only measures. In "adaptive" it runs in the mode that has measured better, probes the other
  mode for one window every so often (less often each time a probe confirms the choice, and
  soon after the current mode's goodput jumps or drops, a sign that the traffic changed), and
  switches on when speculation beats plain decoding by a margin, and off once it costs half
  that margin (hysteresis that leans to the cheaper mode).

Goodput is completion tokens emitted per second of decode time. Because absolute throughput
moves with the traffic (more live sequences, more tokens per second), a probe is compared with
the window of the other mode just before it, and the decision rests on a smoothed ratio of
those adjacent measurements rather than on two long-run averages taken under different loads.
"""

from __future__ import annotations

import math
import threading
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

SpeculationMode = Literal["off", "on", "adaptive"]
SPECULATION_MODES: tuple[SpeculationMode, ...] = ("off", "on", "adaptive")


class SpeculationConfig(BaseModel):
    """How a worker speculates: the mode, the drafts, and the adaptive policy's windows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: SpeculationMode = "adaptive"
    """off: never draft; on: always draft; adaptive: draft while it measures faster."""
    num_pred_tokens: int = Field(8, ge=1, le=64)
    """Most tokens drafted for one sequence in one step."""
    max_ngram_size: int = Field(3, ge=1, le=16)
    """Longest n-gram of a sequence's tail looked up in its history (longest tried first)."""
    min_ngram_size: int = Field(2, ge=1, le=16)
    """Shortest n-gram worth a draft (single-token matches mostly draft noise)."""
    window_steps: int = Field(16, ge=1)
    """Decode steps in one measurement window."""
    probe_every: int = Field(4, ge=1)
    """Windows in the better mode before the other mode is probed again (the first interval)."""
    max_probe_every: int = Field(32, ge=1)
    """The interval doubles each time a probe confirms the current mode, up to this many."""
    change_threshold: float = Field(0.5, gt=0.0)
    """A window whose goodput moves this fraction away from the running average of the windows
    since the last probe marks a change in traffic: the other mode is probed two windows on."""
    smoothing: float = Field(0.5, gt=0.0, le=1.0)
    """Weight of the newest measurement in the exponentially weighted averages."""
    hysteresis: float = Field(0.1, ge=0.0)
    """Switch speculation on only when it beats plain decoding by this fraction; switch it off
    once it is slower by half of it."""

    @model_validator(mode="after")
    def _check(self) -> SpeculationConfig:
        if self.min_ngram_size > self.max_ngram_size:
            raise ValueError("min_ngram_size must not exceed max_ngram_size")
        if self.max_probe_every < self.probe_every:
            raise ValueError("max_probe_every must be at least probe_every")
        return self


class SpeculationState(BaseModel):
    """What a worker's speculation is doing and what it has measured."""

    model_config = ConfigDict(frozen=True)

    mode: SpeculationMode
    """The configured mode."""
    preferred: Literal["on", "off"]
    """The mode that measured better (the one run between probes)."""
    speculating: bool
    """Whether the worker drafts in the current window (the preferred mode, or a probe)."""
    probing: bool
    """True while adaptive mode measures the mode it does not prefer."""
    goodput_on: float | None
    """Smoothed completion tokens per second of decode time with speculation (None: unmeasured)."""
    goodput_off: float | None
    """The same without speculation."""
    speedup: float | None
    """Smoothed ratio of goodput with speculation to goodput without, from adjacent windows."""
    drafted_tokens: int
    accepted_tokens: int
    acceptance_rate: float | None
    """Accepted over drafted tokens."""
    mean_accepted_length: float | None
    """Drafted tokens accepted per verification (one sequence, one step, one draft)."""
    verifications: int
    steps_on: int
    """Measured decode steps with speculation."""
    steps_off: int
    """Measured decode steps without."""
    probes: int
    switches: int
    last_decision: str
    """Why the controller is in its current mode."""


class PromptLookup:
    """Draft tokens from a sequence's own history (prompt-lookup decoding).

    The last `n` tokens (n from `max_ngram_size` down to `min_ngram_size`) are searched for in
    the earlier history; the tokens that followed the most recent earlier occurrence are the
    draft. A deterministic drafter: the same history always gives the same draft.
    """

    def __init__(self, max_ngram_size: int = 3, min_ngram_size: int = 2) -> None:
        self.max_ngram_size = max_ngram_size
        self.min_ngram_size = min_ngram_size

    def propose(self, history: np.ndarray, limit: int) -> list[int]:
        """Up to `limit` tokens likely to follow `history` (1-D integer array); maybe none."""
        length = int(history.shape[0])
        if limit <= 0 or length < 2:
            return []
        for n in range(min(self.max_ngram_size, length - 1), self.min_ngram_size - 1, -1):
            # candidate starts 0..length-n-1: an occurrence that is followed by at least a token
            span = length - n
            matches = history[:span] == history[length - n]
            for k in range(1, n):
                matches &= history[k : span + k] == history[length - n + k]
            found = np.flatnonzero(matches)
            if found.size:
                start = int(found[-1]) + n
                return [int(t) for t in history[start : start + limit]]
        return []


class DraftPacer:
    """How many tokens one sequence drafts next.

    The first draft holds `first_room` tokens. A fully accepted draft doubles the room (up to
    the configured most); a partly accepted one sets it to twice what was accepted (a copied
    passage that changed one word keeps long drafts, text that matched by chance gets short
    ones); a fully rejected one leaves one token of room and pauses drafting for a few steps,
    twice as many for each rejection in a row (up to `most_pause`). Drafts are verified
    exactly, so pacing changes the cost of speculation, never the text.
    """

    __slots__ = ("_backoff", "_pause", "_room", "most_pause")

    def __init__(self, first_room: int = 2, most_pause: int = 32) -> None:
        self.most_pause = most_pause
        self._room = first_room
        self._pause = 0
        self._backoff = 0

    def room(self, most: int) -> int:
        """Tokens the next draft may hold (0 while paused); call once per decode step."""
        if self._pause > 0:
            self._pause -= 1
            return 0
        return min(most, self._room)

    def verified(self, drafted: int, accepted: int, most: int) -> None:
        """Account a verified draft of `drafted` tokens of which `accepted` were taken."""
        if drafted <= 0:
            return
        if accepted >= drafted:
            self._room = min(most, 2 * max(self._room, drafted))
            self._backoff = 0
        elif accepted > 0:
            self._room = min(most, 2 * accepted)
            self._backoff = 0
        else:
            self._room = 1
            self._backoff = min(self.most_pause, max(1, 2 * self._backoff))
            self._pause = self._backoff


_STALL_FACTOR = 4.0
"""A step slower than this many times its window's median step counts as that (a stall of the
machine, e.g. another process taking the cores, is not a property of either mode)."""


class _Window:
    __slots__ = ("seconds", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds: list[float] = []

    def goodput(self) -> float:
        times = np.asarray(self.seconds)
        total = float(np.minimum(times, _STALL_FACTOR * float(np.median(times))).sum())
        return self.tokens / total if total > 0.0 else 0.0


class SpeculationController:
    """Chooses, for every decode step, whether to speculate, and keeps the measurements.

    Call `speculating` before a step and `record` after it. Thread-safe: `state` may be read
    from any thread while the decode loop records.
    """

    def __init__(self, config: SpeculationConfig | None = None) -> None:
        self.config = config or SpeculationConfig()
        self._lock = threading.Lock()
        mode = self.config.mode
        self._preferred = mode == "on"
        """The mode run between probes (adaptive starts with plain decoding)."""
        self._active = self._preferred
        self._probing = False
        self._pending_probe: tuple[bool, float, float | None] | None = None
        """(probed mode, its goodput, the window before it) until the window after it closes."""
        self._window = _Window()
        self._last_goodput: dict[bool, float] = {}
        """Goodput of the latest completed window of each mode."""
        self._goodput: dict[bool, float] = {}
        self._log_speedup: float | None = None
        self._windows_since_probe = 0
        self._probe_every = self.config.probe_every
        self._baseline: float | None = None
        """Smoothed goodput of the preferred mode's windows since the last probe."""
        self._steps = {True: 0, False: 0}
        self._drafted = 0
        self._accepted = 0
        self._verifications = 0
        self._probes = 0
        self._switches = 0
        self._reason = {
            "off": "speculation is off",
            "on": "speculation is on",
            "adaptive": "measuring plain decoding first",
        }[mode]

    @property
    def speculating(self) -> bool:
        """Whether the next step should draft and verify."""
        return self._active

    def record(
        self,
        *,
        speculative: bool,
        tokens: int,
        seconds: float,
        drafted: int = 0,
        accepted: int = 0,
        verifications: int = 0,
        measured: bool = True,
    ) -> None:
        """Account one step.

        Args:
            speculative: Whether the step ran with speculation on.
            tokens: Completion tokens the step emitted, over all sequences.
            seconds: Wall time of the step (drafting, forward pass, sampling).
            drafted: Tokens drafted in the step.
            accepted: Drafted tokens accepted.
            verifications: Sequences whose draft was verified in the step.
            measured: False for steps whose time is not decode time (prompt prefill in the
                batch): they count drafts but not goodput.
        """
        with self._lock:
            self._drafted += drafted
            self._accepted += accepted
            self._verifications += verifications
            if not measured or speculative != self._active:
                return
            self._steps[speculative] += 1
            window = self._window
            window.tokens += tokens
            window.seconds.append(seconds)
            if len(window.seconds) >= self.config.window_steps:
                self._close_window()

    def _close_window(self) -> None:
        window, self._window = self._window, _Window()
        mode = self._active
        goodput = window.goodput()
        if goodput <= 0.0:
            return
        alpha = self.config.smoothing
        previous = self._goodput.get(mode)
        smoothed = goodput if previous is None else alpha * goodput + (1 - alpha) * previous
        self._goodput[mode] = smoothed
        if self._probing:
            # judged once the window after it closes: against the windows on both sides, so a
            # steady drift in throughput (a batch whose sequences finish one by one) cancels
            self._probing = False
            self._active = self._preferred
            self._pending_probe = (mode, goodput, self._last_goodput.get(not mode))
        elif self._pending_probe is not None:
            probed, probe_goodput, before = self._pending_probe
            self._pending_probe = None
            reference = goodput if before is None else math.sqrt(before * goodput)
            self._judge_probe(probed, probe_goodput, reference)
        elif self.config.mode == "adaptive":
            self._windows_since_probe += 1
            baseline = self._baseline
            self._baseline = (
                goodput if baseline is None else alpha * goodput + (1 - alpha) * baseline
            )
            bound = 1.0 + self.config.change_threshold
            changed = baseline is not None and not 1.0 / bound <= goodput / baseline <= bound
            if changed:
                # probe after one more window, so that the probe is compared with a window
                # wholly of the new traffic
                self._probe_every = self.config.probe_every
                self._windows_since_probe = self._probe_every - 1
            elif (not mode) not in self._last_goodput or (
                self._windows_since_probe >= self._probe_every
            ):
                self._probing = True
                self._probes += 1
                self._active = not mode
        self._last_goodput[mode] = goodput

    def _judge_probe(self, probed: bool, goodput: float, reference: float) -> None:
        self._windows_since_probe = 0
        self._baseline = None
        self._active = self._preferred
        if reference <= 0.0 or goodput <= 0.0:
            return
        on, off = (goodput, reference) if probed else (reference, goodput)
        sample = math.log(on / off)
        alpha = self.config.smoothing
        previous = self._log_speedup
        self._log_speedup = sample if previous is None else alpha * sample + (1 - alpha) * previous
        speedup = math.exp(self._log_speedup)
        # on must beat off by the whole margin; off takes over once speculation costs half of
        # it: drafts are extra work, so in doubt the controller leans to plain decoding
        margin = 1.0 + self.config.hysteresis
        half_margin = 1.0 + self.config.hysteresis / 2
        better = speedup > margin if not self._preferred else speedup * half_margin >= 1.0
        if better == self._preferred:
            self._probe_every = min(2 * self._probe_every, self.config.max_probe_every)
            verdict = "on" if better else "off"
            self._reason = f"kept {verdict}: speculation measured {speedup:.2f}x plain decoding"
            return
        self._preferred = better
        self._active = better
        self._switches += 1
        self._probe_every = self.config.probe_every
        self._reason = (
            f"switched {'on' if better else 'off'}: speculation measured {speedup:.2f}x "
            "plain decoding"
        )

    def state(self) -> SpeculationState:
        with self._lock:
            drafted, accepted, checks = self._drafted, self._accepted, self._verifications
            log_speedup = self._log_speedup
            return SpeculationState(
                mode=self.config.mode,
                preferred="on" if self._preferred else "off",
                speculating=self._active,
                probing=self._probing,
                goodput_on=_rounded(self._goodput.get(True)),
                goodput_off=_rounded(self._goodput.get(False)),
                speedup=None if log_speedup is None else round(math.exp(log_speedup), 3),
                drafted_tokens=drafted,
                accepted_tokens=accepted,
                acceptance_rate=round(accepted / drafted, 3) if drafted else None,
                mean_accepted_length=round(accepted / checks, 3) if checks else None,
                verifications=checks,
                steps_on=self._steps[True],
                steps_off=self._steps[False],
                probes=self._probes,
                switches=self._switches,
                last_decision=self._reason,
            )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
