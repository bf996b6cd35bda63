"""skeleton-of-thought: write a short outline, expand its points in parallel, assemble in order."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.strategies.base import Strategy
from threadloom.strategies.registry import StrategyField
from threadloom.types import Candidate, Problem
from threadloom.verifiers.prm import yes_no_probability

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext

SKELETON_PROMPT = (
    "{question}\nList {min_points} to {max_points} key points, numbered, each under 8 words. "
    "No explanations."
)
EXPAND_PROMPT = "{question}\nExplain this point in one or two sentences: {point}"
ROUTER_PROMPT = (
    "Question: {question}\n\nCan a good answer to this question be written as a list of "
    "independent points? Answer Yes or No."
)

_ITEM = re.compile(
    r"^\s*(?:\*\*)?(?:(?:step|point)\s*)?\d{1,2}\s*[.):\-]\s*(?:\*\*)?\s*(.+?)\s*$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*[-*•]\s+(.+?)\s*$")
_NEXT_NUMBER = re.compile(r"\s+\d{1,2}[.)]\s+")
_ANY_NUMBER = re.compile(r"(?:^|\s)\d{1,2}[.)]\s+")


def parse_skeleton(text: str, max_points: int = 10) -> list[str]:
    """Points of a numbered (or bulleted) outline, in order, robust to messy numbering.

    Accepts '1.', '1)', 'Step 1:', '**1.**', '-' / '*' bullets, and several numbered points
    run together on one line; drops empty and duplicate points; keeps at most `max_points`.
    """
    points: list[str] = []
    for line in text.splitlines():
        match = _ITEM.match(line) or _BULLET.match(line)
        if match is not None:
            points.extend(_NEXT_NUMBER.split(match.group(1)))
    if not points:
        parts = _ANY_NUMBER.split(" ".join(text.split()))
        points = parts[1:] if len(parts) > 2 else []
    cleaned: list[str] = []
    for point in points:
        point = point.strip().strip("*").strip().rstrip(":").strip()
        if point and point.lower() not in {c.lower() for c in cleaned}:
            cleaned.append(point)
    return cleaned[:max_points]


class SkeletonOfThought(Strategy):
    """Skeleton-of-Thought (Ning et al., 2023): outline first, then expand points in parallel.

    One generation writes a short numbered skeleton; each point is expanded by the nested
    `expand` strategy (default: one sample), all points at once so the worker batches them and
    they share the question's cached prefix; the answer is the points in order. With fewer than
    two parsable points, or when the router says the question does not fit, it answers directly.
    """

    kind: Literal["skeleton-of-thought"] = "skeleton-of-thought"
    min_points: int = Field(3, ge=2, le=20)
    """Fewest points asked of the skeleton."""
    max_points: int = Field(6, ge=2, le=20)
    """Most points asked of (and kept from) the skeleton."""
    skeleton_tokens: int = Field(96, ge=8)
    """Token limit for the skeleton."""
    point_tokens: int = Field(96, ge=8)
    """Token limit for each point's expansion."""
    expand: StrategyField | None = None
    """Strategy that expands each point (None: one sample per point)."""
    router: bool = False
    """Ask the model first whether the question suits a point-by-point answer."""
    summary: ClassVar[str] = "outline, then expand all points in parallel"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        question = ctx.problem.prompt or ctx.problem.chat()[-1].content
        if self.router and not await self._fits(ctx, question):
            return await self._direct(ctx, "router chose a direct answer")
        skeleton_problem = ctx.problem.model_copy(
            update={
                "prompt": SKELETON_PROMPT.format(
                    question=question, min_points=self.min_points, max_points=self.max_points
                ),
                "messages": None,
            }
        )
        outline_ctx = ctx.fork(problem=skeleton_problem)
        # the assistant turn starts the list itself: small models then write a clean outline
        request = outline_ctx.request(
            prefix="1.", stop=("\n\n",), max_tokens=self.skeleton_tokens, temperature=0.0
        )
        completion, skeleton_node = await outline_ctx.generate(request, label="skeleton")
        points = parse_skeleton("1." + completion.text, self.max_points)
        if len(points) < 2:
            return await self._direct(ctx, f"skeleton had {len(points)} usable points")
        expansions = await asyncio.gather(
            *(self._expand(ctx, question, i, p, skeleton_node) for i, p in enumerate(points, 1))
        )
        steps = [f"{i}. {text}" for i, text in enumerate(expansions, 1)]
        answer = "\n".join(steps)
        join = ctx.trace.add(
            "join",
            label=f"{len(points)} points assembled",
            parents=[(skeleton_node, "join")],
            points=points,
        )
        candidate = Candidate(
            text=answer,
            answer=answer,
            steps=steps,
            node_id=join,
            metadata={"skeleton": points, "mode": "skeleton"},
        )
        await ctx.score(candidate)
        return [candidate]

    async def _expand(
        self, ctx: RunContext, question: str, index: int, point: str, parent: str
    ) -> str:
        # the question leads every point's prompt, so all points share its cached prefix
        problem = Problem(
            prompt=EXPAND_PROMPT.format(question=question, point=point),
            system=ctx.problem.system,
        )
        child = ctx.fork(problem=problem, root_node=parent)
        overrides = {
            "max_tokens": self.point_tokens,
            "stop": ("\n\n",),
            **self.sampling_overrides(),
        }
        if self.expand is None:
            found = await child.sample(1, label=f"point {index}", **overrides)
        else:
            child.params = child.params.model_copy(update=overrides)
            found = await self.expand.run(child, [])
        text = found[0].text.strip() if found else ""
        return " ".join(text.split()) or point

    async def _fits(self, ctx: RunContext, question: str) -> bool:
        problem = Problem(prompt=ROUTER_PROMPT.format(question=question))
        router = ctx.fork(problem=problem)
        request = router.request(max_tokens=1, temperature=0.0, logprobs=20)
        completion, node = await router.generate(request, label="router")
        top = completion.logprobs[0].top if completion.logprobs else {}
        p_yes = yes_no_probability(top)
        ctx.trace.update(node, p_yes=round(p_yes, 4))
        return p_yes >= 0.5

    async def _direct(self, ctx: RunContext, why: str) -> list[Candidate]:
        found = await ctx.sample(1, label=f"direct ({why})", **self.sampling_overrides())
        for candidate in found:
            candidate.metadata["mode"] = "direct"
        await ctx.score_all(found)
        return found
