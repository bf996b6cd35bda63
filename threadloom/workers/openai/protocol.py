"""The OpenAI wire format as pure functions: request bodies, streamed events, errors.

`OpenAIWorker` does the I/O; everything here is data in, data out, so it is easy to test and
to read against the API reference of the servers it targets (vLLM, llama.cpp, SGLang). Replies
are read (and checked) in `openai_replies`.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from threadloom.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    ThreadloomError,
)
from threadloom.types import GenerationRequest
from threadloom.workers.chat_template import ChatTemplate
from threadloom.workers.openai.dialects import Dialect, dialect_named

Endpoint = Literal["chat", "completions"]


@dataclass(frozen=True)
class Call:
    """One HTTP call: the path under the base URL and the JSON body."""

    path: str
    body: dict[str, Any]

    @property
    def chat(self) -> bool:
        return self.path == "/chat/completions"


def build_call(
    request: GenerationRequest,
    *,
    endpoint: Endpoint,
    model: str | None,
    template: ChatTemplate | None,
    n: int = 1,
    stream: bool = False,
    dialect: Dialect | None = None,
    worker: str = "openai",
) -> Call:
    """The call that serves `request`.

    Raw text always goes to /completions. Chat messages go to /chat/completions, unless
    `endpoint` is "completions" or the request continues an assistant prefix and a chat
    template is given: then the template renders the chat and /completions continues the text,
    which every server supports. Without a template a prefix is sent as a trailing assistant
    message with `continue_final_message` (vLLM and SGLang honour it).

    Sampling fields beyond the basics and structured output are written as `dialect` (the
    strict OpenAI one when None) takes them; one it does not take raises ConfigError.
    """
    dialect = dialect or dialect_named("openai")
    body: dict[str, Any] = {}
    if request.text is not None:
        path = "/completions"
        body["prompt"] = request.text + request.prefix
    else:
        messages = request.messages or ()
        if endpoint == "completions" or (request.prefix and template is not None):
            if template is None:
                raise ConfigError(
                    "the completions endpoint needs a chat template to send chat messages: "
                    "set chat_template (e.g. ChatTemplate.from_gguf(path)) or use endpoint='chat'"
                )
            path = "/completions"
            body["prompt"] = template.render(messages) + request.prefix
        else:
            path = "/chat/completions"
            body["messages"] = [m.model_dump() for m in messages]
            if request.prefix:
                body["messages"].append({"role": "assistant", "content": request.prefix})
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
    if model:
        body["model"] = model
    params = request.params
    body["temperature"] = params.temperature
    body["top_p"] = params.top_p
    body["max_tokens"] = params.max_tokens
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    body.update(dialect.sampling_fields(params, worker))
    if params.structured_outputs is not None:
        body.update(dialect.structured_fields(params.structured_outputs, worker))
    if n > 1:
        body["n"] = n
    if params.logprobs is not None:
        if path == "/chat/completions":
            body["logprobs"] = True
            body["top_logprobs"] = params.logprobs
        else:
            body["logprobs"] = params.logprobs
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return Call(path, body)


# ----- streams ------------------------------------------------------------------------------


class EventStreamDecoder:
    """Turns the lines of a server-sent event stream into the data of each event."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """Take one line (without its newline); return an event's data when one is complete."""
        if not line:
            return self.flush()
        if line.startswith(":"):  # a comment, e.g. a keep-alive ping
            return None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value.removeprefix(" "))
        return None

    def flush(self) -> str | None:
        """The data of an event the stream ended in the middle of, if any."""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


# ----- errors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorBody:
    """What an error reply says, in any of the shapes servers use."""

    message: str
    code: str | None = None
    fields: dict[str, Any] | None = None

    @classmethod
    def parse(cls, text: str) -> ErrorBody:
        try:
            data = json.loads(text)
        except ValueError:
            return cls(text.strip()[:500] or "no error message")
        if not isinstance(data, dict):
            return cls(str(data)[:500])
        inner = data.get("error", data)
        if isinstance(inner, str):
            return cls(inner)
        if not isinstance(inner, dict):
            return cls(str(inner)[:500])
        message = inner.get("message") or inner.get("detail") or json.dumps(inner)[:500]
        code = inner.get("code") or inner.get("type")
        return cls(str(message), str(code) if code is not None else None, inner)


_CONTEXT_WORDS = re.compile(r"context (length|window|size)|prompt is too long", re.I)
_CONTEXT_LIMIT = re.compile(r"(?:context length|context window|n_ctx)\D{0,20}?(\d+)", re.I)
_PROMPT_TOKENS = re.compile(
    r"(\d+) (?:tokens )?in (?:your prompt|the messages)|(\d+) (?:input|prompt) tokens", re.I
)


def request_error(status: int, error: ErrorBody, where: str) -> ThreadloomError:
    """The typed error for a 4xx reply the caller has to fix (never retried)."""
    detail = f"{status}: {error.message}"
    if status in (401, 403):
        return AuthenticationError(
            f"{where} refused the request ({detail}); set api_key (or OPENAI_API_KEY) to a key "
            "the server accepts"
        )
    fields = error.fields or {}
    code = (error.code or "").lower()
    if "context" in code or "exceed" in code or _CONTEXT_WORDS.search(error.message):
        limit = fields.get("n_ctx") or _first_int(_CONTEXT_LIMIT, error.message)
        prompt = fields.get("n_prompt_tokens") or _first_int(_PROMPT_TOKENS, error.message)
        return ContextLengthError(
            f"{where} says the prompt does not fit the model's context ({detail}); shorten the "
            "prompt or lower max_tokens",
            prompt_tokens=int(prompt or 0),
            context_length=int(limit or 0),
        )
    if status == 404:
        return BadRequestError(
            f"{where} has no such route or model ({detail}); check base_url (it usually ends "
            "in /v1) and the model name",
            status_code=status,
        )
    return BadRequestError(
        f"{where} rejected the request ({detail}); fix what the message names", status_code=status
    )


def _first_int(pattern: re.Pattern[str], text: str) -> int | None:
    match = pattern.search(text)
    if match is None:
        return None
    return next(int(g) for g in match.groups() if g is not None)


def retry_after_s(header: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (a number or an HTTP date)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
