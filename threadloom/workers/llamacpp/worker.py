"""LlamaCppWorker: the embedded default worker, llama.cpp in-process with batched decoding."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from threadloom.errors import (
    ConfigError,
    ContextLengthError,
    MissingDependencyError,
    ModelNotFoundError,
)
from threadloom.types import ChatMessage, Completion, GenerationRequest, TokenLogprob
from threadloom.unicode_text import replace_lone_surrogates
from threadloom.workers.base import StreamDelta, WorkerCapabilities
from threadloom.workers.chat_template import ChatTemplate
from threadloom.workers.core import BaseWorker, CompletionBuilder, ThreadBridge
from threadloom.workers.llamacpp.speculation import (
    SPECULATION_MODES,
    SpeculationConfig,
    SpeculationMode,
)
from threadloom.workers.models import BUNDLED_NAME, bundled_model_path, resolve_model_path

try:
    import llama_cpp
except ImportError as exc:  # pragma: no cover - llama-cpp-python is a core dependency
    raise MissingDependencyError(
        "the llama.cpp worker needs llama-cpp-python: pip install llama-cpp-python"
    ) from exc

from threadloom.workers.llamacpp.engine import BatchedEngine, EngineOutput, EngineRequest
from threadloom.workers.llamacpp.grammar import gbnf_for
from threadloom.workers.llamacpp.sampling import TokenConstraint

SLOTS_PER_CORE = 8
"""Batch slots per usable CPU core by default: on the 2-core reference machine the aggregate
decode rate of SmolLM2-135M grows to about 8 sequences per core (104 tok/s at 8, 109 at 16)
and no further, while each extra slot adds latency to every sequence in the batch."""
MAX_DEFAULT_SLOTS = 32
CONTEXT_PER_SLOT = 2048
"""KV cells each slot owns by default (prompt plus completion of one request): about 23 KB per
cell for SmolLM2-135M, so 16 slots hold 0.75 GB."""
logger = logging.getLogger(__name__)


def default_slots() -> int:
    """Batch slots that fit this machine: `SLOTS_PER_CORE` per usable core, at most 32."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(4, min(MAX_DEFAULT_SLOTS, SLOTS_PER_CORE * cores))


