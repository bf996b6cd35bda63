"""Pydantic models shared by every part of threadloom."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "abort"]
AnswerFormat = Literal["auto", "text", "number", "boxed", "code", "expression", "json", "choice"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatMessage(_Frozen):
    """One chat turn."""

    role: Role
    content: str


class Problem(_Frozen):
    """What the user wants solved: a prompt or chat messages, plus optional grading hints."""

    prompt: str | None = None
    """The user's question; give this or `messages`."""
    messages: tuple[ChatMessage, ...] | None = None
    """A full chat to continue instead of a single prompt."""
    system: str | None = None
    """A system prompt put before the user's turn."""
    reference: str | None = None
    """The known correct answer, if any (oracle verifiers and grading use it)."""
    answer_format: AnswerFormat = "auto"
    """How the final answer is written, which decides how it is extracted ("auto": a boxed
    answer, else an 'Answer:' line, else the last number of a short reply, else the text)."""
    id: str = ""
    """An identifier (dataset row id); empty for ad-hoc problems."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free data carried along (e.g. unit tests for code problems)."""

    @model_validator(mode="after")
    def _check_prompt(self) -> Problem:
        if self.messages is None and self.prompt is None:
            raise ValueError("a Problem needs a prompt or messages")
        if self.messages is not None and self.prompt is not None:
            raise ValueError("give a Problem either a prompt or messages, not both")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("the prompt is empty: pass the question to solve")
        if self.messages is not None and not self.messages:
            raise ValueError("messages is empty: pass at least one user message")
        return self

    def chat(self) -> tuple[ChatMessage, ...]:
        """The problem as chat messages (system first when given)."""
        head = (ChatMessage(role="system", content=self.system),) if self.system else ()
        if self.messages is not None:
            return head + self.messages
        return (*head, ChatMessage(role="user", content=self.prompt or ""))

    def without_reference(self) -> Problem:
        """A copy that hides the reference answer from strategies being evaluated."""
        return self.model_copy(update={"reference": None})


