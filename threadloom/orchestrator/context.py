"""RunContext: everything a strategy may touch while it runs."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from threadloom.errors import BudgetExhausted, ConfigError, ThreadloomError, WorkerError
from threadloom.orchestrator.budget import BudgetTracker
from threadloom.orchestrator.events import trusted
from threadloom.orchestrator.generation import GenerationGuard
from threadloom.orchestrator.trace import ThoughtGraph
from threadloom.types import (
    Budget,
    Candidate,
    ChatMessage,
    Completion,
    FinishReason,
    GenerationRequest,
    Problem,
    SamplingParams,
    Score,
    Usage,
)
from threadloom.verifiers.base import (
    ProcessVerifier,
    StepAggregation,
    Verifier,
    aggregate_steps,
    failed_score,
    runs_inline,
)
from threadloom.verifiers.extract import extract_answer
from threadloom.verifiers.judging import ModelVerifier, StepScores
from threadloom.workers.base import StreamDelta, Worker

logger = logging.getLogger(__name__)

_DEFAULT_PARAMS = SamplingParams()

T = TypeVar("T")
OnError = Literal["fail", "keep"]
"""What a failed sample does to its siblings: `fail` aborts them all and raises; `keep` drops
the failed sample and keeps the others (raising only when every sample failed)."""


class RunContext:
    """The strategy-facing API: generate, stream, score, fork; budgets and trace are enforced here.

    A context is a cancellation scope: `cancel()` aborts every generation it (or a child made by
    `fork()`) has in flight, on the worker, so no compute is spent on answers nobody will read.
    Every model call goes through it, the judge passes of process reward models included: each is
    admitted against the budget, aborted at the budget's deadline or when its scope is
    cancelled, and recorded in the thought graph.
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
        on_error: OnError = "fail",
        _parent: RunContext | None = None,
        _root_node: str | None = None,
    ) -> None:
        if on_error not in ("fail", "keep"):
            raise ConfigError(f"on_error must be 'fail' or 'keep', not {on_error!r}")
        self.problem = problem
        self.pool = pool
        self.verifiers: dict[str, Verifier] = dict(verifiers or {})
        if default_verifier is not None and default_verifier not in self.verifiers:
            raise ConfigError(f"default verifier {default_verifier!r} is not among the verifiers")
        self.default_verifier = default_verifier
        self.params = params or _DEFAULT_PARAMS
        self.trace = trace or ThoughtGraph()
        self.seed = seed
        self._rng: random.Random | None = None
        self.usage = Usage()
        self.budget: BudgetTracker = BudgetTracker(
            budget, self.usage, _parent.budget if _parent is not None else None
        )
        self.on_error: OnError = on_error
        self.parent = _parent
        self.children: list[RunContext] = []
        self._in_flight: dict[str, Worker] = {}
        """Request id -> the worker running it (judges may run on their own worker)."""
        self._calls: set[asyncio.Task[Any]] = set()
        """Model calls other than generations (pooling, HTTP scoring) running in this scope."""
        self.cancelled: bool = _parent.cancelled if _parent is not None else False
        self._chat: tuple[ChatMessage, ...] | None = None
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
            on_error=self.on_error,
            _parent=self,
            _root_node=root_node or self.root_node,
        )
        self.children.append(child)
        return child

    @property
    def rng(self) -> random.Random:
        """This scope's random generator, seeded with `seed`; made when first used, as most
        scopes never draw from it and seeding from system entropy was the costliest part of
        making one."""
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng

    async def cancel(self) -> int:
        """Abort every in-flight model call of this scope and its children; returns the count.

        Nothing new starts in a cancelled scope: later requests are refused as BudgetExhausted.
        The whole tree is marked cancelled before this first waits, and the aborts are
        shielded, so they all reach their workers even if the caller is cancelled meanwhile.
        When nothing is running this returns without suspending.
        """
        running: list[tuple[str, Worker]] = []
        calls = 0
        scopes = [self]
        while scopes:
            scope = scopes.pop()
            scope.cancelled = True
            running.extend(scope._in_flight.items())
            for task in scope._calls:
                task.cancel()
            calls += len(scope._calls)
            scopes.extend(scope.children)
        if not running:
            return calls
        aborts = asyncio.gather(
            *(worker.abort(rid) for rid, worker in running), return_exceptions=True
        )
        results = await asyncio.shield(aborts)
        return calls + sum(1 for r in results if r is True)

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
            # what model_copy(update=...) makes (neither validates), at half its cost
            base = trusted(SamplingParams, {**base.__dict__, **overrides})
        if messages is None:
            if self._chat is None:
                self._chat = self.problem.chat()
            messages = self._chat
        return GenerationRequest(
            messages=tuple(messages),
            prefix=prefix,
            params=base,
            affinity_key=affinity_key,
        )

    def _admit(self, request: GenerationRequest) -> tuple[GenerationRequest, int]:
        """Reserve the request's completion tokens (its `max_tokens` clipped to the grant) and
        give it a seed drawn from the run's when it has none."""
        params = request.params
        granted = self.budget.begin_generation(params.max_tokens)
        updates: dict[str, Any] = {}
        if params.seed is None and self.seed is not None:
            updates["seed"] = self.rng.getrandbits(31)
        if granted < params.max_tokens:
            updates["max_tokens"] = granted
        if updates:
            request = request.model_copy(update={"params": params.model_copy(update=updates)})
        return request, granted

    def _deadline(self) -> float | None:
        """The event-loop time at which this scope's wall-time budget runs out, if any."""
        left = self.budget.time_left_s()
        return None if left is None else asyncio.get_running_loop().time() + left

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
        call = self._open_call(request, parent=parent, label=label, edge=edge)
        return await self._complete(call), call.node

    async def stream(
        self,
        request: GenerationRequest,
        *,
        parent: str | None = None,
        label: str = "sample",
        edge: str | None = None,
    ) -> AsyncIterator[tuple[StreamDelta, str]]:
        """Stream one generation as (delta, trace node) pairs; the last delta has the Completion."""
        call = self._open_call(request, parent=parent, label=label, edge=edge)
        try:
            async for delta in call.guard.run():
                self._take(call, delta)
                yield delta, call.node
        finally:
            await self._close_call(call)

    def _open_call(
        self,
        request: GenerationRequest,
        *,
        parent: str | None,
        label: str,
        edge: str | None,
        worker: Worker | None = None,
        judging: bool = False,
    ) -> _ModelCall:
        """Admit a model call, add its trace node and register it with the scope."""
        if self.cancelled:
            raise BudgetExhausted("scope cancelled")
        if judging:
            self.budget.begin_verifier_call()
            granted = request.params.max_tokens
        else:
            request, granted = self._admit(request)
        rid = request.request_id
        edge_kind = edge or ("continue" if request.prefix else "fork")
        node = self.trace.add(
            "judge" if judging else "generation",
            label=label,
            parents=[(parent or self.root_node, edge_kind)],
            request_id=rid,
            prefix_chars=len(request.prefix),
        )
        worker = worker or self.pool
        self._in_flight[rid] = worker
        guard = GenerationGuard(
            worker, request, granted, self._deadline(), on_deadline=self.budget.hit_deadline
        )
        return _ModelCall(guard=guard, node=node, granted=granted, judging=judging)

    async def _complete(self, call: _ModelCall) -> Completion:
        """Read an open model call to its end; returns its completion."""
        try:
            async for delta in call.guard.run():
                self._take(call, delta)
        finally:
            await self._close_call(call)
        assert call.completion is not None
        return call.completion

    def _take(self, call: _ModelCall, delta: StreamDelta) -> None:
        """Pass one delta of a model call to the trace; account for the call at its end."""
        if delta.text:
            self.trace.delta(call.node, delta.text)
        if delta.completion is not None:
            call.completion = delta.completion
            self._account(call, cut=call.guard.discarded_tokens)

    async def _close_call(self, call: _ModelCall) -> None:
        """Release what the call reserved; abort it if its reader went away before the end."""
        self._in_flight.pop(call.guard.request.request_id, None)
        if call.judging:
            self.budget.end_verifier_call()
        else:
            self.budget.end_generation(call.granted)
        if call.completion is None:
            # the caller went away mid-generation: abort it and count what it decoded
            call.completion = await asyncio.shield(call.guard.abandon())
            self._account(call, cut=0)

    def _account(self, call: _ModelCall, *, cut: int) -> None:
        """Charge a finished (or aborted) model call to the budget and record it in the trace,
        in one update of its node."""
        completion = call.completion
        assert completion is not None
        usage = completion.usage
        if call.judging:
            read = usage.prompt_tokens - usage.cached_prompt_tokens + usage.completion_tokens
            self.budget.record_verifier_call(1, max(0, read))
        else:
            self.budget.record(completion)
        data: dict[str, Any] = {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "prompt_tokens": usage.prompt_tokens,
            "cached_prompt_tokens": usage.cached_prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "worker": completion.worker_id,
            "seconds": round(completion.timings.total_s, 4),
        }
        if cut:
            data["discarded_tokens"] = cut
        if completion.attempts > 1:
            data["attempts"] = completion.attempts
            data["failed_workers"] = list(completion.failed_workers)
        if completion.drafted_tokens:
            data["drafted_tokens"] = completion.drafted_tokens
            data["accepted_tokens"] = completion.accepted_tokens
        self.trace.update(call.node, **data)

    async def judge_generate(
        self,
        request: GenerationRequest,
        *,
        worker: Worker | None = None,
        parent: str | None = None,
        label: str = "judge",
    ) -> Completion:
        """One generation for a verifier (a judge pass), charged as a verifier call.

        Raises BudgetExhausted when the verifier budget refuses it, or when it was aborted
        (cancelled scope, deadline): an aborted judge pass has nothing to read.
        """
        call = self._open_call(
            request, parent=parent, label=label, edge="score", worker=worker, judging=True
        )
        final = await self._complete(call)
        if final.finish_reason == "abort":
            raise BudgetExhausted("judge call aborted")
        return final

    async def judge_call(
        self, work: Callable[[], Awaitable[T]], *, parent: str | None = None, label: str = "judge"
    ) -> T:
        """A verifier's model call that is not a generation (a pooling or HTTP scoring call),
        admitted as a verifier call, cancelled with this scope and cut at its deadline."""
        if self.cancelled:
            raise BudgetExhausted("scope cancelled")
        self.budget.begin_verifier_call()
        node = self.trace.add("judge", label=label, parents=[(parent or self.root_node, "score")])
        task = asyncio.ensure_future(work())
        self._calls.add(task)
        try:
            limit = asyncio.timeout(self.budget.time_left_s())
            try:
                async with limit:
                    result = await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                if not limit.expired():
                    raise
                self.budget.hit_deadline()
                self.trace.update(node, finish_reason="abort")
                raise BudgetExhausted("judge call cut at the deadline") from None
            except asyncio.CancelledError:
                if not task.cancelled():
                    task.cancel()
                    raise  # our caller was cancelled, not the scope
                self.trace.update(node, finish_reason="abort")
                raise BudgetExhausted("scope cancelled") from None
        finally:
            self._calls.discard(task)
            self.budget.end_verifier_call()
        self.budget.record_verifier_call(1, 0)
        self.trace.update(node, finish_reason="stop")
        return result

    def candidate(
        self, completion: Completion, node_id: str | None, *, prefix: str = ""
    ) -> Candidate:
        """Turn a completion into a candidate with its answer extracted."""
        text = prefix + completion.text
        # every field comes from a validated Completion or is made here: no need to validate
        return trusted(
            Candidate,
            {
                "text": text,
                "answer": extract_answer(text, self.problem.answer_format),
                "steps": [],
                "scores": {},
                "node_id": node_id,
                "finish_reason": completion.finish_reason,
                "mean_logprob": completion.mean_logprob,
                "completion_tokens": completion.usage.completion_tokens,
                "votes": 0,
                "metadata": {},
            },
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
        """Draw up to `n` samples concurrently; those refused by the budget are left out.

        A sample whose worker fails is handled by the scope's `on_error` policy: with "fail"
        every sibling still running is aborted and the error raised; with "keep" the failed
        sample is dropped (the error is raised only when no sample succeeded). Either way no
        generation is left running when this returns or raises.
        """
        request = self.request(prefix=prefix, params=params, **overrides)
        fields, request_id = request.__dict__, request.request_id
        failures: list[BaseException] = []

        async def one(i: int) -> Candidate | None:
            # the request validated once; each sample's copy differs only in its id
            fresh = trusted(GenerationRequest, {**fields, "request_id": f"{request_id}-{i}"})
            try:  # what `generate` does, one coroutine less
                call = self._open_call(fresh, parent=parent, label=f"{label} {i}", edge=None)
                completion, node = await self._complete(call), call.node
            except BudgetExhausted:
                return None
            except (WorkerError, OSError) as exc:
                if self.on_error == "fail":
                    raise
                logger.warning("sample %d failed and is left out: %s", i, exc)
                failures.append(exc)
                return None
            return self.candidate(completion, node, prefix=prefix)

        results = await gather_or_cancel(*(one(i) for i in range(n)))
        candidates = [c for c in results if c is not None]
        if failures and not candidates and len(failures) == n:
            raise failures[0]
        return candidates

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

        Returns None when no verifier is configured, or the verifier budget, the deadline or a
        cancelled scope refused the call. A verifier that raises an untyped exception on the
        candidate scores it as failed instead of ending the run.
        """
        judge = self.verifier(verifier)
        if judge is None:
            return None
        try:
            if isinstance(judge, ModelVerifier):
                calls = RunModelCalls(self, candidate.node_id)
                result = await judge.judge(self.problem, candidate, calls)
            else:
                result = await self._verifier_call(lambda: judge.score(self.problem, candidate))
                self.budget.record_verifier_call(result.calls, result.tokens)
        except BudgetExhausted:
            return None
        except ThreadloomError:
            raise
        except Exception as exc:
            logger.warning("verifier %s raised %s; scored as failed", judge.name, exc)
            result = failed_score(judge.name, exc)
        candidate.scores[judge.name] = result
        if candidate.node_id:
            self.trace.add(
                "score",
                label=f"{judge.name}={result.value:.3g}" if result.judged else
                f"{judge.name}: no reference",
                parents=[(candidate.node_id, "score")],
                verifier=judge.name,
                value=result.value,
                passed=result.passed,
                judged=result.judged,
                detail=result.detail[:200],
            )
        return result

    async def _verifier_call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run one verification that calls no model as an admitted verifier call, cut at the
        deadline; the caller records what it cost."""
        if self.cancelled:
            raise BudgetExhausted("scope cancelled")
        left = self.budget.time_left_s()
        limit = None if left is None else asyncio.timeout(left)
        self.budget.begin_verifier_call()
        try:
            if limit is None:
                return await work()
            async with limit:
                return await work()
        except TimeoutError:
            if limit is None or not limit.expired():
                raise  # the verifier's own timeout, not the deadline
            self.budget.hit_deadline()
            raise BudgetExhausted("verification cut at the deadline") from None
        finally:
            self.budget.end_verifier_call()

    async def score_all(self, candidates: list[Candidate], verifier: str | None = None) -> None:
        """Score every candidate concurrently (nothing to do when no verifier is configured)."""
        judge = self.verifier(verifier)
        if not candidates or judge is None:
            return
        if runs_inline(judge) and self.budget.time_left_s() is None:
            # a pure check never waits, so one after the other is as fast as concurrently,
            # without a task per candidate; with a deadline each still gets its own timeout
            for candidate in candidates:
                await self.score(candidate, verifier)
            return
        await gather_or_cancel(*(self.score(c, verifier) for c in candidates))

    def process_verifier(self, name: str) -> ProcessVerifier:
        """The named process verifier (a PRM), built and registered for the run if needed."""
        from threadloom.verifiers.registry import make_verifier

        judge = self.verifiers.get(name)
        if judge is None:
            judge = make_verifier(name)
            self.verifiers[name] = judge
        if not isinstance(judge, ProcessVerifier):
            raise ConfigError(
                f"verifier {name!r} cannot score steps; use a process reward model such as "
                "self-judge"
            )
        return judge

    async def score_steps(
        self,
        steps: list[str],
        verifier: str,
        *,
        parent: str | None = None,
        aggregation: StepAggregation = "min",
    ) -> StepScores | None:
        """Score each step with a process verifier; None when the budget refused the work.

        Args:
            steps: The steps of one (partial) solution, in order.
            verifier: The process verifier's name.
            parent: Trace node of the solution the steps belong to.
            aggregation: How the trace shows the steps' scores as one value.
        """
        judge = self.process_verifier(verifier)
        try:
            if isinstance(judge, ModelVerifier):
                result = await judge.judge_steps(self.problem, steps, RunModelCalls(self, parent))
            else:
                scores = await self._verifier_call(
                    lambda: judge.score_steps(self.problem, steps)
                )
                self.budget.record_verifier_call(1, 0)
                result = StepScores(scores=list(scores), calls=1, tokens=0)
        except BudgetExhausted:
            return None
        if parent:
            value = aggregate_steps(result.scores, aggregation)
            self.trace.add(
                "score",
                label=f"{verifier}={value:.3g}",
                parents=[(parent, "score")],
                verifier=verifier,
                value=value,
                step_scores=list(result.scores),
            )
        return result


@dataclass(slots=True, eq=False)
class _ModelCall:
    """One model call of a scope: its guard, trace node and what the budget reserved for it."""

    guard: GenerationGuard
    node: str
    granted: int
    judging: bool
    completion: Completion | None = None


class RunModelCalls:
    """The `ModelCalls` a run lends a model-based verifier: calls through the run context."""

    def __init__(self, ctx: RunContext, parent: str | None) -> None:
        self._ctx = ctx
        self._parent = parent

    async def generate(
        self, request: GenerationRequest, *, worker: Worker | None = None, label: str = "judge"
    ) -> Completion:
        return await self._ctx.judge_generate(
            request, worker=worker, parent=self._parent, label=label
        )

    async def call(self, work: Callable[[], Awaitable[T]], *, label: str = "judge") -> T:
        return await self._ctx.judge_call(work, parent=self._parent, label=label)


async def gather_or_cancel(*aws: Awaitable[T]) -> list[T]:
    """Await all, in order; on the first failure cancel the rest, wait for them, and raise.

    Cancelled siblings abort their generations on the worker (see `RunContext._close_call`), so
    nothing keeps running after the error.
    """
    if len(aws) == 1:
        return [await aws[0]]  # nothing to cancel: no task needed
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
