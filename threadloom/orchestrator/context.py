"""RunContext: everything a strategy may touch while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

from threadloom.errors import BudgetExhausted, ConfigError
from threadloom.orchestrator.budget import BudgetTracker
from threadloom.orchestrator.trace import ThoughtGraph
from threadloom.types import (
    Budget,
    Candidate,
    Completion,
    FinishReason,
    GenerationRequest,
    Problem,
    SamplingParams,
    Score,
    TokenUsage,
    Usage,
)
from threadloom.verifiers.base import Verifier
from threadloom.verifiers.extract import extract_answer
from threadloom.workers.base import StreamDelta, Worker


class RunContext:
    """The strategy-facing API: generate, stream, score, fork; budgets and trace are enforced here.

    A context is a cancellation scope: `cancel()` aborts every generation it (or a child made by
    `fork()`) has in flight, on the worker, so no compute is spent on answers nobody will read.
    """

    def __init__(
        self,
        problem: Problem,
        pool: Worker,
        *,
        verifiers: Mapping[str, Verifier] | None = None,
        default_verifier: str | None = None,
        params: SamplingParams | None = None,
        budget: Budget | None = None,
        trace: ThoughtGraph | None = None,
        seed: int | None = None,
        _parent: RunContext | None = None,
        _root_node: str | None = None,
    ) -> None:
        self.problem = problem
        self.pool = pool
        self.verifiers: dict[str, Verifier] = dict(verifiers or {})
        for judge in self.verifiers.values():
            # model-based verifiers (process reward models) judge with the run's worker
            attach = getattr(judge, "attach", None)
            if callable(attach):
                attach(pool)
        if default_verifier is not None and default_verifier not in self.verifiers:
            raise ConfigError(f"default verifier {default_verifier!r} is not among the verifiers")
        self.default_verifier = default_verifier
        self.params = params or SamplingParams()
        self.trace = trace or ThoughtGraph()
        self.rng = random.Random(seed)
        self.seed = seed
        self.usage = Usage()
        self.budget: BudgetTracker = BudgetTracker(
            budget, self.usage, _parent.budget if _parent is not None else None
        )
        self.parent = _parent
        self.children: list[RunContext] = []
        self._in_flight: set[str] = set()
        self.cancelled = False
        self.root_node = _root_node or self.trace.add(
            "prompt", label=(problem.prompt or problem.chat()[-1].content)[:80]
        )

    # ----- scopes -------------------------------------------------------------------------

    def fork(
        self,
        budget: Budget | None = None,
        *,
        seed: int | None = None,
        problem: Problem | None = None,
        root_node: str | None = None,
    ) -> RunContext:
        """A child scope with its own cancellation and (optionally) its own budget.

        Args:
            budget: Limits for the child alone; the parent's limits still apply.
            seed: The child's seed (default: drawn from this context's generator).
            problem: A different problem for the child (e.g. one point of a skeleton);
                verifiers and the trace are shared.
            root_node: Trace node the child's generations hang from (default: this root).
        """
        child = RunContext(
            problem or self.problem,
            self.pool,
            verifiers=self.verifiers,
            default_verifier=self.default_verifier,
            params=self.params,
            budget=budget,
            trace=self.trace,
            seed=self.rng.getrandbits(32) if seed is None else seed,
            _parent=self,
            _root_node=root_node or self.root_node,
        )
        self.children.append(child)
        return child

    async def cancel(self) -> int:
        """Abort every in-flight generation of this scope and its children; returns the count."""
        self.cancelled = True
        ids = list(self._in_flight)
        results = await asyncio.gather(*(self.pool.abort(i) for i in ids))
        nested = await asyncio.gather(*(c.cancel() for c in self.children))
        return sum(results) + sum(nested)

    @property
    def truncated(self) -> bool:
        """True once any budget this scope answers to has run out."""
        return self.budget.exhausted is not None or any(c.truncated for c in self.children)

    # ----- generation ---------------------------------------------------------------------

    def request(
        self,
        *,
        prefix: str = "",
        params: SamplingParams | None = None,
        messages: Any = None,
        affinity_key: str | None = None,
        **overrides: Any,
    ) -> GenerationRequest:
        """A request for this problem's chat, continuing `prefix`; `overrides` adjust params."""
        base = params or self.params
        if overrides:
            base = base.model_copy(update=overrides)
        return GenerationRequest(
            messages=tuple(messages) if messages is not None else self.problem.chat(),
            prefix=prefix,
            params=base,
            affinity_key=affinity_key,
        )

    def _seeded(self, request: GenerationRequest) -> GenerationRequest:
        if request.params.seed is None and self.seed is not None:
            params = request.params.model_copy(update={"seed": self.rng.getrandbits(31)})
            return request.model_copy(update={"params": params})
        return request

    def _admit(self, request: GenerationRequest) -> tuple[GenerationRequest, int]:
        if self.cancelled:
            raise BudgetExhausted("scope cancelled")
        granted = self.budget.begin_generation(request.params.max_tokens)
        request = self._seeded(request)
        if granted < request.params.max_tokens:
            params = request.params.model_copy(update={"max_tokens": granted})
            request = request.model_copy(update={"params": params})
        return request, granted

    async def generate(
        self,
        request: GenerationRequest,
        *,
        parent: str | None = None,
        label: str = "sample",
        edge: str | None = None,
    ) -> tuple[Completion, str]:
        """Generate one completion; returns it with its thought-graph node id.

        Raises BudgetExhausted (before starting) when a budget is spent. Cancelling the calling
        task aborts the request on the worker.
        """
        final: Completion | None = None
        final_node = ""
        async for delta, node in self._stream(request, parent=parent, label=label, edge=edge):
            if delta.completion is not None:
                final, final_node = delta.completion, node
        assert final is not None
        return final, final_node

    async def stream(
        self,
        request: GenerationRequest,
        *,
        parent: str | None = None,
        label: str = "sample",
        edge: str | None = None,
    ) -> AsyncIterator[tuple[StreamDelta, str]]:
        """Stream one generation as (delta, trace node) pairs; the last delta has the Completion."""
        async for item in self._stream(request, parent=parent, label=label, edge=edge):
            yield item

    async def _stream(
        self, request: GenerationRequest, *, parent: str | None, label: str, edge: str | None
    ) -> AsyncIterator[tuple[StreamDelta, str]]:
        request, granted = self._admit(request)
        edge_kind = edge or ("continue" if request.prefix else "fork")
        node = self.trace.add(
            "generation",
            label=label,
            parents=[(parent or self.root_node, edge_kind)],
            request_id=request.request_id,
            prefix_chars=len(request.prefix),
        )
        self._in_flight.add(request.request_id)
        finished = False
        deltas = 0
        try:
            async for delta in self.pool.stream(request):
                if delta.text:
                    deltas += 1
                    self.trace.emit("delta", id=node, text=delta.text)
                if delta.completion is not None:
                    finished = True
                    completion = delta.completion
                    self.budget.record(completion)
                    self.trace.update(
                        node,
                        text=completion.text,
                        finish_reason=completion.finish_reason,
                        prompt_tokens=completion.usage.prompt_tokens,
                        cached_prompt_tokens=completion.usage.cached_prompt_tokens,
                        completion_tokens=completion.usage.completion_tokens,
                        worker=completion.worker_id,
                        seconds=round(completion.timings.total_s, 4),
                    )
                    if completion.attempts > 1:
                        self.trace.update(
                            node,
                            attempts=completion.attempts,
                            failed_workers=list(completion.failed_workers),
                        )
                    if completion.drafted_tokens:
                        self.trace.update(
                            node,
                            drafted_tokens=completion.drafted_tokens,
                            accepted_tokens=completion.accepted_tokens,
                        )
                yield delta, node
        finally:
            self._in_flight.discard(request.request_id)
            self.budget.end_generation(granted)
            if not finished:
                # the caller went away mid-generation: abort it, and count what it decoded
                # (streamed deltas, about one per token) so usage stays honest
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.pool.abort(request.request_id))
                self.budget.record(
                    Completion(
                        text="",
                        finish_reason="abort",
                        usage=TokenUsage(completion_tokens=deltas),
                        request_id=request.request_id,
                    )
                )
                self.trace.update(node, finish_reason="abort", completion_tokens=deltas)

    def candidate(
        self, completion: Completion, node_id: str | None, *, prefix: str = ""
    ) -> Candidate:
        """Turn a completion into a candidate with its answer extracted."""
        text = prefix + completion.text
        return Candidate(
            text=text,
            answer=extract_answer(text, self.problem.answer_format),
            node_id=node_id,
            finish_reason=completion.finish_reason,
            mean_logprob=completion.mean_logprob,
            completion_tokens=completion.usage.completion_tokens,
        )

    def candidate_from_text(
        self, text: str, node_id: str | None, finish_reason: FinishReason = "stop"
    ) -> Candidate:
        """A candidate assembled from several generations (threads, skeleton points)."""
        return Candidate(
            text=text,
            answer=extract_answer(text, self.problem.answer_format),
            node_id=node_id,
            finish_reason=finish_reason,
        )

    async def sample(
        self,
        n: int,
        *,
        params: SamplingParams | None = None,
        prefix: str = "",
        parent: str | None = None,
        label: str = "sample",
        **overrides: Any,
    ) -> list[Candidate]:
        """Draw up to `n` samples concurrently; those refused by the budget are left out."""
        request = self.request(prefix=prefix, params=params, **overrides)

        async def one(i: int) -> Candidate | None:
            fresh = request.model_copy(update={"request_id": f"{request.request_id}-{i}"})
            try:
                completion, node = await self.generate(fresh, parent=parent, label=f"{label} {i}")
            except BudgetExhausted:
                return None
            return self.candidate(completion, node, prefix=prefix)

        results = await asyncio.gather(*(one(i) for i in range(n)))
        return [c for c in results if c is not None]

    # ----- verification -------------------------------------------------------------------

    def verifier(self, name: str | None = None) -> Verifier | None:
        key = name or self.default_verifier
        if key is None:
            return None
        try:
            return self.verifiers[key]
        except KeyError:
            raise ConfigError(
                f"verifier {key!r} is not configured for this run; "
                f"configured: {sorted(self.verifiers) or 'none'}"
            ) from None

    async def score(self, candidate: Candidate, verifier: str | None = None) -> Score | None:
        """Score a candidate with the named (or default) verifier; stores it on the candidate.

        Returns None when no verifier is configured or the verifier budget is spent.
        """
        judge = self.verifier(verifier)
        if judge is None:
            return None
        try:
            self.budget.check_verifier_call()
        except BudgetExhausted:
            return None
        result = await judge.score(self.problem, candidate)
        self.budget.record_verifier_call(result.calls, result.tokens)
        candidate.scores[judge.name] = result
        if candidate.node_id:
            self.trace.add(
                "score",
                label=f"{judge.name}={result.value:.3g}",
                parents=[(candidate.node_id, "score")],
                verifier=judge.name,
                value=result.value,
                passed=result.passed,
                detail=result.detail[:200],
            )
        return result

    async def score_all(self, candidates: list[Candidate], verifier: str | None = None) -> None:
        await asyncio.gather(*(self.score(c, verifier) for c in candidates))
