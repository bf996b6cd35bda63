"""Validated settings of a VLLMWorker: engine options and speculative decoding.

Everything here is plain pydantic and imports no vLLM, so a bad option fails in microseconds
with a `ConfigError` naming it, before an engine (tens of seconds, several processes) starts.
The checks that need vLLM's own tables (which engine arguments exist in the installed version,
which speculative-decoding fields it knows) take those tables as arguments.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from threadloom.errors import ConfigError

Runner = Literal["generate", "pooling"]
DType = Literal["auto", "float32", "float16", "bfloat16", "half", "float"]


class _Speculation(BaseModel):
    """Fields shared by the speculative-decoding methods; other vLLM fields pass through."""

    model_config = ConfigDict(frozen=True, extra="allow")

    num_speculative_tokens: int | None = Field(None, ge=1, le=64)
    """Tokens drafted per sequence and step (some draft models carry their own default)."""

    def engine_dict(self) -> dict[str, Any]:
        """The dictionary vLLM's `speculative_config` engine argument takes."""
        return self.model_dump(exclude_none=True)

    def extra_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class NgramSpeculation(_Speculation):
    """Prompt lookup: drafts copied from earlier n-gram matches in the sequence's own text."""

    method: Literal["ngram"] = "ngram"
    num_speculative_tokens: int = Field(..., ge=1, le=64)
    prompt_lookup_min: int | None = Field(None, ge=1)
    """Shortest n-gram matched (vLLM: defaults to prompt_lookup_max, or 5 when both unset)."""
    prompt_lookup_max: int | None = Field(None, ge=1)
    """Longest n-gram matched."""

    @model_validator(mode="after")
    def _check_window(self) -> NgramSpeculation:
        low, high = self.prompt_lookup_min, self.prompt_lookup_max
        if low is not None and high is not None and low > high:
            raise ValueError(
                f"prompt_lookup_min={low} is above prompt_lookup_max={high}; "
                "the shortest n-gram cannot be longer than the longest"
            )
        return self


class DraftModelSpeculation(_Speculation):
    """A small model of the same tokenizer drafts; the target verifies."""

    method: Literal["draft_model"] = "draft_model"
    model: str
    """Hugging Face id or local folder of the draft model."""
    draft_tensor_parallel_size: int | None = Field(None, ge=1)


class EagleSpeculation(_Speculation):
    """An EAGLE / EAGLE-3 head trained for the target model drafts from its hidden states."""

    method: Literal["eagle", "eagle3"]
    model: str
    """Hugging Face id or local folder of the EAGLE head."""


class MTPSpeculation(_Speculation):
    """The target's own multi-token-prediction layers draft (DeepSeek-V3, Qwen3-Next, ...)."""

    method: Literal["mtp"] = "mtp"
    model: str | None = None
    """Usually left unset: the MTP layers live in the target checkpoint."""


SpeculativeConfig = Annotated[
    NgramSpeculation | DraftModelSpeculation | EagleSpeculation | MTPSpeculation,
    Field(discriminator="method"),
]
SPECULATIVE_METHODS = ("ngram", "draft_model", "eagle", "eagle3", "mtp")


