"""The ``approve`` step type."""

from __future__ import annotations

from pydantic import Field

from drctl.steps.base import Role, StepContext, StepInputs, StepType, short


class ApproveInputs(StepInputs):
    message: str = Field(default="continue?", description="What the approver is agreeing to.")


class Approve(StepType[ApproveInputs, None]):
    """A gate: the run stops here until an operator approves (prompt, --yes or --approve ID)."""

    name = "approve"
    Inputs = ApproveInputs

    def runs_in_dry_run(self, inputs: ApproveInputs) -> bool:
        return False  # a dry run asks nobody

    roles = frozenset({Role.GATE})

    def describe(self, inputs: ApproveInputs, target: str | None) -> str:
        return f"gate: {short(inputs.message)}"

    def apply(self, ctx: StepContext[ApproveInputs, None]) -> None:
        # The engine holds the gate before apply; reaching apply means approved.
        return None
