"""Token sampling on raw logits with numpy: temperature, top-p, seeds, log-probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class SampledToken:
    token: int
    logprob: float
    """Log-probability of the token under the model's unmodified distribution."""
    top: tuple[tuple[int, float], ...] = ()
    """The most likely alternatives (token id, log-probability), best first."""


_TAIL_CUTOFF = -20.0
"""Tokens this far (in temperature-scaled logits) below the best are dropped before sampling:
each has under 2e-9 of the best token's weight, all of them together under 1e-4 of it, and
dropping them lets sampling sort a few hundred candidates instead of the whole vocabulary."""
_SHORTLIST = 256


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def nucleus(weights: np.ndarray, top_p: float) -> np.ndarray:
    """Positions of the smallest most-likely set of `weights` holding `top_p` of their mass.

    A shortlist from `argpartition` is sorted first; the full sort runs only when the shortlist
    does not hold enough mass (a flat distribution).
    """
    total = weights.sum()
    order: np.ndarray | None = None
    if weights.size > _SHORTLIST:
        shortlist = np.argpartition(-weights, _SHORTLIST - 1)[:_SHORTLIST]
        order = shortlist[np.argsort(-weights[shortlist], kind="stable")]
        if weights[order].sum() < top_p * total:
            order = None
    if order is None:
        order = np.argsort(-weights, kind="stable")
    cumulative = np.cumsum(weights[order])
    cut = int(np.searchsorted(cumulative, top_p * total, side="left")) + 1
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
        shifted = logits - logits.max()
        log_z = float(np.log(np.exp(shifted).sum()))
        if self.temperature <= 0.0:
            token = int(np.argmax(shifted))
        else:
            scaled = shifted / self.temperature
            candidates = np.flatnonzero(scaled > _TAIL_CUTOFF)
            weights = np.exp(scaled[candidates].astype(np.float64))
            if self.top_p < 1.0:
                keep = nucleus(weights, self.top_p)
                candidates, weights = candidates[keep], weights[keep]
            token = int(candidates[self._draw(weights)])
        top: tuple[tuple[int, float], ...] = ()
        if self.n_top:
            best = np.argpartition(-shifted, self.n_top - 1)[: self.n_top]
            best = best[np.argsort(-shifted[best])]
            top = tuple((int(t), float(shifted[t]) - log_z) for t in best)
        return SampledToken(token=token, logprob=float(shifted[token]) - log_z, top=top)

    def _draw(self, weights: np.ndarray) -> int:
        cumulative = np.cumsum(weights)
        index = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        return min(index, weights.size - 1)
