"""Continuous batching on llama.cpp: many sequences share every forward pass of one context.

The engine owns one llama.cpp context with `n_slots` sequence ids, each with its own stream of
the KV cache (`n_ctx // n_slots` cells). Per-sequence streams keep a token's attention to its own
sequence's cells; in one unified cache every token is masked over the cells of all sequences.
Measured on a 2-core CPU, 16 sequences of 256 tokens: 119-120 tok/s unified with flash attention,
175-183 per-sequence without it. A background thread loops: admit queued requests into free
slots, build one batch holding the next token of every decoding sequence plus chunks of prompts
still being prefilled, run one `llama_decode`, sample each sequence's next token from its row of
logits, and report text deltas.

Prefix caching: a finished sequence keeps its KV cells (the slot is "retained") until the slot is
needed. A new request whose prompt shares a token prefix with a live or retained sequence gets
that prefix by `llama_memory_seq_cp` (the cells are copied between streams, not recomputed); only
the rest is prefilled.
Requests whose prompt matches one that is still being prefilled wait one step so they can share it
(N samples of one prompt prefill it once).

Speculative decoding (prompt lookup): when the speculation controller says so, a decoding
sequence's next input token is followed in the batch by tokens drafted from its own history, all
with logits on. The sequence's sampler then samples position by position from those rows and
keeps going while the sampled token equals the draft, so the output follows plain decoding's
distribution (token for token the same text when the logits are the same bit for bit, which
flash attention gives on a CPU); the cells of rejected draft tokens are removed from the cache.
Each sequence paces its own drafts by how its last one fared (`DraftPacer`), so the
sequences of a batch that write free-form text stop paying for drafts while those copying keep
them.

This module imports `llama_cpp` and is imported only by the llama.cpp worker.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

from threadloom.errors import WorkerDead, WorkerError
from threadloom.types import FinishReason, SamplingParams
from threadloom.workers.llamacpp.sampling import (
    SampledToken,
    SamplingRules,
    TokenConstraint,
    TokenSampler,
)
from threadloom.workers.llamacpp.speculation import (
    DraftPacer,
    PromptLookup,
    SpeculationConfig,
    SpeculationController,
)
from threadloom.workers.llamacpp.text_stream import StopAwareText

logger = logging.getLogger(__name__)

_DECODE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp-decode")
"""Every engine in the process runs its forward passes on this one thread. llama.cpp's CPU
backend parallelises with OpenMP, which gives each calling thread its own team of threads; once
the teams together outnumber the CPUs, libgomp stops spin-waiting at barriers and sleeps instead.
With three workers in one process, one stream decoded at 25-30 tok/s against 80 alone; through
one thread, 52-87 with three (2-core CPU)."""

_MIN_SHARED_PREFIX = 8
"""Wait for a sibling's prefill only when it would share at least this many tokens."""


@dataclass
class EngineOutput:
    """What the engine alone knows about a finished request (its text went out as deltas)."""

    finish_reason: FinishReason
    prompt_tokens: int
    queued_s: float
    total_s: float
    stop_string: str | None = None
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[SampledToken] | None = None
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    first_token_s: float = 0.0


@dataclass
class EngineRequest:
    """A request as the engine sees it; callbacks run on the engine thread."""

    request_id: str
    prompt_tokens: list[int]
    params: SamplingParams
    on_delta: Callable[[str], None]
    on_done: Callable[[EngineOutput | BaseException], None]
    submitted_at: float = field(default_factory=time.perf_counter)
    aborted: bool = False
    decoded: int = 0
    """Completion tokens decoded so far (up to date whenever `on_delta` runs)."""
    constraint: TokenConstraint | None = None
    """Which tokens may come next (structured output); closed when the request ends."""


@dataclass
class _Sequence:
    request: EngineRequest
    sampler: TokenSampler
    text: StopAwareText
    pending: list[int]
    cached_tokens: int
    started_at: float
    first_token_at: float = 0.0
    completion_tokens: int = 0
    logprobs: list[SampledToken] | None = None
    history: np.ndarray | None = None
    """Prompt and completion tokens for draft lookup (allocated when speculation drafts)."""
    history_len: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    pacer: DraftPacer = field(default_factory=DraftPacer)

    def remember(self, token: int) -> None:
        if self.history is not None:
            self.history[self.history_len] = token
            self.history_len += 1


