"""End to end on the real bundled model: the Python API and the CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import threadloom as tl
from threadloom.workers.llamacpp.worker import LlamaCppWorker

QUESTION = "What is 17 + 25? Give only the number."


async def test_best_of_n_8_through_the_api(llama_worker: LlamaCppWorker) -> None:
    result = await tl.arun(
        QUESTION, "best-of-n", n=8, worker=llama_worker, verifier="numeric", reference="42", seed=1
    )
    assert len(result.candidates) == 8
    assert result.usage.generations == 8
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert result.usage.verifier_calls == 8
    assert result.usage.tokens_per_s > 0
    # the oracle verifier ranks a correct sample first whenever one was drawn
    if any(c.scores["numeric"].passed for c in result.candidates):
        assert result.answer is not None and float(result.answer) == 42
    assert result.candidates[0].scores["numeric"].value >= max(
        c.scores["numeric"].value for c in result.candidates
    )
    # the 8 siblings share the prompt's KV cache instead of prefilling it 8 times
    assert result.usage.cached_prompt_tokens >= 7 * (result.usage.prompt_tokens // 8 - 1)


async def test_self_consistency_votes_over_real_samples(llama_worker: LlamaCppWorker) -> None:
    result = await tl.arun(QUESTION, "self-consistency", n=6, worker=llama_worker, seed=2)
    assert len(result.candidates) == 6
    best = result.best
    assert best is not None
    assert best.votes == max(c.votes for c in result.candidates)


def test_sync_run_with_a_budget(llama_worker: LlamaCppWorker) -> None:
    result = tl.run(
        QUESTION,
        "best-of-n",
        n=8,
        worker=llama_worker,
        budget=tl.Budget(max_completion_tokens=60),
        params=tl.SamplingParams(max_tokens=40),
        seed=3,
    )
    assert result.usage.completion_tokens <= 60
    assert result.truncated


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadloom.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_run_json_gives_8_candidates_and_usage() -> None:
    proc = _cli(
        "run",
        QUESTION,
        "--strategy",
        "best-of-n",
        "-n",
        "8",
        "--verifier",
        "numeric",
        "--json",
        "--seed",
        "4",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["candidates"]) == 8
    assert data["usage"]["generations"] == 8
    assert data["usage"]["completion_tokens"] > 0
    assert data["strategy"] == "best-of-n:n=8"
    assert all("numeric" in c["scores"] for c in data["candidates"])


def test_cli_table_output() -> None:
    proc = _cli("run", QUESTION, "-s", "self-consistency", "-n", "3", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    assert "answer:" in proc.stdout
    assert "generations 3" in proc.stdout


def test_cli_bad_input_gives_one_line_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (("run", "hi", "-s", "nope"), "valid strategies"),
        (("run", "hi", "--verifier", "nope"), "valid verifiers"),
        (("run", "hi", "--model", str(tmp_path / "missing.gguf")), "model file not found"),
        (("run", "  "), "prompt is empty"),
        (("run", "hi", "-n", "0"), "greater than or equal to 1"),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode != 0
        assert message in " ".join(proc.stderr.split()), proc.stderr
        assert "Traceback" not in proc.stderr


def test_cli_workers_lists_the_bundled_model() -> None:
    proc = _cli("workers")
    assert proc.returncode == 0
    flat = "".join(proc.stdout.split())
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in flat
    assert "llamacpp" in proc.stdout
    for kind in ("vllm:MODEL", "openai:URL", "(extra[ray])", "[vllm-cpu]"):
        assert kind in flat