class LlamaCppWorker(BaseWorker):
    """Generates with a GGUF model in this process; many requests share each forward pass.

    Args:
        model: Path of a GGUF file; None loads the bundled SmolLM2-135M-Instruct.
        n_ctx: KV-cache cells in all; each of the `n_slots` sequences owns `n_ctx // n_slots`
            (llama.cpp may round it up; `capabilities.max_context` says what it gave), the
            longest prompt plus completion one request may have. None for `CONTEXT_PER_SLOT`
            tokens per slot.
        n_slots: Sequences decoded together (live requests plus cached prefixes); None for
            `default_slots()`, which fits the machine's cores.
        max_batch_tokens: Tokens per forward pass (decode tokens plus prompt chunks).
        n_threads: CPU threads for llama.cpp; defaults to the number of cores.
        speculation: Prompt-lookup speculative decoding: "off", "on", or "adaptive" (draft
            only while it measures faster than plain decoding), or a full SpeculationConfig.
        num_pred_tokens: Most tokens drafted per sequence and step (with a mode string).
        max_ngram_size: Longest n-gram looked up in a sequence's history (with a mode string).
        flash_attention: llama.cpp's flash attention. Off by default: on a 2-core CPU it
            measured slower (384-token sequences: 73 against 82 tok/s on one, 147 against
            181 on 16). On, a sequence's logits are the same bit for bit whether a step feeds
            it one token or a token and its draft, so seeded sampling writes the same text
            with or without speculation (off, rounding may differ and flip a near tie).
        worker_id: Name used in traces and pools.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        n_ctx: int | None = None,
        n_slots: int | None = None,
        max_batch_tokens: int = 1024,
        n_threads: int | None = None,
        speculation: SpeculationMode | SpeculationConfig = "adaptive",
        num_pred_tokens: int | None = None,
        max_ngram_size: int | None = None,
        flash_attention: bool = False,
        worker_id: str | None = None,
    ) -> None:
        if n_slots is None:
            n_slots = default_slots()
        if not 1 <= n_slots <= llama_cpp.llama_max_parallel_sequences():
            raise ConfigError(
                f"n_slots={n_slots} is out of range; llama.cpp allows 1 to "
                f"{llama_cpp.llama_max_parallel_sequences()} sequences"
            )
        if n_ctx is None:
            n_ctx = CONTEXT_PER_SLOT * n_slots
        if n_ctx // n_slots < 64:
            raise ConfigError(
                f"n_ctx={n_ctx} leaves {n_ctx // n_slots} cells to each of the {n_slots} "
                f"slots; use at least 64 per slot (n_ctx >= {64 * n_slots}), or leave n_ctx "
                f"unset for {CONTEXT_PER_SLOT} per slot"
            )
        spec_config = _speculation_config(speculation, num_pred_tokens, max_ngram_size)
        self.model_path = resolve_model_path(model)
        self.worker_id = worker_id or f"llamacpp-{uuid.uuid4().hex[:6]}"
        threads = n_threads or os.cpu_count() or 1
        try:
            self._llama = _load_model(self.model_path)
        except (ValueError, RuntimeError) as exc:
            raise ModelNotFoundError(
                f"llama.cpp could not load {self.model_path}: {exc}. Check that the file is a "
                "complete GGUF model (re-download or re-convert it)."
            ) from exc
        self._engine = BatchedEngine(
            self._llama.model,
            n_ctx=n_ctx,
            n_slots=n_slots,
            max_batch_tokens=max_batch_tokens,
            n_threads=threads,
            speculation=spec_config,
            flash_attention=flash_attention,
            name=self.worker_id,
        )
        metadata: dict[str, str] = dict(self._llama.metadata())
        template = metadata.get("tokenizer.chat_template")
        self._bos = self._token_text(self._llama.token_bos())
        self._eos = self._token_text(self._llama.token_eos())
        self._template = (
            ChatTemplate(template=template, bos_token=self._bos, eos_token=self._eos)
            if template
            else None
        )
        self._model_name = (
            BUNDLED_NAME
            if self.model_path == _bundled_or_none()
            else metadata.get("general.name", self.model_path.name)
        )

    @property
    def capabilities(self) -> WorkerCapabilities:
        return WorkerCapabilities(
            logprobs=True,
            prefix_caching=True,
            speculative_decoding=self._engine.speculation.config.mode != "off",
            max_context=self._engine.n_ctx_seq,
            max_batch=len(self._engine._slots),
            model=self._model_name,
        )

    def stats(self) -> dict[str, Any]:
        """Engine counters: steps, decoded and prefilled tokens, prefix-cache hits, and under
        "speculation" the mode in use, its measured goodput and its draft counters (a
        `SpeculationState` as plain data)."""
        stats: dict[str, Any] = dict(self._engine.stats().__dict__)
        stats["speculation"] = self._engine.speculation.state().model_dump()
        return stats

    # ----- prompt building ------------------------------------------------------------------

    def render(self, request: GenerationRequest) -> str:
        """The exact prompt text the model sees (chat template applied, prefix appended)."""
        if request.text is not None:
            return request.text + request.prefix
        if self._template is None:
            raise ConfigError(
                f"{self.model_path.name} has no chat template; send plain-text requests "
                "(GenerationRequest(text=...)) or use a chat model"
            )
        return self._template.render(request.messages or ()) + request.prefix

    def tokenize(
        self, text: str, *, special: bool = True, add_bos: bool | None = None
    ) -> list[int]:
        """Token ids of `text`.

        Args:
            text: Any string; a lone surrogate (undecodable input) is read as U+FFFD.
            special: Read control-token text such as '<|im_end|>' as the control token. Only
                for text the caller wrote as a template, never for message contents.
            add_bos: Put the BOS token first (if the model uses one); by default when the
                text does not already start with it.
        """
        if add_bos is None:
            add_bos = not (self._bos and text.startswith(self._bos))
        data = replace_lone_surrogates(text).encode("utf-8")
        return list(self._llama.tokenize(data, add_bos=add_bos, special=special))

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids. Control tokens come only from the chat template (or from a
        plain-text request's own text): message contents and the assistant prefix are tokenized
        as text, so a message that spells '<|im_end|>' cannot end its turn or open another."""
        if request.text is not None:
            return self.tokenize(request.text) + self._plain_tokens(request.prefix)
        if self._template is None:
            return self.tokenize(self.render(request))  # render raises: chat needs a template
        pieces = self._template_pieces(request)
        if pieces is None:
            logger.warning(
                "the chat template of %s changes message contents; tokenizing the rendered "
                "prompt as a whole (control-token text in messages is not neutralized)",
                self.model_path.name,
            )
            return self.tokenize(self.render(request))
        head, *rest = pieces
        tokens = self.tokenize(head)
        for content, template_text in zip(rest[::2], rest[1::2], strict=True):
            tokens += self._plain_tokens(content)
            tokens += self.tokenize(template_text, add_bos=False)
        return tokens + self._plain_tokens(request.prefix)

    def _plain_tokens(self, text: str) -> list[int]:
        return self.tokenize(text, special=False, add_bos=False) if text else []

    def _template_pieces(self, request: GenerationRequest) -> list[str] | None:
        """The rendered prompt as [template, content 0, template, content 1, ..., template],
        or None when the template does not copy each content through unchanged."""
        assert self._template is not None
        messages = [m.model_dump() for m in request.messages or ()]
        tag = uuid.uuid4().hex
        markers = [f"\ue000{tag}:{i}\ue001" for i in range(len(messages))]
        for message, marker in zip(messages, markers, strict=True):
            message["content"] = marker
        rendered = self._template.render(messages)
        parts = re.split(f"\ue000{tag}:(\\d+)\ue001", rendered)
        order = [int(i) for i in parts[1::2]]
        if order != list(range(len(messages))):
            return None
        pieces = [parts[0]]
        for index, template_text in zip(order, parts[2::2], strict=True):
            pieces += [str((request.messages or ())[index].content), template_text]
        return pieces

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    def _encode(self, request: GenerationRequest) -> list[int]:
        tokens = self.prompt_tokens(request)
        limit = self._engine.n_ctx_seq
        if len(tokens) >= limit:
            raise ContextLengthError(
                f"the prompt is {len(tokens)} tokens but the context window holds {limit}: "
                "shorten the prompt or create the worker with a larger n_ctx",
                prompt_tokens=len(tokens),
                context_length=limit,
            )
        return tokens

    # ----- Worker protocol ------------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        tokens = self._encode(request)
        constraint = self._constraint(request)
        rid = request.request_id
        result = CompletionBuilder(request, self.worker_id, prompt_tokens=len(tokens))
        bridge: ThreadBridge[StreamDelta | EngineOutput] = ThreadBridge(
            abort=lambda: self._engine.abort(rid),
            is_last=lambda item: isinstance(item, EngineOutput),
        )
        counted = 0

        def on_delta(text: str) -> None:  # on the engine thread, with `decoded` up to date
            nonlocal counted
            fresh, counted = engine_request.decoded - counted, engine_request.decoded
            result.add(text, fresh)
            bridge.put(StreamDelta(text=text, tokens=fresh))

        engine_request = EngineRequest(
            request_id=rid,
            prompt_tokens=tokens,
            params=request.params,
            on_delta=on_delta,
            on_done=bridge.put,
            constraint=constraint,
            submitted_at=result.started,
        )
        self._engine.submit(engine_request)
        async for item in bridge.drain():
            if isinstance(item, StreamDelta):
                yield item
            else:
                yield StreamDelta(text="", completion=self._completion(result, item))

    def _constraint(self, request: GenerationRequest) -> TokenConstraint | None:
        """The grammar that enforces the request's structured output, if it asks for one."""
        structured = request.params.structured_outputs
        if structured is None:
            return None
        if request.prefix:
            raise ConfigError(
                f"worker {self.worker_id} cannot apply structured_outputs to a request that "
                "continues an assistant prefix (the grammar starts at the reply's first "
                "token); drop the prefix or the constraint"
            )
        return self._engine.grammar(gbnf_for(structured))

    def _completion(self, result: CompletionBuilder, out: EngineOutput) -> Completion:
        """The final Completion: the streamed text plus what only the engine counted."""
        result.completion_tokens = out.completion_tokens
        result.cached_prompt_tokens = out.cached_prompt_tokens
        result.drafted_tokens, result.accepted_tokens = out.drafted_tokens, out.accepted_tokens
        result.queued_s = out.queued_s
        result.first_token_s = out.first_token_s
        if out.logprobs is not None and result.logprobs is not None:
            result.logprobs[:] = [
                TokenLogprob(
                    token=self._piece_text(s.token),
                    logprob=s.logprob,
                    top={self._piece_text(t): lp for t, lp in s.top},
                )
                for s in out.logprobs
            ]
        return result.finish(out.finish_reason, out.stop_string)

    def _piece_text(self, token: int) -> str:
        return self._engine.piece(token).decode("utf-8", errors="replace")

    async def abort(self, request_id: str) -> bool:
        return self._engine.abort(request_id)

    async def _shutdown(self) -> None:
        await asyncio.to_thread(self._engine.close)
        self._llama.close()

    def chat_request(self, prompt: str, **params: Any) -> GenerationRequest:
        """Convenience: a single-turn chat request."""
        from threadloom.types import SamplingParams

        return GenerationRequest(
            messages=(ChatMessage(role="user", content=prompt),),
            params=SamplingParams(**params),
        )


