"""OpenAIWorkerConfig: where an OpenAI-compatible server is and how to talk to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from threadloom.workers.chat_template import ChatTemplate
from threadloom.workers.openai.dialects import DialectName
from threadloom.workers.openai.http import exposes_secrets, redact_url
from threadloom.workers.openai.protocol import Endpoint

__all__ = ["OpenAIWorkerConfig"]


class OpenAIWorkerConfig(BaseModel):
    """Where the server is and how to talk to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = "http://127.0.0.1:8000/v1"
    """The server's API root, usually ending in /v1."""
    api_key: SecretStr | None = None
    """Bearer token; None sends OPENAI_API_KEY, but only over https or to this machine."""
    allow_key_over_http: bool = False
    """Send credentials over plain http to another host (anyone on the path can read them)."""
    model: str | None = None
    """Model name sent with each request; None takes the one model the server lists (a
    server that lists several needs it named)."""
    dialect: DialectName = "auto"
    """What the server takes beyond the OpenAI API: vllm, sglang, llama.cpp, ollama, openai, or
    auto (read from its model list; the strict OpenAI API when it does not say)."""
    streaming: Literal["auto", "always", "never"] = "auto"
    """How `stream` asks: "always" server-sent events; "never" plain requests (one delta per
    reply; an abort closes the request); "auto" events until the server cuts one short (as
    llama_cpp.server does when another request arrives), plain requests from then on."""
    endpoint: Endpoint = "chat"
    """Where chat messages go: "chat", or "completions" (rendered with `chat_template`)."""
    chat_template: ChatTemplate | None = None
    """Template for rendering chat as text (a ChatTemplate, or its Jinja source)."""
    timeout: float = Field(300.0, gt=0)
    """Seconds a whole request may take; a stream may go this long without data."""
    stream_timeout: float = Field(1800.0, gt=0)
    """Seconds a whole stream may take, however often the server sends keep-alive comments."""
    connect_timeout: float = Field(10.0, gt=0)
    """Seconds to open a connection."""
    max_retries: int = Field(3, ge=0)
    """Retries after a connection failure, 429 or 5xx (0: fail on the first)."""
    backoff_s: float = Field(0.5, ge=0)
    """Scale of the jittered exponential pause between retries."""
    max_backoff_s: float = Field(20.0, ge=0)
    """Longest pause between two attempts (a server's Retry-After included)."""
    max_concurrency: int = Field(16, ge=1)
    """Requests in flight at once; more wait their turn here."""
    max_context: int = Field(0, ge=0)
    """Context window reported in capabilities (0: from the server's model list, if given)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers sent with every request."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"base_url {redact_url(value)!r} is not an http(s) URL; write e.g. "
                "http://127.0.0.1:8000/v1"
            )
        return value.strip().rstrip("/")

    @field_validator("chat_template", mode="before")
    @classmethod
    def _template_text(cls, value: Any) -> Any:
        return ChatTemplate(template=value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> OpenAIWorkerConfig:
        if self.endpoint == "completions" and self.chat_template is None:
            raise ValueError(
                "endpoint='completions' renders chat messages with chat_template: set one "
                "(e.g. ChatTemplate.from_gguf(path)) or use endpoint='chat'"
            )
        explicit = self.api_key is not None or "@" in urlsplit(self.base_url).netloc
        if explicit and exposes_secrets(self.base_url) and not self.allow_key_over_http:
            raise ValueError(
                f"base_url {redact_url(self.base_url)!r} is plain http to another host, so the "
                "credentials (api_key, or a user and password in the URL) would cross the network "
                "unencrypted: use https, or set allow_key_over_http=True on a trusted network"
            )
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "base_url" else value
