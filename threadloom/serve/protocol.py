"""Request bodies of the OpenAI API as threadloom reads them.

Unknown fields are ignored, as OpenAI's own server does; known fields are checked, and a bad
value becomes a 400 naming the field. Threadloom's own options travel in a `threadloom` field
(the `openai` SDK sends it with `extra_body={"threadloom": {...}}`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from threadloom.types import Budget


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    """One part of a message's content; only text parts are understood."""

    type: Literal["text"]
    text: str


class MessageIn(_Lenient):
    """A chat message as clients send it."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Lenient):
    include_usage: bool = False


class ThreadloomOptions(BaseModel):
    """What a request may choose beyond the OpenAI fields."""

    model_config = ConfigDict(extra="forbid")

    strategy: str | dict[str, Any] | None = None
    """A strategy spec ("best-of-n:n=8") or graph name; overrides the model id's strategy."""
    verifier: str | None = None
    """Verifier that scores candidates ("numeric", "math", "regex:...", ...)."""
    budget: Budget | None = None
    """Limits on generations, tokens, verifier calls and wall time for this request."""


class SamplingFields(_Lenient):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    threadloom: ThreadloomOptions | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        if isinstance(value, list) and any(not s for s in value):
            raise ValueError("stop sequences must be non-empty")
        return value

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(SamplingFields):
    """`POST /v1/chat/completions`."""

    messages: list[MessageIn] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(SamplingFields):
    """`POST /v1/completions`; one prompt per request."""

    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("send one prompt per request (a string or a list of one)")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
