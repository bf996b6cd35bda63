import numpy as np

from threadloom.workers.llamacpp.sampling import TokenSampler, nucleus
from threadloom.workers.llamacpp.text_stream import StopAwareText


def _logits() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(5000) * 4).astype(np.float32)


def test_greedy_is_argmax_and_logprob_is_normalized() -> None:
    logits = _logits()
    sampled = TokenSampler(0.0, 1.0, None, 3).sample(logits)
    assert sampled.token == int(np.argmax(logits))
    expected = logits[sampled.token] - np.log(np.exp(logits.astype(np.float64)).sum())
    assert abs(sampled.logprob - expected) < 1e-4
    assert next(t for t, _ in sampled.top) == sampled.token
    assert len(sampled.top) == 3


def test_seeds_reproduce_and_differ() -> None:
    logits = _logits()
    a = [TokenSampler(1.0, 0.9, 7, None).sample(logits).token for _ in range(3)]
    b = [TokenSampler(1.0, 0.9, 7, None).sample(logits).token for _ in range(3)]
    assert a == b
    draws = {TokenSampler(1.0, 1.0, seed, None).sample(logits).token for seed in range(50)}
    assert len(draws) > 5


def test_top_p_limits_the_support() -> None:
    logits = np.array([5.0, 4.0, 0.0, -1.0, -2.0], dtype=np.float32)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    keep = nucleus(probs, 0.9)
    assert set(keep.tolist()) == {0, 1}
    seen = {TokenSampler(1.0, 0.9, s, None).sample(logits).token for s in range(200)}
    assert seen <= {0, 1}
    assert seen == {0, 1}


def test_stop_string_split_across_pieces_is_never_emitted() -> None:
    text = StopAwareText(("STOP",))
    out = [text.push(b"hello S"), text.push(b"TO"), text.push(b"P and more")]
    assert "".join(out) == "hello "
    assert text.stopped
    assert text.text == "hello "


def test_held_back_text_is_released_when_not_a_stop() -> None:
    text = StopAwareText(("\n\n",))
    assert text.push(b"a\n") == "a"
    assert text.push(b"b") == "\nb"
    assert text.finish() == ""
    assert text.text == "a\nb"


def test_utf8_split_across_tokens() -> None:
    text = StopAwareText()
    euro = "€".encode()
    assert text.push(euro[:1]) == ""
    assert text.push(euro[1:]) == "€"
