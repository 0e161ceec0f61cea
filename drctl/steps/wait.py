"""The ``wait`` step type."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, model_validator

from drctl.errors import StepError, StepTimeout
from drctl.runbook.durations import format_duration
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepContext, StepInputs, StepType, short


class WaitCondition(StepInputs):
    type: str = Field(description="A step type whose verify is the condition.")
    target: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class WaitInputs(StepInputs):
    duration: Duration | None = Field(default=None, description="Sleep this long.")
    until: WaitCondition | None = Field(
        default=None, description="Poll another step type's verify until it holds."
    )
    interval: Duration = Field(default=2.0, description="Seconds between polls.")
    deadline: Duration = Field(default=60.0, description="Give up after this long.")

    @model_validator(mode="after")
    def _one_of(self) -> WaitInputs:
        if (self.duration is None) == (self.until is None):
            raise ValueError("give exactly one of 'duration' or 'until'")
        return self


class Wait(StepType):
    """Wait for a fixed time, or until another step type's verify holds, up to a deadline."""

    name = "wait"
    Inputs = WaitInputs

    def step_roles(self, inputs: StepInputs) -> frozenset[Role]:
        assert isinstance(inputs, WaitInputs)
        return frozenset({Role.VERIFY}) if inputs.until is not None else frozenset()

    def describe(self, inputs: StepInputs, target: str | None) -> str:
        assert isinstance(inputs, WaitInputs)
        if inputs.until is None:
            return f"wait {format_duration(inputs.duration or 0.0)}"
        on = f" on {inputs.until.target}" if inputs.until.target else ""
        return (
            f"wait until {inputs.until.type}{on} holds {short(json.dumps(inputs.until.with_, sort_keys=True), 40)} "
            f"(every {format_duration(inputs.interval)}, "
            f"up to {format_duration(inputs.deadline)})"
        )

    def apply(self, ctx: StepContext) -> None:
        inputs = ctx.inputs
        assert isinstance(inputs, WaitInputs)
        if inputs.until is None:
            if (inputs.duration or 0.0) > ctx.remaining():
                raise StepTimeout("the wait is longer than the step's timeout")
            ctx.sleep(inputs.duration or 0.0)
            return
        from drctl.steps.registry import get_step_type

        cond = inputs.until
        sub_type = get_step_type(cond.type)
        sub_inputs = sub_type.Inputs.model_validate(cond.with_)
        target = ctx.target_named(cond.target) if cond.target else None
        sub = ctx.derive(sub_inputs, target)
        budget = min(inputs.deadline, ctx.remaining())
        polls = 0
        waited = 0.0
        last_error = "condition not met"
        # Bounded by the deadline: at most deadline/interval + 1 polls.
        while True:
            polls += 1
            try:
                if sub_type.verify(sub):
                    ctx.output("polls", polls)
                    ctx.output("waited", round(waited, 3))
                    return
            except StepError as exc:
                last_error = exc.message
            if waited + inputs.interval > budget:
                raise StepTimeout(f"gave up after {polls} polls in {waited:.1f}s: {last_error}")
            ctx.sleep(inputs.interval)
            waited += inputs.interval
