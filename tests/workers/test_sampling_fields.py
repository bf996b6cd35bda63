"""vLLM's sampling fields: the numpy sampler's rules, and the real bundled model honouring them."""

from __future__ import annotations

import numpy as np
import pytest

from threadloom.errors import ConfigError
from threadloom.types import ChatMessage, GenerationRequest, SamplingParams
from threadloom.workers.llamacpp.sampling import SamplingRules, TokenSampler
from threadloom.workers.llamacpp.worker import LlamaCppWorker


def _logits() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.standard_normal(2000) * 3).astype(np.float32)


def _draws(rules: SamplingRules, logits: np.ndarray, seeds: int = 300) -> set[int]:
    return {TokenSampler(1.0, 1.0, s, None, rules=rules).sample(logits).token for s in range(seeds)}


def test_top_k_keeps_only_the_k_most_likely_tokens() -> None:
    logits = _logits()
    best = set(np.argsort(-logits)[:3].tolist())
    seen = _draws(SamplingRules(top_k=3), logits)
    assert seen == best


def test_min_p_drops_tokens_below_the_fraction_of_the_best() -> None:
    logits = np.array([3.0, 2.5, 0.0, -1.0], dtype=np.float32)
    # exp(2.5-3)=0.61 survives min_p=0.5; exp(-3)=0.05 does not
    assert _draws(SamplingRules(min_p=0.5), logits) == {0, 1}


def test_logit_bias_bans_and_forces_tokens() -> None:
    logits = _logits()
    top = int(np.argmax(logits))
    greedy_banned = TokenSampler(
        0.0, 1.0, None, None, rules=SamplingRules(logit_bias=((top, -100.0),))
    )
    assert greedy_banned.sample(logits).token != top
    forced = TokenSampler(1.0, 1.0, 0, None, rules=SamplingRules(logit_bias=((7, 100.0),)))
    assert forced.sample(logits).token == 7


def test_min_tokens_bans_end_tokens_until_reached_then_allows_them() -> None:
    logits = np.array([5.0, 1.0, 0.0], dtype=np.float32)  # token 0 plays end-of-sequence
    sampler = TokenSampler(0.0, 1.0, None, None, rules=SamplingRules(min_tokens=2, end_tokens=(0,)))
    first = sampler.sample(logits).token
    sampler.accept(first)
    second = sampler.sample(logits).token
    sampler.accept(second)
    assert (first, second) == (1, 1)
    assert sampler.sample(logits).token == 0


def test_ignore_eos_never_samples_an_end_token() -> None:
    logits = np.array([9.0, 1.0, 0.0], dtype=np.float32)
    sampler = TokenSampler(
        0.0, 1.0, None, None, rules=SamplingRules(ignore_eos=True, end_tokens=(0,))
    )
    for _ in range(5):
        token = sampler.sample(logits).token
        assert token != 0
        sampler.accept(token)


def test_penalties_follow_the_reply_so_far() -> None:
    logits = np.array([2.0, 1.5, 1.0], dtype=np.float32)
    rules = SamplingRules(presence_penalty=1.0)
    sampler = TokenSampler(0.0, 1.0, None, None, rules=rules)
    tokens = []
    for _ in range(3):
        tokens.append(sampler.sample(logits).token)
        sampler.accept(tokens[-1])
    # 0 (2.0), then 1 (1.5 > 2.0-1), then 2 (1.0 > 0.5 and 1.0 vs 1.0: argmax takes the first)
    assert tokens == [0, 1, 0] or tokens == [0, 1, 2]
    assert tokens[:2] == [0, 1]
    repeat = TokenSampler(
        0.0, 1.0, None, None, rules=SamplingRules(repetition_penalty=3.0, prompt_tokens=(0,))
    )
    assert repeat.sample(logits).token == 1  # 2.0/3 < 1.5
    freq = TokenSampler(0.0, 1.0, None, None, rules=SamplingRules(frequency_penalty=0.4))
    picks = []
    for _ in range(4):
        picks.append(freq.sample(logits).token)
        freq.accept(picks[-1])
    assert picks[0] == 0 and picks.count(0) < 4


