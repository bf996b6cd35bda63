"""Token sampling on raw logits with numpy: temperature, nucleus (top-p), seeds, log-probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NUCLEUS_SHORTLIST = 512


@dataclass(frozen=True, slots=True)
class SampledToken:
    token: int
    logprob: float
    """Log-probability of the token under the model's unmodified distribution."""
    top: tuple[tuple[int, float], ...] = ()
    """The most likely alternatives (token id, log-probability), best first."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def nucleus_indices(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Smallest set of token ids whose probability mass reaches `top_p`, most likely first.

    Sorting a 50k vocabulary per token is slow, so a shortlist from `argpartition` is sorted
    first; the full sort only happens when the shortlist does not hold enough mass.
    """
    k = min(_NUCLEUS_SHORTLIST, probs.size)
    shortlist = np.argpartition(-probs, k - 1)[:k] if k < probs.size else np.arange(probs.size)
    order = shortlist[np.argsort(-probs[shortlist], kind="stable")]
    cumulative = np.cumsum(probs[order])
    if cumulative[-1] < top_p and k < probs.size:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
    cut = int(np.searchsorted(cumulative, top_p, side="left")) + 1
    return order[: min(cut, order.size)]


class TokenSampler:
    """Samples next tokens for one sequence; seeded for reproducibility."""

    def __init__(
        self, temperature: float, top_p: float, seed: int | None, n_top_logprobs: int | None
    ) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.n_top = n_top_logprobs
        self.rng = np.random.default_rng(seed)

    def sample(self, logits: np.ndarray) -> SampledToken:
        logits = logits.astype(np.float64, copy=False)
        logprobs = log_softmax(logits)
        if self.temperature <= 0.0:
            token = int(np.argmax(logits))
        else:
            scaled = logits / self.temperature
            probs = np.exp(scaled - scaled.max())
            probs /= probs.sum()
            if self.top_p < 1.0:
                keep = nucleus_indices(probs, self.top_p)
                kept = probs[keep]
                token = int(keep[self._draw(kept / kept.sum())])
            else:
                token = self._draw(probs)
        top: tuple[tuple[int, float], ...] = ()
        if self.n_top:
            best = np.argpartition(-logprobs, self.n_top - 1)[: self.n_top]
            best = best[np.argsort(-logprobs[best])]
            top = tuple((int(t), float(logprobs[t])) for t in best)
        return SampledToken(token=token, logprob=float(logprobs[token]), top=top)

    def _draw(self, probs: np.ndarray) -> int:
        cumulative = np.cumsum(probs)
        index = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        return min(index, probs.size - 1)
