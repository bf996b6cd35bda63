"""Step-wise search end to end on the bundled model, judged by its own self-judge PRM."""

from __future__ import annotations

import threadloom as tl
from threadloom.workers.llamacpp.worker import LlamaCppWorker

PROBLEM = tl.Problem(
    prompt="Tom has 3 apples and buys 4 more. How many apples does he have?",
    answer_format="number",
)
PARAMS = tl.SamplingParams(max_tokens=128, temperature=0.8)


def step_scores_are_probabilities(result: tl.Result) -> bool:
    scores = [s for c in result.candidates for s in c.metadata["step_scores"]]
    return bool(scores) and all(0.0 < s < 1.0 for s in scores)


async def test_beam_search_with_self_judge(llama_worker: LlamaCppWorker) -> None:
    result = await tl.arun(PROBLEM, "beam-search:width=2,expansions=2,step_tokens=40,max_steps=3",
                           worker=llama_worker, params=PARAMS, seed=1)
    assert result.candidates and len(result.candidates) <= 2
    assert step_scores_are_probabilities(result)
    assert result.usage.verifier_calls > 0 and result.usage.verifier_tokens > 0
    # later steps continue a shared prefix that the worker already holds
    assert result.usage.cached_prompt_tokens > 0
    kinds = {node.kind for node in result.trace.nodes}
    assert {"score", "select"} <= kinds


async def test_a_star_and_particles_with_self_judge(llama_worker: LlamaCppWorker) -> None:
    a_star = await tl.arun(PROBLEM, "a-star:k=2,max_expansions=3,step_tokens=40",
                           worker=llama_worker, params=PARAMS, seed=2)
    assert a_star.candidates and step_scores_are_probabilities(a_star)
    assert a_star.usage.generations <= 2 * 3
    particles = await tl.arun(PROBLEM, "particle-filtering:n=4,step_tokens=40,max_steps=3",
                              worker=llama_worker, params=PARAMS, seed=3)
    assert particles.candidates and step_scores_are_probabilities(particles)
    assert particles.usage.completion_tokens > 0


async def test_search_budget_caps_generator_and_prm_work(llama_worker: LlamaCppWorker) -> None:
    budget = tl.Budget(max_completion_tokens=120, max_verifier_calls=3)
    result = await tl.arun(PROBLEM, "beam-search:width=2,expansions=2,step_tokens=40",
                           worker=llama_worker, params=PARAMS, budget=budget, seed=4)
    assert result.usage.completion_tokens <= 120
    assert result.candidates
    assert result.truncated
