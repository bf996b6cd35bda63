"""A deterministic stand-in model behind an OpenAI-compatible HTTP API (vLLM's dialect).

It answers `/chat/completions` and `/completions`, plain or streamed, from a word-level "model":
each reply is a sequence of words drawn from a small vocabulary by a generator seeded with the
prompt (temperature 0) or with the prompt and the request's seed (a sampled reply; a fresh seed
when the request has none). It honours `max_tokens`, `stop`, `logprobs` and the context window
(a 400 reply in vLLM's words when the prompt does not fit), and counts the replies it is still
writing, so a test sees whether a closed request really stopped on the server.
"""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from openai_server import HOST, _ServedInThread

VOCABULARY = (
    *("the", "a", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("cat", "dog", "sun", "moon", "tree", "river", "stone", "blue", "red", "green", "quick"),
    *("slow", "happy", "quiet", "loud", "north", "south", "east", "west"),
)
REPLY_WORDS = 400
"""Words a reply runs to when nothing stops it earlier."""


class ModelServer(_ServedInThread):
    """Serves the word model on 127.0.0.1 while the `with` block lasts.

    Args:
        context: Context window in words (prompt plus completion).
        token_delay_s: Pause before each word (streamed or not), like decoding time.
    """

    def __init__(self, *, context: int = 1024, token_delay_s: float = 0.01) -> None:
        self.context = context
        self.token_delay_s = token_delay_s
        self.model = "word-model"
        self.bodies: list[dict[str, Any]] = []
        """Every generation request received, in order."""
        self.writing = 0
        """Replies being generated or written now."""
        self.disconnects = 0
        """Replies the client closed before they ended."""
        self.words_sent = 0
        self._count_lock = threading.Lock()
        super().__init__(HOST)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                listing = {
                    "object": "list",
                    "data": [
                        {
                            "id": server.model,
                            "object": "model",
                            "owned_by": "vllm",
                            "max_model_len": server.context,
                        }
                    ],
                }
                self._json(200, listing)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length))
                with server._count_lock:
                    server.bodies.append(body)
                    server.writing += 1
                try:
                    self._answer(body, chat=self.path.endswith("/chat/completions"))
                except (BrokenPipeError, ConnectionResetError):
                    with server._count_lock:
                        server.disconnects += 1
                finally:
                    with server._count_lock:
                        server.writing -= 1

            def _answer(self, body: dict[str, Any], *, chat: bool) -> None:
                prompt = _prompt_text(body, chat=chat)
                prompt_tokens = len(prompt.split())
                max_tokens = int(body.get("max_tokens") or 16)
                if prompt_tokens + max_tokens > server.context:
                    self._json(400, _context_error(server.context, prompt_tokens, max_tokens))
                    return
                words, finish, stop = _reply(body, prompt, max_tokens)
                top = _top_logprobs(body, chat=chat)
                if body.get("stream"):
                    self._stream(words, finish, stop, top, prompt_tokens, chat=chat)
                    return
                time.sleep(server.token_delay_s * len(words))
                choice = _choice(words, finish, stop, top, chat=chat, delta=False)
                self._json(200, _reply_body(choice, prompt_tokens, len(words), chat=chat))

            def _stream(
                self,
                words: list[str],
                finish: str,
                stop: str | None,
                top: int | None,
                prompt_tokens: int,
                *,
                chat: bool,
            ) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for word in words:
                    time.sleep(server.token_delay_s)
                    chunk = _choice([word], None, None, top, chat=chat, delta=True)
                    self._event({"object": "chunk", "choices": [chunk]})
                    with server._count_lock:
                        server.words_sent += 1
                last = _choice([], finish, stop, None, chat=chat, delta=True)
                usage = _usage(prompt_tokens, len(words))
                self._event({"object": "chunk", "choices": [last], "usage": usage})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, data: dict[str, Any]) -> None:
                self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def word_logprob(word: str) -> float:
    """The model's log-probability of a word: fixed per word, always below zero."""
    return -0.05 - (sum(map(ord, word)) % 23) / 10.0


def _prompt_text(body: dict[str, Any], *, chat: bool) -> str:
    if not chat:
        return str(body.get("prompt") or "")
    return " ".join(str(m.get("content") or "") for m in body.get("messages") or ())


def _reply(body: dict[str, Any], prompt: str, max_tokens: int) -> tuple[list[str], str, str | None]:
    """The words of a reply, its finish reason and the stop string that ended it."""
    temperature = float(body.get("temperature", 1.0))
    seed = body.get("seed")
    if temperature == 0:
        rng = random.Random(prompt)
    elif seed is not None:
        rng = random.Random(f"{prompt}\x00{seed}")
    else:
        rng = random.Random()
    words = [" " + rng.choice(VOCABULARY) for _ in range(REPLY_WORDS)]
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else list(stops)
    text = "".join(words)
    hits = [(i, s) for s in stops if s and (i := text.find(s)) >= 0]
    finish, stop = "length", None
    if hits:
        cut, stop = min(hits)
        kept, used = [], 0
        for word in words:
            if used + len(word) > cut:
                if cut > used:
                    kept.append(word[: cut - used])
                break
            kept.append(word)
            used += len(word)
        words, finish = kept, "stop"
    if len(words) > max_tokens:
        words, finish, stop = words[:max_tokens], "length", None
    return words, finish, stop


def _top_logprobs(body: dict[str, Any], *, chat: bool) -> int | None:
    if chat:
        return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
    value = body.get("logprobs")
    return None if value is None else int(value)


def _choice(
    words: list[str],
    finish: str | None,
    stop: str | None,
    top: int | None,
    *,
    chat: bool,
    delta: bool,
) -> dict[str, Any]:
    text = "".join(words)
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "stop_reason": stop}
    if chat:
        choice["delta" if delta else "message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    if top is not None:
        choice["logprobs"] = _logprobs(words, top, chat=chat)
    return choice


def _logprobs(words: list[str], top: int, *, chat: bool) -> dict[str, Any]:
    alternatives = [
        {w: word_logprob(w) - 1.0 for w in (" " + v for v in VOCABULARY[:top])} for _ in words
    ]
    if chat:
        return {
            "content": [
                {
                    "token": w,
                    "logprob": word_logprob(w),
                    "top_logprobs": [{"token": t, "logprob": lp} for t, lp in alts.items()],
                }
                for w, alts in zip(words, alternatives, strict=True)
            ]
        }
    return {
        "tokens": words,
        "token_logprobs": [word_logprob(w) for w in words],
        "top_logprobs": alternatives,
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _reply_body(
    choice: dict[str, Any], prompt_tokens: int, completion_tokens: int, *, chat: bool
) -> dict[str, Any]:
    return {
        "object": "chat.completion" if chat else "text_completion",
        "choices": [choice],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def _context_error(context: int, prompt_tokens: int, max_tokens: int) -> dict[str, Any]:
    asked = prompt_tokens + max_tokens
    message = (
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{asked} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion)."
    )
    return {"error": {"message": message, "type": "BadRequestError", "code": 400}}