def test_log_probabilities_stay_those_of_the_unmodified_model() -> None:
    logits = _logits()
    plain = TokenSampler(0.0, 1.0, None, 2).sample(logits)
    token = plain.token
    biased = TokenSampler(0.0, 1.0, None, 2, rules=SamplingRules(logit_bias=((token, 5.0),)))
    assert abs(biased.sample(logits).logprob - plain.logprob) < 1e-6


def test_sampling_params_validate_the_new_fields() -> None:
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingParams(logit_bias={5: 300.0})
    with pytest.raises(ValueError):
        SamplingParams(min_p=1.5)
    params = SamplingParams(top_k=4, stop_token_ids=[2], logit_bias={"9": -1})
    assert params.non_defaults() == ["top_k", "stop_token_ids", "logit_bias"]
    assert params.logit_bias == {9: -1.0}


# ----- the real bundled model ---------------------------------------------------------------


def _chat(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage(role="user", content=text),), params=SamplingParams(**params)
    )


@pytest.mark.slow
async def test_top_k_one_is_greedy_on_the_real_model(llama_worker: LlamaCppWorker) -> None:
    question = "Name three colours of the rainbow."
    greedy = await llama_worker.generate(_chat(question, temperature=0, max_tokens=24))
    for seed in (1, 2):
        top1 = await llama_worker.generate(
            _chat(question, temperature=1.5, top_k=1, seed=seed, max_tokens=24)
        )
        assert top1.text == greedy.text


@pytest.mark.slow
async def test_min_tokens_and_stop_token_ids_on_the_real_model(
    llama_worker: LlamaCppWorker,
) -> None:
    short = _chat("Reply with the single word: yes", temperature=0, max_tokens=60)
    natural = await llama_worker.generate(short)
    assert natural.finish_reason == "stop"
    floor = natural.usage.completion_tokens + 10
    longer = await llama_worker.generate(
        _chat("Reply with the single word: yes", temperature=0, max_tokens=60, min_tokens=floor)
    )
    assert longer.usage.completion_tokens >= floor
    endless = await llama_worker.generate(
        _chat("Reply with the single word: yes", temperature=0, max_tokens=30, ignore_eos=True)
    )
    assert endless.finish_reason == "length" and endless.usage.completion_tokens == 30
    # stop at the reply's own second token, chosen by id
    tokens = llama_worker.tokenize(natural.text, special=False) if natural.text else []
    if len(tokens) >= 2:
        stopped = await llama_worker.generate(
            _chat(
                "Reply with the single word: yes",
                temperature=0,
                max_tokens=60,
                stop_token_ids=[tokens[1]],
            )
        )
        assert stopped.finish_reason == "stop"
        assert stopped.usage.completion_tokens == 1


# ----- vLLM's own SamplingParams --------------------------------------------------------------


def test_vllm_receives_the_fields_under_the_same_names() -> None:
    from threadloom.workers.vllm.sampling import vllm_sampling_arguments

    def structured(**kwargs: object) -> dict[str, object]:
        return kwargs

    params = SamplingParams(
        top_k=4,
        min_p=0.1,
        repetition_penalty=1.1,
        min_tokens=3,
        ignore_eos=True,
        stop_token_ids=[2],
        logit_bias={5: -100.0},
        structured_outputs={"choice": ["yes", "no"]},
    )
    arguments = vllm_sampling_arguments(params, seed=1, structured=structured, worker="v")
    assert {k: arguments[k] for k in ("top_k", "min_p", "repetition_penalty", "min_tokens")} == {
        "top_k": 4,
        "min_p": 0.1,
        "repetition_penalty": 1.1,
        "min_tokens": 3,
    }
    assert arguments["ignore_eos"] is True and arguments["stop_token_ids"] == [2]
    assert arguments["logit_bias"] == {5: -100.0}
    assert arguments["structured_outputs"] == {"choice": ["yes", "no"]}
    assert "presence_penalty" not in arguments  # defaults stay vLLM's own
    with pytest.raises(ConfigError, match="worker v cannot honour structured_outputs"):
        vllm_sampling_arguments(params, seed=None, structured=None, worker="v")
