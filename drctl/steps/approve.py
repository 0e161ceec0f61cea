"""The ``approve`` step type."""

from __future__ import annotations

from pydantic import Field

from drctl.steps.base import Role, StepContext, StepInputs, StepType, short


class ApproveInputs(StepInputs):
    message: str = Field(default="continue?", description="What the approver is agreeing to.")


class Approve(StepType):
    """A gate: the run stops here until an operator approves (prompt, --yes or --approve ID)."""

    name = "approve"
    Inputs = ApproveInputs
    roles = frozenset({Role.GATE})

    def describe(self, inputs: StepInputs, target: str | None) -> str:
        assert isinstance(inputs, ApproveInputs)
        return f"gate: {short(inputs.message)}"

    def apply(self, ctx: StepContext) -> None:
        # The engine holds the gate before apply; reaching apply means approved.
        return None
