"""Token sampling on raw logits with numpy, with vLLM's sampling fields.

Order per token, as in vLLM: logit bias, penalties (repetition on prompt and reply, presence and
frequency on the reply), bans (end-of-sequence before `min_tokens` or with `ignore_eos`), the
constraint (a grammar), then temperature, top-k, min-p and top-p. Log-probabilities are those of
the model's unmodified distribution.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from threadloom.errors import WorkerError
from threadloom.types import SamplingParams


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


class TokenConstraint(Protocol):
    """Which tokens may come next (a grammar); told every token the sequence takes."""

    def allowed(self, tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """A boolean mask over `tokens` (ids, with their logits): True where allowed."""
        ...

    def accept(self, token: int) -> None: ...


@dataclass(frozen=True)
class SamplingRules:
    """What shapes the distribution beyond temperature and top-p (see `SamplingParams`)."""

    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0
    ignore_eos: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()
    end_tokens: tuple[int, ...] = ()
    """Tokens that end a sequence (end-of-generation and `stop_token_ids`)."""
    prompt_tokens: tuple[int, ...] = ()
    """The prompt, for the repetition penalty."""

    @classmethod
    def from_params(
        cls, params: SamplingParams, *, eog_tokens: Collection[int], prompt: Sequence[int]
    ) -> SamplingRules:
        return cls(
            top_k=max(params.top_k, 0),
            min_p=params.min_p,
            repetition_penalty=params.repetition_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            min_tokens=params.min_tokens,
            ignore_eos=params.ignore_eos,
            logit_bias=tuple(params.logit_bias.items()),
            end_tokens=tuple(sorted({*eog_tokens, *params.stop_token_ids})),
            prompt_tokens=tuple(prompt) if params.repetition_penalty != 1.0 else (),
        )

    @property
    def penalised(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


class TokenSampler:
    """Samples next tokens for one sequence; seeded for reproducibility.

    Call `accept` with every token the sequence takes, so penalties, `min_tokens` and the
    constraint follow the reply.
    """

    def __init__(
        self,
        temperature: float,
        top_p: float,
        seed: int | None,
        n_top_logprobs: int | None,
        *,
        rules: SamplingRules | None = None,
        constraint: TokenConstraint | None = None,
    ) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.n_top = n_top_logprobs
        self.rng = np.random.default_rng(seed)
        self.rules = rules or SamplingRules()
        self.constraint = constraint
        self.generated = 0
        self._counts: np.ndarray | None = None
        self._in_prompt: np.ndarray | None = None

    def accept(self, token: int) -> None:
        """Record a token the sequence took (sampled by `sample`)."""
        self.generated += 1
        if self._counts is not None:
            self._counts[token] += 1.0
        if self.constraint is not None:
            self.constraint.accept(token)

    def _adjusted(self, logits: np.ndarray) -> np.ndarray:
        """The logits after bias, penalties and bans (the same array when none apply)."""
        rules = self.rules
        banned = rules.ignore_eos or self.generated < rules.min_tokens
        if not (rules.logit_bias or rules.penalised or (banned and rules.end_tokens)):
            return logits
        out = logits.astype(np.float32, copy=True)
        size = out.size
        for token, bias in rules.logit_bias:
            if token < size:
                out[token] += bias
        if rules.penalised:
            if self._counts is None:
                self._counts = np.zeros(size, dtype=np.float32)
                self._in_prompt = np.zeros(size, dtype=bool)
                prompt = np.asarray(rules.prompt_tokens, dtype=np.int64)
                self._in_prompt[prompt[prompt < size]] = True
            seen = self._counts > 0
            if rules.repetition_penalty != 1.0:
                assert self._in_prompt is not None
                hit = seen | self._in_prompt
                penalty = rules.repetition_penalty
                out[hit] = np.where(out[hit] > 0, out[hit] / penalty, out[hit] * penalty)
            out -= rules.presence_penalty * seen + rules.frequency_penalty * self._counts
        if banned:
            ends = np.asarray(rules.end_tokens, dtype=np.int64)
            out[ends[ends < size]] = -np.inf
        return out

    def _candidates(self, adjusted: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Token ids worth drawing and their scaled logits (relative to the best)."""
        scaled = (adjusted - adjusted.max()) / scale
        candidates = np.flatnonzero(scaled > _TAIL_CUTOFF)
        if self.constraint is not None:
            keep = self.constraint.allowed(candidates, adjusted[candidates])
            if not keep.any():
                # no likely token fits: look through the whole vocabulary
                candidates = np.flatnonzero(np.isfinite(adjusted))
                keep = self.constraint.allowed(candidates, adjusted[candidates])
                if not keep.any():
                    raise WorkerError(
                        "the structured output constraint allows no next token; check that "
                        "the grammar or schema can be completed"
                    )
            candidates = candidates[keep]
            best = adjusted[candidates].max()
            scaled = np.full_like(adjusted, -np.inf)
            scaled[candidates] = (adjusted[candidates] - best) / scale
        return candidates, scaled[candidates]

    def sample(self, logits: np.ndarray) -> SampledToken:
        shifted = logits - logits.max()
        log_z = float(np.log(np.exp(shifted).sum()))
        adjusted = self._adjusted(logits)
        if self.temperature <= 0.0:
            if self.constraint is None:
                token = int(np.argmax(adjusted))
            else:
                candidates, scaled = self._candidates(adjusted, 1.0)
                token = int(candidates[int(np.argmax(scaled))])
        else:
            candidates, scaled = self._candidates(adjusted, self.temperature)
            rules = self.rules
            if 0 < rules.top_k < candidates.size:
                best = np.argpartition(-scaled, rules.top_k - 1)[: rules.top_k]
                candidates, scaled = candidates[best], scaled[best]
            weights = np.exp(scaled.astype(np.float64))
            if rules.min_p > 0.0:
                keep = weights >= rules.min_p * weights.max()
                candidates, weights = candidates[keep], weights[keep]
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
