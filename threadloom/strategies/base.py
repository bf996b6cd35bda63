"""The Strategy protocol: a pydantic config with a `kind` and an async `run`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from threadloom.types import Candidate

if TYPE_CHECKING:
    from threadloom.orchestrator.context import RunContext


class Strategy(BaseModel):
    """Base of every strategy: config fields plus `run(ctx, inputs) -> candidates, best first`.

    Subclasses set `kind` (a Literal, so graphs can be written in YAML/JSON) and implement
    `run`. They must not raise when a budget runs out: they return what they have, and the run
    context marks the result truncated.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    """Sampling temperature for this strategy's generations (None: the run's default)."""
    max_tokens: int | None = Field(None, ge=1)
    """Token limit per generation (None: the run's default)."""

    summary: ClassVar[str] = ""
    consumes_inputs: ClassVar[bool] = False
    """True for reducers (vote, select, ...) that work on the candidates of upstream nodes.
    Generators ignore inputs unless mapped, when each copy continues one input's text."""

    def sampling_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if self.temperature is not None:
            overrides["temperature"] = self.temperature
        if self.max_tokens is not None:
            overrides["max_tokens"] = self.max_tokens
        return overrides

    async def run(self, ctx: RunContext, inputs: list[Candidate]) -> list[Candidate]:
        raise NotImplementedError  # abstract

    @staticmethod
    def continuation(inputs: list[Candidate]) -> str:
        """The text a generator continues: its single input's (a mapped copy), else nothing."""
        return inputs[0].text if len(inputs) == 1 else ""

    def label(self) -> str:
        fields = self.model_dump(exclude={"kind"}, exclude_none=True, exclude_unset=True)
        inner = ",".join(f"{k}={v}" for k, v in fields.items())
        return f"{self.kind}:{inner}" if inner else self.kind
