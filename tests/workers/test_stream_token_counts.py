"""Workers say how many tokens each streamed delta took, so a pool can resume within max_tokens.

The llama.cpp engine holds back text that may start a stop string and partial UTF-8 characters,
so one delta can carry several tokens; the counts must still add up to the completion's usage."""

from __future__ import annotations

import pytest

from threadloom.types import GenerationRequest, SamplingParams
from threadloom.workers.fake import FakeWorker
from threadloom.workers.llamacpp.worker import LlamaCppWorker


def raw(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(text=text, params=SamplingParams(**params))  # type: ignore[arg-type]


async def test_fake_worker_counts_one_token_a_delta() -> None:
    worker = FakeWorker(["one two three"])
    deltas = [d async for d in worker.stream(raw("go"))]
    final = deltas[-1].completion
    assert final is not None
    assert [d.tokens for d in deltas[:-1]] == [1] * final.usage.completion_tokens


@pytest.mark.slow
async def test_llamacpp_deltas_count_the_tokens_they_took(llama_worker: LlamaCppWorker) -> None:
    plain = [d async for d in llama_worker.stream(raw("1, 2, 3,", temperature=0, max_tokens=16))]
    final = plain[-1].completion
    assert final is not None and final.usage.completion_tokens == 16
    counts = [d.tokens for d in plain[:-1]]
    assert all(c is not None and c >= 0 for c in counts)
    assert sum(c or 0 for c in counts) == 16
    # "7" is held back as a possible stop string: the delta after it carries its token too
    stopped = [
        d
        async for d in llama_worker.stream(
            raw("1, 2, 3,", temperature=0, max_tokens=30, stop=[", 7"])
        )
    ]
    end = stopped[-1].completion
    assert end is not None and end.finish_reason == "stop" and "7" not in end.text
    counted = sum(d.tokens or 0 for d in stopped[:-1])
    assert "".join(d.text for d in stopped[:-1]) == end.text
    # the stop string's own tokens were decoded but their text was dropped
    assert len(stopped) - 1 <= counted <= end.usage.completion_tokens
    assert any((d.tokens or 0) > 1 for d in stopped[:-1])