def _speculation_config(
    speculation: SpeculationMode | SpeculationConfig,
    num_pred_tokens: int | None,
    max_ngram_size: int | None,
) -> SpeculationConfig:
    if isinstance(speculation, SpeculationConfig):
        if num_pred_tokens is not None or max_ngram_size is not None:
            raise ConfigError(
                "give num_pred_tokens and max_ngram_size inside the SpeculationConfig, "
                "not beside it"
            )
        return speculation
    if speculation not in SPECULATION_MODES:
        raise ConfigError(
            f"speculation={speculation!r} is not a mode; use one of {', '.join(SPECULATION_MODES)}"
        )
    options: dict[str, Any] = {"mode": speculation}
    if num_pred_tokens is not None:
        options["num_pred_tokens"] = num_pred_tokens
    if max_ngram_size is not None:
        options["max_ngram_size"] = max_ngram_size
        options["min_ngram_size"] = min(max_ngram_size, SpeculationConfig().min_ngram_size)
    try:
        return SpeculationConfig(**options)
    except ValueError as exc:
        raise ConfigError(f"invalid speculation settings: {exc}") from None


def _bundled_or_none() -> Path | None:
    try:
        return bundled_model_path()
    except ModelNotFoundError:
        return None


def _load_model(path: Path) -> Any:
    """The model's weights and vocabulary, loaded once for the engine and the tokenizer.

    llama.cpp's AMX matrix kernels (chosen through its "extra buffer types" on CPUs with AMX
    tiles) crash in multi-token batched decoding of this model, so those buffer types are
    turned off on such CPUs; elsewhere llama.cpp keeps its defaults.
    """
    from llama_cpp._internals import LlamaModel
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp's load and context logs, silenced as Llama(verbose=False) does
    params = llama_cpp.llama_model_default_params()
    if _cpu_has_amx():
        params.use_extra_bufts = False
    return LlamaModel(path_model=str(path), params=params, verbose=False)


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            return any(
                line.startswith("flags") and "amx_tile" in line.split() for line in info
            )
    except OSError:
        return False
