"""Process reward models: the self-judge PRM and the vLLM pooling formats (request building,
response parsing, and the HTTP client against a local server)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

import threadloom as tl
from threadloom.errors import ConfigError, VerifierError
from threadloom.types import (
    Candidate,
    Completion,
    GenerationRequest,
    Problem,
    TokenLogprob,
    TokenUsage,
)
from threadloom.verifiers.prm import SelfJudgePRM, split_steps, yes_no_probability
from threadloom.verifiers.registry import make_verifier
from threadloom.verifiers.vllm_prm import (
    QWEN_STEP_TOKEN,
    SHEPHERD_TAG,
    HTTPProcessRewardModel,
    build_prm_input,
    parse_step_probabilities,
    pooling_rows,
)
from threadloom.workers.base import StreamDelta, WorkerCapabilities

Q = Problem(prompt="What is 6 * 7?", answer_format="number")


class JudgeWorker:
    """Answers a judge prompt with next-token alternatives: 'No' likely when the step under
    judgement contains 'wrong'. Records each prompt."""

    worker_id = "judge"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    @property
    def capabilities(self) -> WorkerCapabilities:
        return WorkerCapabilities(logprobs=True)

    async def generate(self, request: GenerationRequest) -> Completion:
        prompt = request.messages[-1].content if request.messages else ""
        self.prompts.append(prompt)
        assert request.params.max_tokens == 1 and request.params.temperature == 0.0
        judged = prompt.rsplit("Is step ", 1)[1].split(" ", 1)[0]
        step_line = next(line for line in prompt.splitlines() if line.startswith(f"Step {judged}:"))
        bad = "wrong" in step_line
        top = {" Yes": math.log(0.1 if bad else 0.6), "Yes": math.log(0.05 if bad else 0.2),
               " No": math.log(0.8 if bad else 0.1), " maybe": math.log(0.05)}
        first = max(top, key=lambda t: top[t])
        return Completion(
            text=first, finish_reason="length",
            usage=TokenUsage(prompt_tokens=len(prompt.split()), completion_tokens=1),
            logprobs=(TokenLogprob(token=first, logprob=top[first], top=top),),
        )

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        raise NotImplementedError

    async def abort(self, request_id: str) -> bool:
        return False

    async def close(self) -> None:
        return None


def test_yes_no_probability() -> None:
    assert yes_no_probability({" Yes": math.log(0.6), "yes": math.log(0.2),
                               " No": math.log(0.2)}) == pytest.approx(0.8)
    assert yes_no_probability({" maybe": -0.1}) == pytest.approx(0.5)  # both floored
    assert yes_no_probability({"Yes": -0.01}) > 0.999


def test_split_steps() -> None:
    assert split_steps("a\n\n\n\nb \n\n  c") == ["a", "b", "c"]
    assert split_steps("x ## y", "##") == ["x", "y"]


async def test_self_judge_scores_each_step_and_caches() -> None:
    worker = JudgeWorker()
    prm = SelfJudgePRM(worker=worker)
    scores = await prm.judge_steps(Q, ["6 * 7 = 42", "so it is wrong 41"], prm.direct_calls())
    assert scores.scores[0] == pytest.approx(0.8 / 0.9)
    assert scores.scores[1] == pytest.approx(0.15 / 0.95)
    assert scores.calls == 2 and scores.tokens > 0
    # the judge prompt for step 2 extends the one for step 1 up to the question, so a prefix
    # cache serves the shared part
    first, second = worker.prompts
    shared = first.split("\n\nIs step")[0]
    assert second.startswith(shared)
    steps = ["6 * 7 = 42", "so it is wrong 41", "Answer: 42"]
    again = await prm.judge_steps(Q, steps, prm.direct_calls())
    assert again.calls == 1  # the first two came from the cache
    assert again.scores[:2] == scores.scores


async def test_self_judge_as_outcome_reward() -> None:
    prm = SelfJudgePRM(worker=JudgeWorker(), aggregation="min")
    good = await prm.score(Q, Candidate(text="6 * 7 = 42\n\nAnswer: 42"))
    bad = await prm.score(Q, Candidate(text="6 * 7 is wrong\n\nAnswer: 41"))
    assert good.value > 0.8 > 0.2 > bad.value
    empty = await prm.score(Q, Candidate(text="   "))
    assert empty.value == 0.0 and empty.passed is False


async def test_self_judge_needs_a_worker() -> None:
    with pytest.raises(VerifierError, match="no worker"):
        await SelfJudgePRM().score_steps(Q, ["a step"])


def test_self_judge_rejects_unknown_aggregation() -> None:
    with pytest.raises(ConfigError, match="aggregation"):
        SelfJudgePRM(aggregation="max")  # type: ignore[arg-type]


def test_self_judge_is_a_registered_verifier() -> None:
    assert isinstance(make_verifier("self-judge"), SelfJudgePRM)


async def test_the_run_lends_its_worker_to_the_self_judge_through_the_context() -> None:
    worker = tl.FakeWorker(["Yes"])
    result = await tl.arun(Q, "best-of-n", n=2, worker=worker, verifier="self-judge")
    assert all(c.score_value("self-judge") is not None for c in result.candidates)
    # every judge pass is a node of the thought graph, hung under the candidate it judged
    judges = [n for n in result.trace.nodes if n.kind == "judge"]
    assert len(judges) == result.usage.verifier_calls == 2
    parents = {e.source for e in result.trace.edges if e.target in {j.id for j in judges}}
    assert parents == {c.node_id for c in result.candidates}
    assert len(worker.requests) == 2 + 2  # two samples, two judge passes


# ----- vLLM pooling formats ---------------------------------------------------------------


def test_qwen_prm_input_marks_every_step() -> None:
    text = build_prm_input("qwen", "What is 6 * 7?", ["6 * 7\n= 42", "Answer: 42"])
    assert text.count(QWEN_STEP_TOKEN) == 2
    assert "6 * 7 = 42<extra_0>Answer: 42<extra_0>" in text
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>user\nWhat is 6 * 7?" in text


def test_shepherd_prm_input_tags_every_step() -> None:
    text = build_prm_input("shepherd", "What is 6 * 7?", ["6 * 7 = 42", "Answer: 42"])
    assert text == f"What is 6 * 7? 6 * 7 = 42{SHEPHERD_TAG}\nAnswer: 42{SHEPHERD_TAG}"


def test_prm_input_needs_steps_and_a_known_format() -> None:
    with pytest.raises(ConfigError, match="at least one step"):
        build_prm_input("qwen", "q", [])
    with pytest.raises(ConfigError, match="unknown PRM format"):
        build_prm_input("other", "q", ["s"])  # type: ignore[arg-type]


# A /pooling reply in the shape vLLM's server returns for a step-reward model.
RECORDED_POOLING = {
    "id": "pool-7f3c", "object": "list", "created": 1764500000, "model": "prm",
    "data": [{"index": 0, "object": "pooling", "data": [[0.12, 0.88], [0.71, 0.29]]}],
    "usage": {"prompt_tokens": 61, "total_tokens": 61, "completion_tokens": 0},
}


def test_parse_qwen_and_shepherd_rows() -> None:
    rows = pooling_rows(RECORDED_POOLING)
    assert parse_step_probabilities("qwen", rows, 2) == [0.88, 0.29]
    shepherd = parse_step_probabilities("shepherd", [[0.3, 0.1], [0.0, 0.0]], 2)
    assert shepherd == [pytest.approx(0.75), 0.0]


def test_parse_errors_say_what_is_wrong() -> None:
    with pytest.raises(VerifierError, match="2 step rows for 3 steps"):
        parse_step_probabilities("qwen", [[0.1, 0.9], [0.2, 0.8]], 3)
    with pytest.raises(VerifierError, match="pair of probabilities"):
        parse_step_probabilities("qwen", [[0.1, 0.2, 0.7]], 1)
    with pytest.raises(VerifierError, match="unexpected /pooling response"):
        pooling_rows({"error": "nope"})


class _PoolingHandler(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append({"path": self.path, **body})
        if body.get("model") != "prm":
            self._send(404, {"error": {"message": f"model {body.get('model')} not found"}})
            return
        steps = body["input"].count(QWEN_STEP_TOKEN)
        rows = [[0.2, 0.8] if i % 2 == 0 else [0.6, 0.4] for i in range(steps)]
        self._send(200, {"data": [{"index": 0, "data": rows}]})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def pooling_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _PoolingHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    _PoolingHandler.received = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_http_prm_against_a_pooling_server(pooling_server: str) -> None:
    prm = HTTPProcessRewardModel(pooling_server, "prm", aggregation="min")
    try:
        scores = await prm.score_steps(Q, ["6 * 7 = 42", "check: 42 / 7 = 6", "Answer: 42"])
        assert scores == [0.8, 0.4, 0.8]
        sent = _PoolingHandler.received[0]
        assert sent["path"] == "/pooling" and sent["input"].count(QWEN_STEP_TOKEN) == 3
        outcome = await prm.score(Q, Candidate(text="a\n\nb"))
        assert outcome.value == pytest.approx(0.4)
    finally:
        await prm.aclose()


async def test_http_prm_errors_are_typed(pooling_server: str) -> None:
    wrong_model = HTTPProcessRewardModel(pooling_server, "other")
    with pytest.raises(VerifierError, match="answered 404"):
        await wrong_model.score_steps(Q, ["a"])
    await wrong_model.aclose()
    unreachable = HTTPProcessRewardModel("http://127.0.0.1:9", "prm", timeout_s=2)
    with pytest.raises(VerifierError, match="unreachable"):
        await unreachable.score_steps(Q, ["a"])
    await unreachable.aclose()


async def test_prm_passes_count_as_verifier_calls() -> None:
    worker = tl.FakeWorker(["first\n\nAnswer: 42", "other\n\nAnswer: 41"])
    result = await tl.arun(Q, "best-of-n", n=2, worker=worker, verifier="self-judge")
    assert result.usage.verifier_calls == 4  # two steps judged in each of two candidates
    assert result.usage.verifier_tokens > 0