@dataclass
class _Slot:
    seq_id: int
    kv_tokens: list[int] = field(default_factory=list)
    """Tokens whose keys and values are in the cache for this sequence id, positions 0..n-1."""
    live: _Sequence | None = None
    last_used: float = 0.0


@dataclass(frozen=True)
class EngineStats:
    steps: int
    decoded_tokens: int
    prefill_tokens: int
    cached_prompt_tokens: int
    live_sequences: int
    queued_requests: int
    retained_slots: int
    retained_cells: int
    """KV cells held by finished sequences kept for prefix reuse."""


class BatchedEngine:
    """Decodes many sequences together on one llama.cpp model. Thread-safe `submit` and `abort`."""

    def __init__(
        self,
        model: llama_cpp.llama_model_p,
        *,
        n_ctx: int,
        n_slots: int,
        max_batch_tokens: int,
        n_threads: int,
        speculation: SpeculationConfig | None = None,
        flash_attention: bool = False,
        name: str = "llamacpp",
    ) -> None:
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._eog_tokens: tuple[int, ...] | None = None
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = max_batch_tokens
        params.n_ubatch = min(512, max_batch_tokens)
        params.n_seq_max = n_slots
        params.kv_unified = False
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if flash_attention
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise WorkerError(
                f"llama.cpp could not create a context with n_ctx={n_ctx}, n_slots={n_slots}; "
                "lower n_ctx or n_slots"
            )
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self.n_ctx = llama_cpp.llama_n_ctx(ctx)
        self.n_ctx_seq = llama_cpp.llama_n_ctx_seq(ctx)
        self.max_batch_tokens = max_batch_tokens
        self._batch = llama_cpp.llama_batch_init(max_batch_tokens, 0, 1)
        self._slots = [_Slot(seq_id=i) for i in range(n_slots)]
        self._queue: deque[EngineRequest] = deque()
        self._by_id: dict[str, EngineRequest] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._pieces: dict[int, bytes] = {}
        self._steps = 0
        self._decoded = 0
        self._prefilled = 0
        self._cached = 0
        self.speculation = SpeculationController(speculation)
        config = self.speculation.config
        self._drafter = PromptLookup(config.max_ngram_size, config.min_ngram_size)
        self._thread = threading.Thread(target=self._run, name=f"{name}-engine", daemon=True)
        self._thread.start()

    # ----- public, any thread -------------------------------------------------------------

    def submit(self, request: EngineRequest) -> None:
        with self._cond:
            if self._closed:
                raise WorkerDead("the llama.cpp engine is closed; create a new worker")
            self._queue.append(request)
            self._by_id[request.request_id] = request
            self._cond.notify()

    def abort(self, request_id: str) -> bool:
        with self._cond:
            request = self._by_id.get(request_id)
            if request is None:
                return False
            request.aborted = True
            self._cond.notify()
            return True

    def stats(self) -> EngineStats:
        with self._cond:
            return EngineStats(
                steps=self._steps,
                decoded_tokens=self._decoded,
                prefill_tokens=self._prefilled,
                cached_prompt_tokens=self._cached,
                live_sequences=sum(1 for s in self._slots if s.live is not None),
                queued_requests=len(self._queue),
                retained_slots=sum(1 for s in self._slots if s.live is None and s.kv_tokens),
                retained_cells=sum(len(s.kv_tokens) for s in self._slots if s.live is None),
            )

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    # ----- engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._queue and not self._any_live():
                        self._cond.wait()
                    if self._closed:
                        break
                    self._drop_aborted()
                    self._admit()
                if self._any_live():
                    self._step()
        except BaseException as exc:  # the thread must report, never die silently
            logger.exception("llama.cpp engine crashed")
            self._fail_everything(WorkerDead(f"the llama.cpp engine crashed: {exc!r}"))
            return
        self._fail_everything(WorkerDead("the llama.cpp worker was closed"))

    def _any_live(self) -> bool:
        return any(slot.live is not None for slot in self._slots)

    def _drop_aborted(self) -> None:
        for request in [r for r in self._queue if r.aborted]:
            self._queue.remove(request)
            self._by_id.pop(request.request_id, None)
            waited = time.perf_counter() - request.submitted_at
            request.on_done(
                EngineOutput(
                    finish_reason="abort",
                    prompt_tokens=len(request.prompt_tokens),
                    queued_s=waited,
                    total_s=waited,
                )
            )
        for slot in self._slots:
            if slot.live is not None and slot.live.request.aborted:
                self._finish(slot, "abort")

    def _admit(self) -> None:
        deferred: list[EngineRequest] = []
        while self._queue:
            if all(slot.live is not None for slot in self._slots):
                break
            request = self._queue.popleft()
            prompt = request.prompt_tokens
            source, shared = self._longest_cached_prefix(prompt)
            if self._should_wait_for_sibling(prompt, shared):
                deferred.append(request)
                continue
            # every slot owns n_ctx_seq cells and the worker admits only requests that fit them
            slot = self._claim_slot(prefer=source)
            if slot is None:
                deferred.append(request)
                break
            self._start(slot, request, source, shared)
        self._queue.extendleft(reversed(deferred))

    @property
    def eog_tokens(self) -> tuple[int, ...]:
        """The tokens that end generation (looked up once)."""
        if self._eog_tokens is None:
            self._eog_tokens = tuple(
                t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)
            )
        return self._eog_tokens

    def grammar(self, gbnf: str) -> TokenConstraint:
        """A fresh grammar constraint on this model's vocabulary (ConfigError if invalid)."""
        from threadloom.workers.llamacpp.grammar import GrammarConstraint

        return GrammarConstraint(self._vocab, gbnf)

    def _longest_cached_prefix(self, prompt: list[int]) -> tuple[_Slot | None, int]:
        best: _Slot | None = None
        best_len = 0
        for slot in self._slots:
            n = _common_prefix(slot.kv_tokens, prompt)
            # on a tie prefer a retained slot: it can be reused in place, without a copy
            if n > best_len or (n == best_len and n > 0 and slot.live is None):
                best, best_len = slot, n
        # at least one prompt token must be decoded to get logits for the first sample
        return best, min(best_len, len(prompt) - 1)

    def _should_wait_for_sibling(self, prompt: list[int], shared: int) -> bool:
        for slot in self._slots:
            seq = slot.live
            if seq is None or not seq.pending or seq.completion_tokens > 0:
                continue
            upcoming = slot.kv_tokens + seq.pending
            if _common_prefix(upcoming, prompt) >= shared + _MIN_SHARED_PREFIX:
                return True
        return False

    def _claim_slot(self, prefer: _Slot | None) -> _Slot | None:
        if prefer is not None and prefer.live is None:
            return prefer
        free = [s for s in self._slots if s.live is None and not s.kv_tokens]
        if free:
            return free[0]
        retained = [s for s in self._slots if s.live is None]
        if not retained:
            return None
        return min(retained, key=lambda s: s.last_used)

    def _start(
        self, slot: _Slot, request: EngineRequest, source: _Slot | None, shared: int
    ) -> None:
        if source is slot:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, shared, -1)
            slot.kv_tokens = slot.kv_tokens[:shared]
        else:
            if slot.kv_tokens:
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            if source is not None and shared > 0:
                # between streams llama.cpp copies only whole sequences (a partial range aborts
                # the process): copy all of it, then drop what is not shared
                llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, slot.seq_id, -1, -1)
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, shared, -1)
                slot.kv_tokens = source.kv_tokens[:shared]
            else:
                slot.kv_tokens = []
                shared = 0
        params = request.params
        rules = SamplingRules.from_params(
            params, eog_tokens=self.eog_tokens, prompt=request.prompt_tokens
        )
        sampler = TokenSampler(
            params.temperature,
            params.top_p,
            params.seed,
            params.logprobs,
            rules=rules,
            constraint=request.constraint,
        )
        slot.live = _Sequence(
            request=request,
            sampler=sampler,
            text=StopAwareText(params.stop),
            pending=request.prompt_tokens[shared:],
            cached_tokens=shared,
            started_at=time.perf_counter(),
            logprobs=[] if params.logprobs is not None else None,
        )
        self._cached += shared
        slot.last_used = time.perf_counter()

    def _step(self) -> None:
        started = time.perf_counter()
        batch = self._batch
        budget = self.max_batch_tokens
        speculate = self.speculation.speculating
        rows: list[tuple[_Slot, int, list[int]]] = []  # (slot, prompt/next tokens fed, draft)
        live = [s for s in self._slots if s.live is not None]
        # decoding sequences first (one token each), then prompt chunks with what is left
        live.sort(key=lambda s: len(s.live.pending) if s.live else 0)
        n = 0
        outputs = 0
        decode_only = True
        for slot in live:
            seq = slot.live
            assert seq is not None
            take = min(len(seq.pending), budget - n)
            if take <= 0:
                continue
            if seq.completion_tokens == 0:
                decode_only = False
            complete = take == len(seq.pending)
            draft = self._draft(slot, seq, budget - n - take) if speculate and complete else []
            pos0 = len(slot.kv_tokens)
            for j, token in enumerate(seq.pending[:take] + draft):
                batch.token[n] = token
                batch.pos[n] = pos0 + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot.seq_id
                wanted = complete and j >= take - 1
                batch.logits[n] = 1 if wanted else 0
                outputs += wanted
                n += 1
            rows.append((slot, take, draft))
        batch.n_tokens = n
        status = _DECODE_THREAD.submit(llama_cpp.llama_decode, self._ctx, batch).result()
        if status == 1:
            # a slot's own stream is full: the worker admits only requests that fit
            # n_ctx_seq, so this is a bug or a changed llama.cpp; fail the newest sequence
            victim = max(live, key=lambda s: s.live.started_at if s.live else 0.0)
            self._fail(
                victim,
                WorkerError(
                    f"a sequence ran out of its {self.n_ctx_seq} KV cells; create the worker "
                    "with a larger n_ctx"
                ),
            )
            return
        if status != 0:
            raise WorkerError(f"llama_decode failed with status {status}")
        self._steps += 1
        for slot, take, draft in rows:
            seq = slot.live
            assert seq is not None
            slot.kv_tokens.extend(seq.pending[:take])
            slot.kv_tokens.extend(draft)
            if seq.completion_tokens == 0:
                self._prefilled += take
            del seq.pending[:take]
        if not outputs:
            return
        logits_ptr = llama_cpp.llama_get_logits(self._ctx)
        logits = np.ctypeslib.as_array(logits_ptr, shape=(outputs, self.n_vocab))
        now = time.perf_counter()
        emitted = drafted = accepted = verified = 0
        most_drafted = self.speculation.config.num_pred_tokens
        row = 0
        with self._cond:
            for slot, _, draft in rows:
                seq = slot.live
                assert seq is not None
                if seq.pending:
                    continue  # a prompt chunk: no logits yet
                before = seq.accepted_tokens
                emitted += self._advance(slot, logits[row : row + len(draft) + 1], draft, now)
                row += len(draft) + 1
                if draft:
                    drafted += len(draft)
                    accepted += seq.accepted_tokens - before
                    verified += 1
                    seq.pacer.verified(len(draft), seq.accepted_tokens - before, most_drafted)
        self.speculation.record(
            speculative=speculate,
            tokens=emitted,
            seconds=time.perf_counter() - started,
            drafted=drafted,
            accepted=accepted,
            verifications=verified,
            measured=decode_only,
        )

    def _draft(self, slot: _Slot, seq: _Sequence, batch_room: int) -> list[int]:
        """Tokens drafted for a decoding sequence, bounded by its token, context and batch room."""
        if seq.completion_tokens == 0:
            return []
        room = seq.pacer.room(self.speculation.config.num_pred_tokens)
        if room == 0:
            return []
        limit = min(
            room,
            batch_room,
            seq.request.params.max_tokens - seq.completion_tokens - 1,
            self.n_ctx_seq - len(slot.kv_tokens) - 3,
        )
        if limit <= 0:
            return []
        if seq.history is None:
            prompt = seq.request.prompt_tokens
            size = len(prompt) + seq.request.params.max_tokens + 1
            seq.history = np.empty(size, dtype=np.int32)
            seq.history[: len(prompt)] = prompt
            seq.history_len = len(prompt)
            # tokens generated before speculation started for this sequence
            for token in slot.kv_tokens[len(prompt) :] + seq.pending:
                seq.remember(token)
        return self._drafter.propose(seq.history[: seq.history_len], limit)

    def _advance(self, slot: _Slot, rows: np.ndarray, draft: list[int], now: float) -> int:
        """Sample a sequence's next tokens from its rows of logits; returns tokens emitted.

        Row i holds the distribution after the fed token and the first i drafted ones. Sampling
        goes row by row and stops at the first sampled token that differs from the draft (that
        token is the next input), so the sampled text is the same as without a draft.
        """
        seq = slot.live
        assert seq is not None
        emitted = 0
        kept = 0  # drafted tokens whose cells stay in the cache
        reason: FinishReason | None = "abort" if seq.request.aborted else None
        base = len(slot.kv_tokens) - len(draft)  # cells up to and including the fed token
        seq.drafted_tokens += len(draft)
        if reason is None:
            slot.last_used = now
        for i in range(len(draft) + 1 if reason is None else 0):
            sampled = seq.sampler.sample(rows[i])
            if (
                llama_cpp.llama_vocab_is_eog(self._vocab, sampled.token)
                or sampled.token in seq.request.params.stop_token_ids
            ):
                reason = "stop"
                break
            seq.sampler.accept(sampled.token)
            if seq.first_token_at == 0.0:
                seq.first_token_at = now
            seq.completion_tokens += 1
            emitted += 1
            self._decoded += 1
            seq.remember(sampled.token)
            matched = i < len(draft) and sampled.token == draft[i]
            seq.accepted_tokens += matched
            if seq.logprobs is not None:
                seq.logprobs.append(sampled)
            delta = seq.text.push(self.piece(sampled.token))
            seq.request.decoded = seq.completion_tokens
            if delta:
                seq.request.on_delta(delta)
            if seq.text.stopped:
                reason = "stop"
            elif (
                seq.completion_tokens >= seq.request.params.max_tokens
                or base + i + 1 >= self.n_ctx_seq
            ):
                reason = "length"
            elif matched:
                kept += 1
                continue
            else:
                seq.pending.append(sampled.token)
            break
        if kept < len(draft):
            if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, base + kept, -1):
                raise WorkerError("llama.cpp could not remove rejected draft tokens")
            del slot.kv_tokens[base + kept :]
        if reason is not None:
            self._finish(slot, reason)
        return emitted

    def _finish(self, slot: _Slot, reason: FinishReason) -> None:
        seq = slot.live
        assert seq is not None
        slot.live = None
        request = seq.request
        self._by_id.pop(request.request_id, None)
        close = getattr(request.constraint, "close", None)
        if close is not None:
            close()
        tail = seq.text.finish() if reason != "abort" else ""
        if tail:
            request.on_delta(tail)
        now = time.perf_counter()
        request.on_done(
            EngineOutput(
                finish_reason=reason,
                stop_string=seq.text.matched,
                prompt_tokens=len(request.prompt_tokens),
                cached_prompt_tokens=seq.cached_tokens,
                completion_tokens=seq.completion_tokens,
                logprobs=seq.logprobs,
                drafted_tokens=seq.drafted_tokens,
                accepted_tokens=seq.accepted_tokens,
                queued_s=seq.started_at - request.submitted_at,
                first_token_s=(seq.first_token_at - request.submitted_at)
                if seq.first_token_at
                else 0.0,
                total_s=now - request.submitted_at,
            )
        )

    def _fail(self, slot: _Slot, error: BaseException) -> None:
        seq = slot.live
        assert seq is not None
        slot.live = None
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.kv_tokens = []
        self._by_id.pop(seq.request.request_id, None)
        seq.request.on_done(error)

    def _fail_everything(self, error: BaseException) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            live = [s for s in self._slots if s.live is not None]
        for request in pending:
            request.on_done(error)
        for slot in live:
            seq = slot.live
            slot.live = None
            if seq is not None:
                seq.request.on_done(error)
        self._by_id.clear()

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            cached = buf.raw[:n]
            self._pieces[token] = cached
        return cached


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    left = np.asarray(a[:n])
    right = np.asarray(b[:n])
    mismatch = np.flatnonzero(left != right)
    return int(mismatch[0]) if mismatch.size else n
