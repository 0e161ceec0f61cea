"""The ``assert`` step type (the module is not called ``assert``: that is a keyword)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from drctl.errors import StepError
from drctl.steps.base import Role, StepContext, StepInputs, StepType, published, short


class AssertInputs(StepInputs):
    that: Any = Field(
        description="A template expression over params and earlier outputs, e.g. "
        "\"{{ steps['check-lag'].outputs.bytes < 1024 }}\"; must be true."
    )
    message: str | None = Field(default=None, description="Shown when the assertion fails.")


class Assert(StepType[AssertInputs, None]):
    """Fail the run unless an expression over params and earlier steps' outputs is true."""

    name = "assert"
    outputs = published(
        {
            "value": "The value the assertion compared.",
        }
    )
    Inputs = AssertInputs
    roles = frozenset({Role.VERIFY})

    def describe(self, inputs: AssertInputs, target: str | None) -> str:
        return f"assert {short(inputs.message or inputs.that)}"

    def apply(self, ctx: StepContext[AssertInputs, None]) -> None:
        inputs = ctx.inputs
        ctx.output("value", inputs.that)
        if isinstance(inputs.that, str) and inputs.that.strip().lower() in (
            "false",
            "0",
            "",
            "none",
        ):
            ok = False
        else:
            ok = bool(inputs.that)
        if not ok:
            raise StepError(inputs.message or f"assertion is false ({inputs.that!r})")
