"""Chat templates: rendering chat messages into a model's prompt text, as its authors intended.

Model authors write their templates for the Jinja environment that Hugging Face transformers
provides, and many rely on more than plain Jinja: `raise_exception(message)` to refuse a
conversation, `strftime_now(format)` for today's date, `{% break %}`/`{% continue %}` in loops,
a `tojson` filter that writes JSON as it is (plain Jinja's escapes `<`, `>`, `&` and `'` for
HTML), and a `{% generation %}` block that marks the assistant's text. `ChatTemplate` renders
in such an environment (sandboxed: a template cannot reach Python internals), so the llama.cpp
worker and the OpenAI worker (when it renders chats itself) build the same prompt the model was
trained on. The compiled template is cached per ChatTemplate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, PrivateAttr

from threadloom.errors import ConfigError
from threadloom.types import ChatMessage

__all__ = ["ChatTemplate", "TemplateRefused"]


class TemplateRefused(ConfigError):
    """The chat template itself refused the conversation (its `raise_exception`)."""


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` renders its body unchanged."""

    tags = {"generation"}  # noqa: RUF012 - Jinja declares it as a plain class attribute

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)  # the tag's name
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _refuse(message: object) -> NoReturn:
    raise TemplateRefused(f"the chat template refused the conversation: {message}")


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _refuse
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate(BaseModel):
    """A Jinja chat template, for rendering chat messages into prompt text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str
    """The template source (as in a tokenizer config or GGUF metadata)."""
    bos_token: str = ""
    """Text of the beginning-of-sequence token, for templates that write it."""
    eos_token: str = ""
    """Text of the end-of-sequence token, for templates that write it."""

    _compiled: jinja2.Template | None = PrivateAttr(default=None)

    def compiled(self) -> jinja2.Template:
        """The compiled template (compiled once).

        Raises:
            ConfigError: The source is not a valid Jinja template.
        """
        if self._compiled is None:
            try:
                self._compiled = _environment().from_string(self.template)
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError(
                    f"the chat template does not parse (line {exc.lineno}: {exc.message}); "
                    "pass the template exactly as the model's tokenizer config holds it"
                ) from None
        return self._compiled

    def render(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **variables: Any,
    ) -> str:
        """The prompt text for `messages`, by default ending with the opening of the
        assistant's turn.

        Args:
            messages: The chat, as ChatMessages or as role/content mappings.
            add_generation_prompt: Open the assistant's turn at the end.
            **variables: Further template variables (e.g. `tools`, `date_string`).

        Raises:
            TemplateRefused: The template's own check refused the conversation (for example
                roles that do not alternate).
            ConfigError: The template failed while rendering (the message says where).
        """
        dicts = [m.model_dump() if isinstance(m, ChatMessage) else dict(m) for m in messages]
        try:
            return self.compiled().render(
                messages=dicts,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **variables,
            )
        except ConfigError:
            raise
        except jinja2.TemplateError as exc:
            raise ConfigError(
                f"the chat template failed on these messages: {exc}; check the template or "
                "send plain-text requests"
            ) from None

    @classmethod
    def from_gguf(cls, model: str | Path | None = None) -> ChatTemplate:
        """The chat template stored in a GGUF file (None: the bundled SmolLM2 model).

        Raises:
            ConfigError: The file has no chat template.
        """
        import llama_cpp

        from threadloom.workers.models import resolve_model_path

        path = resolve_model_path(model)
        llama = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        try:
            template = llama.metadata.get("tokenizer.chat_template")
            if not template:
                raise ConfigError(f"{path.name} has no chat template; pass one as text instead")

            def text(token: int) -> str:
                if token < 0:
                    return ""
                return llama.detokenize([token], special=True).decode("utf-8", errors="replace")

            return cls(
                template=template,
                bos_token=text(llama.token_bos()),
                eos_token=text(llama.token_eos()),
            )
        finally:
            llama.close()
