"""threads: ThreadWeaver-style adaptive parallel reasoning.

The model reasons sequentially. When it opens a parallel block::

    <Parallel>
    <Outlines>
    <Outline>1: what thread 1 will do</Outline>
    <Outline>2: what thread 2 will do</Outline>
    </Outlines>

the orchestrator stops it, forks one thread per outline (each continues the shared prefix, so
the worker's prefix cache serves it), runs the threads concurrently, writes them back in order::

    <Thread>
    1: ...
    </Thread>
    <Thread>
    2: ...
    </Thread>
    </Parallel>

and lets the model continue after the block. A model that never opens a block, or writes
malformed tags, simply decodes sequentially.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from threadloom.strategies.base import Strategy
from threadloom.types import Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext

OPEN_BLOCK = "<Parallel>"
END_OUTLINES = "</Outlines>"
END_THREAD = "</Thread>"
CLOSE_BLOCK = "</Parallel>"

FORMAT_PROMPT = """\
You may split independent parts of your reasoning into parallel threads. To do so, write
<Parallel>
<Outlines>
<Outline>1: one independent sub-task</Outline>
<Outline>2: another independent sub-task</Outline>
</Outlines>
and each thread will be written separately; then continue your reasoning after </Parallel>.
Example:
Question: What is (2 + 3) * (4 + 5)?
<Parallel>
<Outlines>
<Outline>1: compute 2 + 3</Outline>
<Outline>2: compute 4 + 5</Outline>
</Outlines>
<Thread>
1: 2 + 3 = 5
</Thread>
<Thread>
2: 4 + 5 = 9
</Thread>
</Parallel>
So the answer is 5 * 9 = 45.
Answer: 45"""

_OUTLINE = re.compile(r"<Outline>\s*(?:(\d+)\s*[:.)]\s*)?(.*?)\s*</Outline>", re.DOTALL)


def parse_outlines(text: str, max_threads: int) -> list[str]:
    """Outlines of the last opened parallel block (empty when the block is malformed)."""
    start = text.rfind(OPEN_BLOCK)
    if start < 0:
        return []
    block = text[start:]
    if "<Outlines>" not in block:
        return []
    outlines = [body.strip() for _, body in _OUTLINE.findall(block) if body.strip()]
    return outlines[:max_threads]


class Threads(Strategy):
    """ThreadWeaver-style threads: fork where the model opens a parallel block, join in order.

    Limits bound the work: `max_threads` per block, `max_blocks` per answer, `thread_tokens`
    per thread and `max_tokens` for each sequential stretch.
    """

    kind: Literal["threads"] = "threads"
    max_threads: int = Field(4, ge=2, le=32)
    """Threads forked per parallel block (extra outlines are dropped)."""
    max_blocks: int = Field(3, ge=0, le=16)
    """Parallel blocks per answer; later blocks are decoded sequentially."""
    thread_tokens: int = Field(128, ge=1)
    """Token limit for each thread."""
    segments: int = Field(6, ge=1, le=64)
    """Sequential stretches at most; together they stay within max_tokens."""
    format_prompt: bool = True
    """Teach the block format with a system prompt (for models not trained on it)."""
    summary: ClassVar[str] = "model-opened parallel threads, forked and joined"

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        scope = ctx
        if self.format_prompt:
            system = (
                FORMAT_PROMPT
                if not ctx.problem.system
                else (f"{ctx.problem.system}\n\n{FORMAT_PROMPT}")
            )
            scope = ctx.fork(problem=ctx.problem.model_copy(update={"system": system}))
        text = self.continuation(inputs)
        parent: str | None = None
        blocks = 0
        finish = "stop"
        overrides = self.sampling_overrides()
        # max_tokens bounds all sequential stretches together, as for a plain answer
        tokens_left = self.max_tokens or ctx.params.max_tokens
        for _ in range(self.segments):
            stop = (END_OUTLINES,) if blocks < self.max_blocks else ()
            overrides["max_tokens"] = tokens_left
            request = scope.request(prefix=text, stop=stop, **overrides)
            completion, parent = await scope.generate(
                request, parent=parent, label="main", edge="continue" if parent else None
            )
            text += completion.text
            tokens_left -= completion.usage.completion_tokens
            finish = completion.finish_reason
            if completion.stop_reason != END_OUTLINES or tokens_left <= 0:
                break
            outlines = parse_outlines(text, self.max_threads)
            text += END_OUTLINES + "\n"
            if not outlines:
                continue  # malformed block: keep decoding sequentially
            blocks += 1
            text, parent = await self._fork_join(scope, text, outlines, parent)
        candidate = scope.candidate_from_text(text, parent, finish)  # type: ignore[arg-type]
        candidate.metadata.update(blocks=blocks, mode="threads" if blocks else "sequential")
        await ctx.score(candidate)
        return [candidate]

    async def _fork_join(
        self, ctx: RunContext, text: str, outlines: list[str], parent: str | None
    ) -> tuple[str, str | None]:
        fork_node = ctx.trace.add(
            "fork",
            label=f"{len(outlines)} threads",
            parents=[(parent, "continue")] if parent else [],
            outlines=outlines,
        )
        key = f"threads-{fork_node}"

        async def thread(index: int) -> tuple[str, str]:
            prefix = f"{text}<Thread>\n{index}:"
            request = ctx.request(
                prefix=prefix,
                stop=(END_THREAD,),
                affinity_key=key,
                **{**self.sampling_overrides(), "max_tokens": self.thread_tokens},
            )
            completion, node = await ctx.generate(
                request, parent=fork_node, label=f"thread {index}", edge="fork"
            )
            return completion.text.strip(), node

        results = await asyncio.gather(*(thread(i) for i in range(1, len(outlines) + 1)))
        joined = "".join(
            f"<Thread>\n{i}: {body}\n{END_THREAD}\n" for i, (body, _) in enumerate(results, 1)
        )
        join_node = ctx.trace.add(
            "join",
            label=f"join {len(outlines)} threads",
            parents=[(node, "join") for _, node in results],
        )
        return text + joined + CLOSE_BLOCK + "\n", join_node
