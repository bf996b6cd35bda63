"""Process reward models served by vLLM's pooling runner, in-process or over HTTP.

Two common PRM formats:

- ``qwen``: Qwen2.5-Math-PRM. The assistant turn holds the steps, each followed by the special
  token ``<extra_0>``; the pooler returns, for every ``<extra_0>`` position, the two-class
  probabilities [p(incorrect), p(correct)]. A step's score is p(correct).
- ``shepherd``: Math-Shepherd. The question and steps are plain text, each step ending with the
  tag `` ки``; the pooler returns, at each tag position, probabilities over the two label
  tokens [p('+'), p('-')]. A step's score is p('+') / (p('+') + p('-')).

Request building and response parsing are pure functions, so they are tested without a GPU.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

from threadloom.errors import ConfigError, VerifierError
from threadloom.types import Problem
from threadloom.verifiers.base import StepAggregation
from threadloom.verifiers.judging import ModelCalls, ModelVerifier, StepScores

PRMFormat = Literal["qwen", "shepherd"]

QWEN_STEP_TOKEN = "<extra_0>"
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SHEPHERD_TAG = " ки"


def build_prm_input(fmt: PRMFormat, question: str, steps: list[str]) -> str:
    """The text a PRM of this format scores (chat markup included for Qwen)."""
    if not steps:
        raise ConfigError("a process reward model needs at least one step to score")
    cleaned = [" ".join(step.split()) for step in steps]
    if fmt == "qwen":
        body = "".join(f"{step}{QWEN_STEP_TOKEN}" for step in cleaned)
        return (
            f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n{body}<|im_end|><|endoftext|>"
        )
    if fmt == "shepherd":
        return f"{question} " + "\n".join(f"{step}{SHEPHERD_TAG}" for step in cleaned)
    raise ConfigError(f"unknown PRM format {fmt!r}; use 'qwen' or 'shepherd'")


def parse_step_probabilities(fmt: PRMFormat, rows: Any, steps: int) -> list[float]:
    """Step scores from the pooler's per-step rows (one [a, b] pair per step marker).

    Raises:
        VerifierError: when the rows do not have one pair per step.
    """
    if not isinstance(rows, list) or len(rows) != steps:
        count = len(rows) if isinstance(rows, list) else type(rows).__name__
        raise VerifierError(
            f"the PRM returned {count} step rows for {steps} steps; check that the model's "
            f"format matches {fmt!r} and that step markers are not split by the tokenizer"
        )
    scores = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 2:
            raise VerifierError(f"expected a pair of probabilities per step, got {row!r}")
        first, second = float(row[0]), float(row[1])
        if fmt == "qwen":
            scores.append(second)
        else:
            total = first + second
            scores.append(first / total if total > 0 else 0.0)
    return scores


def pooling_rows(response: dict[str, Any]) -> Any:
    """The per-step rows of a vLLM server's /pooling response (first input)."""
    try:
        return response["data"][0]["data"]
    except (KeyError, IndexError, TypeError):
        raise VerifierError(
            f"unexpected /pooling response shape: {str(response)[:200]}; expected "
            "{'data': [{'data': [[p, q], ...]}]}"
        ) from None


class _PRMBase(ModelVerifier):
    fmt: PRMFormat
    aggregation: StepAggregation
    delimiter: str
    name: str

    @abstractmethod
    async def _rows(self, text: str) -> Any:
        """The PRM's per-token rows for one input."""

    async def judge_steps(
        self, problem: Problem, steps: list[str], model: ModelCalls
    ) -> StepScores:
        """One pooling call scores every step (the run admits it as one verifier call)."""
        question = problem.prompt or problem.chat()[-1].content
        text = build_prm_input(self.fmt, question, steps)
        rows = await model.call(lambda: self._rows(text), label=f"{self.name} {len(steps)} steps")
        return StepScores(
            scores=parse_step_probabilities(self.fmt, rows, len(steps)), calls=1, tokens=0
        )


class HTTPProcessRewardModel(_PRMBase):
    """A PRM behind a vLLM server's pooling endpoint (`vllm serve MODEL --task reward`).

    Args:
        base_url: Server root, e.g. http://127.0.0.1:8000.
        model: Model name the server serves.
        fmt: "qwen" (Qwen2.5-Math-PRM) or "shepherd" (Math-Shepherd).
        timeout_s: Per-request timeout.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        fmt: PRMFormat = "qwen",
        aggregation: StepAggregation = "min",
        delimiter: str = "\n\n",
        timeout_s: float = 60.0,
        name: str = "vllm-prm",
    ) -> None:
        import httpx

        self.url = base_url.rstrip("/") + "/pooling"
        self.model = model
        self.fmt = fmt
        self.aggregation = aggregation
        self.delimiter = delimiter
        self.name = name
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def _rows(self, text: str) -> Any:
        import httpx

        try:
            response = await self._client.post(self.url, json={"model": self.model, "input": text})
        except httpx.HTTPError as exc:
            raise VerifierError(f"PRM server at {self.url} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise VerifierError(
                f"PRM server answered {response.status_code}: {response.text[:200]}"
            )
        return pooling_rows(response.json())

    async def aclose(self) -> None:
        await self._client.aclose()


class VLLMProcessRewardModel(_PRMBase):
    """A PRM hosted in this process by vLLM's pooling runner (needs the [vllm] extra).

    Scores go through a `VLLMWorker` with runner="pooling" (vLLM's async engine, so concurrent
    scoring calls share its batches): pass one with `worker`, or a `model` to start one.

    Args:
        model: Hugging Face id or local folder of the PRM (when no `worker` is given).
        worker: A VLLMWorker created with runner="pooling"; the caller closes it.
        fmt: "qwen" or "shepherd".
        engine_args: Options of the worker started for `model`: VLLMConfig fields (dtype,
            max_model_len, ...); other vLLM engine arguments (pooler_config, hf_overrides,
            ...) go to its engine_kwargs.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        worker: Any = None,
        fmt: PRMFormat = "qwen",
        aggregation: StepAggregation = "min",
        delimiter: str = "\n\n",
        engine_args: dict[str, Any] | None = None,
        name: str = "vllm-prm",
    ) -> None:
        self.fmt = fmt
        self.aggregation = aggregation
        self.delimiter = delimiter
        self.name = name
        self._owns_worker = worker is None
        if worker is None:
            if model is None:
                raise ConfigError("VLLMProcessRewardModel needs a model or a pooling worker")
            worker = _pooling_worker(model, dict(engine_args or {}))
        elif model is not None or engine_args:
            raise ConfigError("give VLLMProcessRewardModel a worker or a model, not both")
        self._worker = worker

    async def _rows(self, text: str) -> Any:
        return await self._worker.encode(text, task="token_classify")

    async def aclose(self) -> None:
        """Stop the engine this PRM started (a worker passed in is left running)."""
        if self._owns_worker:
            await self._worker.close()


def _pooling_worker(model: str, engine_args: dict[str, Any]) -> Any:
    from threadloom.workers.vllm.config import VLLMConfig
    from threadloom.workers.vllm.worker import VLLMWorker

    named = {k: v for k, v in engine_args.items() if k in VLLMConfig.model_fields}
    extra = {k: v for k, v in engine_args.items() if k not in VLLMConfig.model_fields}
    named["engine_kwargs"] = {**named.get("engine_kwargs", {}), **extra}
    return VLLMWorker(model, runner="pooling", **named)
