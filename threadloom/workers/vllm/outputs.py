"""vLLM's outputs in threadloom's types: completions, log-probabilities, counters, errors.

Pure Python on duck-typed vLLM objects (a `RequestOutput` in delta mode, its `Logprob` maps,
the scheduler's stats), so none of it imports vLLM.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict

from threadloom.errors import ConfigError, WorkerDead, WorkerError
from threadloom.types import Completion, FinishReason, GenerationRequest, TokenLogprob
from threadloom.workers.core import CompletionBuilder
from threadloom.workers.vllm.config import VLLMConfig


class VLLMSpeculationStats(BaseModel):
    """A VLLMWorker's speculative-decoding counters.

    `drafted_tokens`, `accepted_tokens` and `verifications` count every verification step the
    engine ran (aborted requests included), as vLLM's scheduler reports them per step; the
    `requests_*` fields add up the per-request counters vLLM reports when a request finishes.
    """

    model_config = ConfigDict(frozen=True)

    enabled: bool
    method: str | None
    num_speculative_tokens: int | None
    drafted_tokens: int
    """Tokens proposed, over every verification step the engine ran."""
    accepted_tokens: int
    """Proposed tokens the target model accepted."""
    verifications: int
    """Drafts verified (one sequence, one step)."""
    acceptance_rate: float | None
    """accepted_tokens / drafted_tokens."""
    mean_accepted_length: float | None
    """Drafted tokens accepted per verification (vLLM's 'mean acceptance length' is this + 1,
    counting the token the target model adds itself)."""
    requests: int
    """Finished requests that reported per-request counters."""
    requests_drafted_tokens: int
    requests_accepted_tokens: int


class WorkerCounters:
    """Worker-wide counters, written from the engine's thread and from callers' loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(
            (
                "requests", "aborted", "prompt_tokens", "cached_prompt_tokens",
                "completion_tokens", "drafted", "accepted", "drafts", "req_spec",
                "req_drafted", "req_accepted", "cache_queries", "cache_hits",
            ),
            0,
        )  # fmt: skip

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._values[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def record_engine(self, scheduler_stats: Any) -> None:
        """One engine step as the scheduler reports it (an unstable vLLM interface: read
        defensively)."""
        if scheduler_stats is None:
            return
        spec = getattr(scheduler_stats, "spec_decoding_stats", None)
        cache = getattr(scheduler_stats, "prefix_cache_stats", None)
        self.add(
            drafted=getattr(spec, "num_draft_tokens", 0),
            accepted=getattr(spec, "num_accepted_tokens", 0),
            drafts=getattr(spec, "num_drafts", 0),
            cache_queries=getattr(cache, "queries", 0),
            cache_hits=getattr(cache, "hits", 0),
        )

    def record_completion(self, completion: Completion, *, spec_reported: bool) -> None:
        self.add(
            requests=1,
            aborted=int(completion.finish_reason == "abort"),
            prompt_tokens=completion.usage.prompt_tokens,
            cached_prompt_tokens=completion.usage.cached_prompt_tokens,
            completion_tokens=completion.usage.completion_tokens,
            req_spec=int(spec_reported),
            req_drafted=completion.drafted_tokens,
            req_accepted=completion.accepted_tokens,
        )

    def speculation(self, config: VLLMConfig) -> VLLMSpeculationStats:
        c = self.snapshot()
        spec = config.speculative_config
        drafted, accepted, drafts = c["drafted"], c["accepted"], c["drafts"]
        return VLLMSpeculationStats(
            enabled=spec is not None,
            method=None if spec is None else spec.method,
            num_speculative_tokens=None if spec is None else spec.num_speculative_tokens,
            drafted_tokens=drafted,
            accepted_tokens=accepted,
            verifications=drafts,
            acceptance_rate=round(accepted / drafted, 4) if drafted else None,
            mean_accepted_length=round(accepted / drafts, 4) if drafts else None,
            requests=c["req_spec"],
            requests_drafted_tokens=c["req_drafted"],
            requests_accepted_tokens=c["req_accepted"],
        )

    def summary(self, config: VLLMConfig, live_requests: int) -> dict[str, Any]:
        c = self.snapshot()
        return {
            "requests": c["requests"],
            "aborted": c["aborted"],
            "live_requests": live_requests,
            "prompt_tokens": c["prompt_tokens"],
            "cached_prompt_tokens": c["cached_prompt_tokens"],
            "completion_tokens": c["completion_tokens"],
            "prefix_cache_queries": c["cache_queries"],
            "prefix_cache_hits": c["cache_hits"],
            "speculation": self.speculation(config).model_dump(),
        }


class RequestResult:
    """Reads one request's delta outputs into its CompletionBuilder."""

    def __init__(self, request: GenerationRequest, prompt_tokens: int, worker_id: str) -> None:
        self.request = request
        self.result = CompletionBuilder(request, worker_id, prompt_tokens=prompt_tokens)
        self.finish_reason: FinishReason = "abort"
        """Until vLLM says otherwise: a request aborted before it started has no output."""
        self.stop_reason: str | None = None
        self.spec_reported = False

    def add(self, output: Any) -> tuple[str, bool]:
        """Take one RequestOutput (delta); return its new text and whether it is the last."""
        if not output.outputs:
            return "", bool(output.finished)
        sample = output.outputs[0]
        result = self.result
        top = self.request.params.logprobs
        logprobs = None
        if top is not None and sample.logprobs is not None:
            logprobs = convert_logprobs(sample.token_ids, sample.logprobs, top)
        result.add(sample.text, len(sample.token_ids), logprobs)
        cached = output.num_cached_tokens or 0
        result.cached_prompt_tokens = max(result.cached_prompt_tokens, cached)
        metrics: Any = getattr(output, "metrics", None)
        if getattr(metrics, "scheduled_ts", 0) > 0:
            result.queued_s = max(0.0, metrics.scheduled_ts - metrics.queued_ts)
        if output.finished:
            self._finish(sample)
        return sample.text, bool(output.finished)

    def _finish(self, sample: Any) -> None:
        reason = sample.finish_reason
        if reason not in ("stop", "length", "abort"):
            raise WorkerError(f"vLLM ended the request with finish_reason={reason!r}")
        self.finish_reason = reason
        self.stop_reason = sample.stop_reason if isinstance(sample.stop_reason, str) else None
        spec = getattr(sample, "spec_decode_metrics", None)
        if spec is not None:
            self.spec_reported = True
            self.result.drafted_tokens = int(spec.num_draft_tokens)
            self.result.accepted_tokens = sum(j * count for j, count in enumerate(spec.histogram))

    def completion(self) -> Completion:
        """The final Completion of what was read."""
        return self.result.finish(self.finish_reason, self.stop_reason)


def convert_logprobs(token_ids: Any, positions: Any, top: int) -> list[TokenLogprob]:
    """vLLM's per-position {token id: Logprob} maps as TokenLogprobs.

    vLLM returns the sampled token plus the `top` most likely ones (ranks 1..top); the sampled
    token is kept apart, `top` holds ranks 1..top only.
    """
    converted = []
    for token_id, position in zip(token_ids, positions, strict=False):
        if not position:
            continue
        chosen = position.get(token_id)
        alternatives: dict[str, float] = {}
        for entry in position.values():
            if entry.rank is not None and entry.rank <= top:
                text = entry.decoded_token or ""
                alternatives[text] = max(entry.logprob, alternatives.get(text, -float("inf")))
        converted.append(
            TokenLogprob(
                token=(chosen.decoded_token or "") if chosen else "",
                logprob=float(chosen.logprob) if chosen else float("-inf"),
                top=alternatives,
            )
        )
    return converted


def translate_error(exc: BaseException, worker_id: str) -> BaseException:
    """vLLM's errors as threadloom's: dead engine, rejected request, other failure."""
    if isinstance(exc, WorkerError | ConfigError):
        return exc
    name = type(exc).__name__
    if name == "EngineDeadError":
        return WorkerDead(f"the vLLM engine of {worker_id} died: {exc}; create a new worker")
    if name in ("VLLMValidationError", "VLLMClientError") or isinstance(exc, ValueError):
        return ConfigError(f"vLLM rejected the request: {exc}")
    if isinstance(exc, asyncio.CancelledError):
        return WorkerDead(f"worker {worker_id} was closed while the request ran")
    return WorkerError(f"vLLM failed on {worker_id}: {type(exc).__name__}: {exc}")
