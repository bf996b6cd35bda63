"""What each kind of OpenAI-compatible server accepts beyond the OpenAI API, as pure data.

The OpenAI API itself knows `temperature`, `top_p`, `max_tokens`, `stop`, `seed`,
`presence_penalty`, `frequency_penalty`, `logit_bias` and `response_format`. vLLM and SGLang add
vLLM's sampling names and their own structured-output fields; llama_cpp.server adds `top_k`,
`min_p`, `repeat_penalty`, `min_tokens` and GBNF `grammar` (and applies its own defaults for the
first three unless told otherwise); Ollama's OpenAI endpoint adds little. A field the server's
dialect does not take is a `ConfigError` naming the worker and the field, never dropped.

The dialect is read from `/models` (`owned_by`) unless the worker is told it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from threadloom.errors import ConfigError
from threadloom.types import SamplingParams, StructuredOutputs
from threadloom.workers.vllm.sampling import vllm_structured_fields

__all__ = ["Dialect", "DialectName", "detect_dialect", "dialect_named"]

DialectName = Literal["auto", "vllm", "sglang", "llama.cpp", "ollama", "openai"]

_BASIC = frozenset({"temperature", "top_p", "max_tokens", "stop", "seed", "logprobs"})
_OPENAI_EXTRA = frozenset({"presence_penalty", "frequency_penalty", "logit_bias"})
_VLLM_EXTRA = frozenset(
    {"top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids"}
)


@dataclass(frozen=True)
class Dialect:
    """What one kind of server takes."""

    name: str
    sampling: frozenset[str]
    """SamplingParams fields (besides the basics) the server honours."""
    structured: frozenset[str]
    """StructuredOutputs kinds the server can enforce."""
    renamed: dict[str, str] = field(default_factory=dict)
    """Wire names that differ from SamplingParams' names."""
    always_sent: frozenset[str] = frozenset()
    """Fields sent even at their default (the server's own default differs)."""
    honours_n: bool = True
    """Several choices come from one request (one shared prefill)."""
    continues_prefix: bool = False
    """A trailing assistant message with continue_final_message is continued, not answered."""

    def sampling_fields(self, params: SamplingParams, worker: str) -> dict[str, Any]:
        """The body fields for `params` beyond the basics; ConfigError for what is not taken."""
        body: dict[str, Any] = {}
        wanted = set(params.non_defaults()) | self.always_sent
        for name in sorted(wanted - _BASIC - {"structured_outputs"}):
            if name not in self.sampling:
                raise ConfigError(
                    f"worker {worker} cannot honour {name}={getattr(params, name)!r}: "
                    f"{self.name} servers do not take it. Leave it at its default, or set the "
                    "worker's dialect if the server does take it (dialect='vllm')"
                )
            value: Any = getattr(params, name)
            if name == "logit_bias":
                value = {str(token): bias for token, bias in value.items()}
            elif name == "stop_token_ids":
                value = list(value)
            body[self.renamed.get(name, name)] = value
        return body

    def structured_fields(self, structured: StructuredOutputs, worker: str) -> dict[str, Any]:
        """The body fields that make the server enforce `structured`."""
        kind = structured.kind
        if kind not in self.structured:
            raise ConfigError(
                f"worker {worker} cannot honour structured_outputs.{kind}: {self.name} servers "
                f"enforce only {', '.join(sorted(self.structured)) or 'none of them'}. Use "
                "json_schema, or a worker that takes it (llamacpp, vllm)"
            )
        return _STRUCTURED_WRITERS[self.name](structured)


def _response_format(structured: StructuredOutputs) -> dict[str, Any]:
    if structured.json_object:
        return {"response_format": {"type": "json_object"}}
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": structured.json_schema},
        }
    }


def _vllm(structured: StructuredOutputs) -> dict[str, Any]:
    return {"structured_outputs": vllm_structured_fields(structured)}


def _sglang(structured: StructuredOutputs) -> dict[str, Any]:
    if structured.kind in ("json_schema", "json_object"):
        return _response_format(structured)
    if structured.kind == "grammar":
        return {"ebnf": structured.grammar}
    if structured.kind == "choice":
        return {"regex": "|".join(re.escape(c) for c in structured.choice or ())}
    return {"regex": structured.regex}


def _llama_cpp(structured: StructuredOutputs) -> dict[str, Any]:
    from threadloom.workers.llamacpp.grammar import gbnf_for

    return {"grammar": gbnf_for(structured)}


_STRUCTURED_WRITERS = {
    "vllm": _vllm,
    "sglang": _sglang,
    "llama.cpp": _llama_cpp,
    "ollama": _response_format,
    "openai": _response_format,
}

_ALL_KINDS = frozenset({"json_schema", "json_object", "regex", "choice", "grammar"})
_JSON_KINDS = frozenset({"json_schema", "json_object"})

_DIALECTS = {
    "vllm": Dialect(
        "vllm",
        _OPENAI_EXTRA | _VLLM_EXTRA,
        _ALL_KINDS,
        continues_prefix=True,
    ),
    "sglang": Dialect(
        "sglang",
        _OPENAI_EXTRA | _VLLM_EXTRA,
        _ALL_KINDS,
        continues_prefix=True,
    ),
    "llama.cpp": Dialect(
        "llama.cpp",
        _OPENAI_EXTRA | {"top_k", "min_p", "repetition_penalty", "min_tokens"},
        _ALL_KINDS,
        renamed={"repetition_penalty": "repeat_penalty"},
        # llama_cpp.server's own defaults are top_k=40, min_p=0.05, repeat_penalty=1.1
        always_sent=frozenset({"top_k", "min_p", "repetition_penalty"}),
        honours_n=False,
    ),
    "ollama": Dialect(
        "ollama",
        frozenset({"presence_penalty", "frequency_penalty"}),
        _JSON_KINDS,
        honours_n=False,
    ),
    "openai": Dialect("openai", _OPENAI_EXTRA, _JSON_KINDS),
}


def dialect_named(name: str) -> Dialect:
    """The dialect called `name` (not "auto")."""
    try:
        return _DIALECTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown server dialect {name!r}; use one of auto, {', '.join(_DIALECTS)}"
        ) from None


_OWNERS = {
    "vllm": "vllm",
    "sglang": "sglang",
    "me": "llama.cpp",  # llama_cpp.server
    "llamacpp": "llama.cpp",
    "library": "ollama",
    "ollama": "ollama",
    "openai": "openai",
    "system": "openai",
    "openai-internal": "openai",
}


def detect_dialect(listing: dict[str, Any]) -> Dialect:
    """The dialect a `/models` reply suggests; the strict OpenAI one when it says nothing."""
    models = listing.get("data")
    entries = models if isinstance(models, list) else []
    owners = [str(m.get("owned_by", "")).strip().lower() for m in entries if isinstance(m, dict)]
    for owner in owners:
        if owner in _OWNERS:
            return _DIALECTS[_OWNERS[owner]]
    return _DIALECTS["openai"]


def describe(listing: dict[str, Any]) -> str:
    """The listed model ids, for messages."""
    models = listing.get("data")
    ids = [str(m.get("id")) for m in models or () if isinstance(m, dict)]
    return json.dumps(ids[:20])[:400]