class StructuredOutputs(_Frozen):
    """A constraint on what the model may write; set exactly one field (names follow vLLM's).

    Workers enforce it while decoding: llama.cpp through a grammar, vLLM through its
    `structured_outputs`, OpenAI-compatible servers through `response_format` (and the
    server-specific fields for regex, choice and grammar).
    """

    json_schema: dict[str, Any] | None = None
    """A JSON schema the reply must satisfy (vLLM's `json`)."""
    json_object: bool = False
    """Any JSON object."""
    regex: str | None = None
    """A regular expression the whole reply must match."""
    choice: tuple[str, ...] | None = None
    """The reply is exactly one of these strings."""
    grammar: str | None = None
    """A GBNF grammar (llama.cpp's format) whose `root` rule the reply must match."""

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        given = [
            name
            for name in ("json_schema", "regex", "choice", "grammar")
            if getattr(self, name) is not None
        ] + (["json_object"] if self.json_object else [])
        if len(given) != 1:
            raise ValueError(
                "structured_outputs needs exactly one of json_schema, json_object, regex, "
                f"choice or grammar; got {', '.join(given) or 'none'}"
            )
        if self.choice is not None and (not self.choice or any(not c for c in self.choice)):
            raise ValueError("choice needs at least one non-empty string")
        for name in ("regex", "grammar"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ValueError(f"{name} is empty")
        return self

    @property
    def kind(self) -> str:
        """The field that is set: json_schema, json_object, regex, choice or grammar."""
        if self.json_object:
            return "json_object"
        fields = ("json_schema", "regex", "choice", "grammar")
        return next(n for n in fields if getattr(self, n) is not None)


class SamplingParams(_Frozen):
    """How to sample one completion; names follow vLLM's.

    A field a worker cannot honour raises `ConfigError` naming the worker and the field when
    the request reaches it; nothing is dropped silently.
    """

    temperature: float = Field(0.7, ge=0.0, le=5.0)
    """0 means greedy decoding."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_tokens: int = Field(256, ge=1)
    """Upper bound on generated tokens."""
    stop: tuple[str, ...] = ()
    """Strings that end the completion (not included in the text)."""
    seed: int | None = None
    """Seed for this request's sampler; None draws fresh entropy."""
    logprobs: int | None = Field(None, ge=0, le=20)
    """Return the sampled token's log-probability plus this many alternatives per token."""
    top_k: int = Field(0, ge=-1)
    """Sample among the k most likely tokens only (0 or -1: all)."""
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    """Drop tokens less likely than this fraction of the most likely one (0: off)."""
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    """Divide positive (multiply negative) logits of tokens already in the prompt or reply."""
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    """Subtract from the logit of every token the reply already holds."""
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    """Subtract this times the count of each token in the reply so far."""
    min_tokens: int = Field(0, ge=0)
    """End-of-sequence and `stop_token_ids` are not sampled before this many tokens."""
    ignore_eos: bool = False
    """Never end at the end-of-sequence token; decode up to `max_tokens`."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end the completion (not included in the text)."""
    logit_bias: dict[int, float] = Field(default_factory=dict)
    """Added to the logits of these token ids before sampling (-100 bans, 100 forces)."""
    structured_outputs: StructuredOutputs | None = None
    """Constrain the reply to a JSON schema, regex, choice list or grammar."""

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[int, float]) -> dict[int, float]:
        for token, bias in value.items():
            if token < 0 or not -100.0 <= bias <= 100.0:
                raise ValueError(
                    f"logit_bias {{{token}: {bias}}}: token ids are >= 0 and biases in "
                    "[-100, 100]"
                )
        return value

    def non_defaults(self) -> list[str]:
        """Names of the fields set away from their defaults (what a worker must honour)."""
        return [
            name
            for name, info in type(self).model_fields.items()
            if getattr(self, name) != info.get_default(call_default_factory=True)
        ]

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in value):
            raise ValueError("stop strings must be non-empty")
        return value


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class GenerationRequest(_Frozen):
    """One generation: chat messages (or raw text) plus an assistant prefix to continue."""

    messages: tuple[ChatMessage, ...] | None = None
    """Chat to continue; the worker applies its chat template."""
    text: str | None = None
    """Raw prompt text for plain completion (no chat template)."""
    prefix: str = ""
    """Assistant text already written; generation continues after it."""
    params: SamplingParams = Field(default_factory=SamplingParams)
    request_id: str = Field(default_factory=new_request_id)
    affinity_key: str | None = None
    """Requests with the same key share a prefix; pools route them to the same worker."""

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerationRequest:
        if (self.messages is None) == (self.text is None):
            raise ValueError("a GenerationRequest needs exactly one of messages or text")
        return self


class TokenLogprob(_Frozen):
    """A generated token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    top: dict[str, float] = Field(default_factory=dict)


class TokenUsage(_Frozen):
    """Tokens one generation cost; counts are whole and never negative."""

    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    cached_prompt_tokens: int = Field(0, ge=0)
    """Prompt tokens served from the prefix cache instead of being evaluated."""


class Timings(_Frozen):
    queued_s: float = 0.0
    """From submission to the first model step that included the request."""
    first_token_s: float = 0.0
    """From submission to the first generated token."""
    total_s: float = 0.0
    """From submission to completion."""


class Completion(_Frozen):
    """What a worker returns for one request."""

    text: str
    finish_reason: FinishReason
    stop_reason: str | None = None
    """The stop string that ended the text (None: end of sequence, length or abort)."""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    logprobs: tuple[TokenLogprob, ...] | None = None
    worker_id: str = ""
    request_id: str = ""
    timings: Timings = Field(default_factory=Timings)
    drafted_tokens: int = 0
    """Speculative decoding: tokens proposed by the draft."""
    accepted_tokens: int = 0
    """Speculative decoding: drafted tokens the target model accepted."""
    attempts: int = 1
    """Workers this request was tried on; above 1 after a pool failed over."""
    failed_workers: tuple[str, ...] = ()
    """Workers that failed while serving this request, in order (another one finished it)."""

    @property
    def mean_logprob(self) -> float | None:
        if not self.logprobs:
            return None
        return sum(t.logprob for t in self.logprobs) / len(self.logprobs)


class Score(_Frozen):
    """A verifier's judgement of one candidate."""

    value: float
    """Higher is better; rule verifiers use 1.0 for pass and 0.0 for fail."""
    passed: bool | None = None
    """True/False when the verifier makes a binary call, None for a graded score."""
    detail: str = ""
    """A short human-readable reason."""
    calls: int = Field(1, ge=0)
    """Verifier passes this judgement took (a process reward model makes one per step; none
    for steps it had cached)."""
    tokens: int = Field(0, ge=0)
    """Tokens a model-based verifier read for it."""
    judged: bool = True
    """False when the verifier could not judge correctness, as a numeric or math verifier
    without a reference: `value` then only ranks by form (an answer given or not)."""

    def shown(self) -> str:
        """The score as a display prints it: two decimals, or "no reference" when unjudged."""
        return f"{self.value:.2f}" if self.judged else "no reference"


