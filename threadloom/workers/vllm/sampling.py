"""SamplingParams as vLLM's own `SamplingParams` arguments (pure; vLLM itself not imported)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from threadloom.errors import ConfigError
from threadloom.types import SamplingParams, StructuredOutputs

__all__ = ["vllm_sampling_arguments", "vllm_structured_fields"]


def vllm_sampling_arguments(
    params: SamplingParams,
    *,
    seed: int | None,
    structured: Callable[..., Any] | None,
    worker: str,
) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams`; the names are the same as ours.

    Args:
        params: What the request asks for.
        seed: The seed to pass (None where the engine cannot take per-request seeds).
        structured: vLLM's `StructuredOutputsParams` class, or None when the installed vLLM
            has none (then a request for structured output is a ConfigError).
        worker: The worker's id, for messages.
    """
    arguments: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "stop": list(params.stop) or None,
        "seed": seed,
        "logprobs": params.logprobs,
    }
    if params.top_k > 0:
        arguments["top_k"] = params.top_k
    for name in (
        "min_p",
        "repetition_penalty",
        "presence_penalty",
        "frequency_penalty",
        "min_tokens",
        "ignore_eos",
    ):
        if name in params.non_defaults():
            arguments[name] = getattr(params, name)
    if params.stop_token_ids:
        arguments["stop_token_ids"] = list(params.stop_token_ids)
    if params.logit_bias:
        arguments["logit_bias"] = dict(params.logit_bias)
    wanted = params.structured_outputs
    if wanted is not None:
        if structured is None:
            raise ConfigError(
                f"worker {worker} cannot honour structured_outputs: the installed vLLM has no "
                "StructuredOutputsParams; upgrade vLLM"
            )
        arguments["structured_outputs"] = structured(**vllm_structured_fields(wanted))
    return arguments


def vllm_structured_fields(wanted: StructuredOutputs) -> dict[str, Any]:
    """vLLM's `structured_outputs` fields for `wanted` (its JSON schema field is `json`)."""
    value: Any = {
        "json_schema": wanted.json_schema,
        "json_object": True,
        "regex": wanted.regex,
        "choice": list(wanted.choice or ()),
        "grammar": wanted.grammar,
    }[wanted.kind]
    return {"json" if wanted.kind == "json_schema" else wanted.kind: value}