class VLLMConfig(BaseModel):
    """Engine options of a VLLMWorker; `engine_kwargs` carries any other AsyncEngineArgs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    """Hugging Face model id or local folder (safetensors + config + tokenizer)."""
    runner: Runner = "generate"
    """'generate' for text generation; 'pooling' hosts a reward / classification model."""
    tokenizer: str | None = None
    """Tokenizer id or folder when it differs from the model's."""
    dtype: DType = "auto"
    """Weight and activation dtype; 'float32' runs best on CPUs without bf16 support."""
    max_model_len: int | None = Field(None, ge=16)
    """Tokens per sequence (prompt plus completion); None: the model's own limit."""
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    """Fraction of GPU memory the engine may take (weights plus KV cache)."""
    kv_cache_memory_bytes: int | None = Field(None, ge=1 << 20)
    """KV-cache size in bytes; overrides gpu_memory_utilization (and sizes the CPU cache)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """Devices one engine spans."""
    max_num_seqs: int | None = Field(None, ge=1)
    """Sequences decoded together in one step (None: vLLM's default for the platform)."""
    enforce_eager: bool = False
    """Skip graph capture and compilation: faster start, slower steps on GPUs; best on CPUs."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes (whole blocks only)."""
    enable_chunked_prefill: bool | None = None
    """None: vLLM's default, except off on CPUs, where chunked prefill breaks seeded requests."""
    seed: int = 0
    """Seed of the engine's global random state."""
    speculative_config: SpeculativeConfig | None = None
    """Speculative decoding (ngram, draft_model, eagle, eagle3, mtp); None: off."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Further vLLM AsyncEngineArgs fields (checked against the installed vLLM)."""

    @model_validator(mode="after")
    def _check(self) -> VLLMConfig:
        named = set(type(self).model_fields) - {"engine_kwargs"}
        doubled = sorted(named & set(self.engine_kwargs))
        if doubled:
            raise ValueError(
                f"engine_kwargs sets {', '.join(doubled)}, which VLLMConfig names itself; "
                f"pass {doubled[0]}=... directly instead"
            )
        if self.runner == "pooling" and self.speculative_config is not None:
            raise ValueError(
                "speculative_config does not apply to runner='pooling' (a pooling model "
                "scores prompts and generates nothing); drop it"
            )
        return self

    def engine_arguments(self, *, on_cpu: bool) -> dict[str, Any]:
        """Keyword arguments for vLLM's AsyncEngineArgs.

        Args:
            on_cpu: The engine runs on vLLM's CPU platform; chunked prefill is then turned off
                unless the config asks for it (see `seeds_supported`).
        """
        args: dict[str, Any] = {
            "model": self.model,
            "runner": self.runner,
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.enforce_eager,
            "enable_prefix_caching": self.enable_prefix_caching,
            "seed": self.seed,
        }
        optional = {
            "tokenizer": self.tokenizer,
            "max_model_len": self.max_model_len,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
            "max_num_seqs": self.max_num_seqs,
            "enable_chunked_prefill": self.enable_chunked_prefill,
        }
        args.update({k: v for k, v in optional.items() if v is not None})
        if on_cpu and self.enable_chunked_prefill is None and self.runner == "generate":
            args["enable_chunked_prefill"] = False
        if self.speculative_config is not None:
            args["speculative_config"] = self.speculative_config.engine_dict()
            args["per_request_spec_decode_metrics"] = "summary"
        args.update(self.engine_kwargs)
        return args

    def seeds_supported(self, *, on_cpu: bool) -> bool:
        """Whether per-request seeds are safe: not on a CPU engine with chunked prefill on.

        vLLM's CPU sampler cannot rewind a seeded generator after a partial prefill
        (`RuntimeError: CPU Generator does not use offset`, which kills the engine).
        """
        chunked = self.engine_kwargs.get("enable_chunked_prefill", self.enable_chunked_prefill)
        return not (on_cpu and chunked)


def build_config(
    model: str | VLLMConfig | None,
    options: Mapping[str, Any],
    speculation: Any = None,
) -> VLLMConfig:
    """A VLLMConfig from a worker's arguments, every mistake as a ConfigError naming the option.

    Args:
        model: A model id or folder, or a finished VLLMConfig.
        options: VLLMConfig fields given as keyword arguments.
        speculation: Alias of `speculative_config` (what cluster files pass): a dict with a
            `method`, a speculation model, "off" or None.
    """
    if isinstance(model, VLLMConfig):
        if options or speculation is not None:
            raise ConfigError(
                "give engine options inside the VLLMConfig or as keyword arguments, not both"
            )
        return model
    data = dict(options)
    if isinstance(speculation, str) and speculation != "off":
        raise ConfigError(
            f"speculation={speculation!r} is not available on vLLM, whose speculation is fixed "
            "when its engine starts (no adaptive on/off); pass a speculative config such as "
            "{'method': 'ngram', 'num_speculative_tokens': 4}, or 'off'"
        )
    if speculation is not None and speculation != "off":
        if "speculative_config" in data:
            raise ConfigError("give speculation or speculative_config, not both")
        data["speculative_config"] = speculation
    if model is None and "model" not in data:
        raise ConfigError(
            "the vLLM worker needs a model: a Hugging Face id or a local folder with "
            "safetensors weights (e.g. 'vllm:Qwen/Qwen2.5-0.5B-Instruct')"
        )
    if model is not None:
        if "model" in data:
            raise ConfigError("the model is given twice (positionally and as model=...)")
        data["model"] = str(model)
    try:
        return VLLMConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def check_engine_fields(config: VLLMConfig, engine_fields: Iterable[str]) -> None:
    """Fail on an engine_kwargs key that the installed vLLM's AsyncEngineArgs lacks."""
    known = set(engine_fields)
    for key in config.engine_kwargs:
        if key not in known:
            raise ConfigError(
                f"engine_kwargs option {key!r} is not an AsyncEngineArgs field of the "
                f"installed vLLM{_suggest(key, known)}"
            )


def check_speculation_fields(config: VLLMConfig, speculative_fields: Iterable[str]) -> None:
    """Fail on a speculative_config key that the installed vLLM's SpeculativeConfig lacks."""
    spec = config.speculative_config
    if spec is None:
        return
    known = set(speculative_fields)
    for key in spec.extra_fields():
        if key not in known:
            raise ConfigError(
                f"speculative_config option {key!r} is not a field of the installed vLLM's "
                f"SpeculativeConfig{_suggest(key, known)}"
            )


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"])
        if error["type"] == "union_tag_invalid" or error["type"] == "union_tag_not_found":
            parts.append(
                f"{location or 'speculative_config'}: method must be one of "
                f"{', '.join(SPECULATIVE_METHODS)}"
            )
            continue
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown option (VLLMConfig fields: {', '.join(VLLMConfig.model_fields)})"
        parts.append(f"{location}: {message}" if location else message)
    return "invalid vLLM worker settings: " + "; ".join(parts)