class Candidate(BaseModel):
    """A partial or complete solution moving through a strategy graph."""

    model_config = ConfigDict(extra="forbid")

    text: str
    answer: str | None = None
    """The extracted final answer."""
    steps: list[str] = Field(default_factory=list)
    scores: dict[str, Score] = Field(default_factory=dict)
    """Verifier name -> score."""
    node_id: str | None = None
    """Node of the thought graph that produced this candidate."""
    finish_reason: FinishReason = "stop"
    mean_logprob: float | None = None
    completion_tokens: int = 0
    votes: int = 0
    """Candidates agreeing with this one's answer (voting strategies fill it in)."""
    metadata: dict[str, Any] = Field(default_factory=dict)

    def score_value(self, verifier: str | None = None) -> float | None:
        """The named verifier's score, or the first score if no name is given."""
        if verifier is not None:
            score = self.scores.get(verifier)
            return None if score is None else score.value
        for score in self.scores.values():
            return score.value
        return None


class Usage(BaseModel):
    """Compute spent by a run (or a part of it); added up as the run goes."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    generations: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    verifier_calls: int = 0
    verifier_tokens: int = 0
    """Tokens a model-based verifier (a process reward model) read; not generator tokens."""
    aborted_generations: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    wall_time_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens per second of wall time."""
        return self.completion_tokens / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def add_completion(self, completion: Completion) -> None:
        # counted on the model's own dict: assignments are not validated, and going through
        # BaseModel.__setattr__ cost a quarter of a microsecond each, on every generation
        counts = self.__dict__
        usage = completion.usage
        counts["generations"] += 1
        counts["prompt_tokens"] += usage.prompt_tokens
        counts["cached_prompt_tokens"] += usage.cached_prompt_tokens
        counts["completion_tokens"] += usage.completion_tokens
        counts["drafted_tokens"] += completion.drafted_tokens
        counts["accepted_tokens"] += completion.accepted_tokens
        if completion.finish_reason == "abort":
            counts["aborted_generations"] += 1

    def add_verifier_calls(self, calls: int, tokens: int) -> None:
        """Count verifier calls and the tokens model-based ones read."""
        counts = self.__dict__
        counts["verifier_calls"] += calls
        counts["verifier_tokens"] += tokens

    def merge(self, other: Usage) -> None:
        for name in type(self).model_fields:
            if name != "wall_time_s":
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self) -> dict[str, float]:
        data: dict[str, float] = self.model_dump()
        data["tokens_per_s"] = round(self.tokens_per_s, 2)
        return data


class Budget(_Frozen):
    """Limits on what a run (or a node) may spend; None means unlimited."""

    max_generations: int | None = Field(None, ge=0)
    max_prompt_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    max_verifier_calls: int | None = Field(None, ge=0)
    max_wall_time_s: float | None = Field(None, gt=0)


class TraceNode(_Frozen):
    id: str
    kind: str
    """prompt, generation, candidate, select, vote, ..."""
    label: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class TraceEdge(_Frozen):
    source: str
    target: str
    kind: str
    """continue, fork, join, merge, select, score."""


class Trace(_Frozen):
    """The thought graph of a run, as plain data."""

    nodes: tuple[TraceNode, ...] = ()
    edges: tuple[TraceEdge, ...] = ()


class Result(BaseModel):
    """What a run returns."""

    model_config = ConfigDict(extra="forbid")

    answer: str | None
    """The chosen final answer (extracted), or None if nothing usable was produced."""
    text: str
    """The full text of the chosen candidate."""
    best: Candidate | None
    candidates: list[Candidate]
    usage: Usage
    truncated: bool = False
    """True when a budget ran out before the strategy finished."""
    strategy: str = ""
    trace: Trace = Field(default_factory=Trace)
