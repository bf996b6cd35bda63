"""Structured output for the llama.cpp worker: every constraint becomes a GBNF grammar.

A JSON schema, a regular expression, a choice list or "any JSON object" is translated to GBNF
(with llama-cpp-python's schema converter); llama.cpp's grammar sampler then says, token by
token, which candidates may come next. Only the candidates `TokenSampler` would draw from are
checked, so a step costs little when the model already writes what the grammar wants.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

import numpy as np

from threadloom.errors import ConfigError
from threadloom.types import StructuredOutputs

__all__ = ["GrammarConstraint", "gbnf_for"]

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


def gbnf_for(structured: StructuredOutputs) -> str:
    """The GBNF grammar (root rule `root`) that enforces `structured`."""
    from llama_cpp import llama_grammar

    def converter(*, raw_pattern: bool) -> Any:
        return llama_grammar.SchemaConverter(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=raw_pattern
        )

    if structured.grammar is not None:
        return structured.grammar
    if structured.json_object:
        return llama_grammar.JSON_GBNF
    if structured.choice is not None:
        alternatives = " | ".join(json.dumps(c, ensure_ascii=False) for c in structured.choice)
        return f"root ::= {alternatives}\n"
    try:
        if structured.regex is not None:
            regex = converter(raw_pattern=True)
            pattern = structured.regex
            regex.visit({"type": "string", "pattern": f"^{pattern.strip('^$')}$"}, "")
            return str(regex.format_grammar())
        schema_converter = converter(raw_pattern=False)
        schema = schema_converter.resolve_refs(structured.json_schema, "schema")
        schema_converter.visit(schema, "")
        return str(schema_converter.format_grammar())
    except Exception as exc:  # the converter raises bare exceptions of several kinds
        raise ConfigError(
            f"cannot turn the {structured.kind} constraint into a llama.cpp grammar ({exc}); "
            "simplify it or pass a GBNF grammar instead"
        ) from exc


class GrammarConstraint:
    """llama.cpp's grammar sampler for one sequence, as a `TokenConstraint`.

    Args:
        vocab: The model's `llama_vocab` pointer.
        grammar: GBNF text whose root rule is `root`.

    Raises:
        ConfigError: llama.cpp cannot parse the grammar.
    """

    def __init__(self, vocab: Any, grammar: str) -> None:
        import llama_cpp

        self._llama = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar.encode("utf-8"), b"root"
        )
        if not self._sampler:
            raise ConfigError(
                "llama.cpp cannot parse the grammar (its log names the line); check the GBNF "
                f"text, which starts {grammar[:120]!r}"
            )

    def allowed(self, tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        data = np.empty(tokens.size, dtype=_TOKEN_DATA)
        data["id"] = tokens
        data["logit"] = logits
        data["p"] = 0.0
        array = self._llama.llama_token_data_array(
            data=data.ctypes.data_as(self._llama.llama_token_data_p),
            size=tokens.size,
            selected=-1,
            sorted=False,
        )
        self._llama.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return np.isfinite(data["logit"]) & (data["logit"] > -1e30)

    def accept(self, token: int) -> None:
        self._llama.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        if self._sampler:
            self._llama.llama_sampler_free(self._sampler)
            self._sampler = None

    def __del__(self) -> None:
        self.close()
