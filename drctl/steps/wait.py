"""The ``wait`` step type."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, model_validator

from drctl.errors import StepError, StepTimeout
from drctl.runbook.durations import format_duration
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepContext, StepInputs, StepType, published, short


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


class Wait(StepType[WaitInputs, None]):
    """Wait for a fixed time, or until another step type's verify holds, up to a deadline."""

    name = "wait"
    outputs = published(
        {
            "polls": "How many times the condition was asked.",
            "waited": "Seconds waited.",
        }
    )
    Inputs = WaitInputs

    def step_roles(self, inputs: WaitInputs) -> frozenset[Role]:
        return frozenset({Role.VERIFY}) if inputs.until is not None else frozenset()

    def runs_in_dry_run(self, inputs: WaitInputs) -> bool:
        return inputs.until is not None  # a dry run polls a condition, never sleeps a fixed time

    def own_waits(self, inputs: WaitInputs) -> dict[str, float]:
        if inputs.until is None:
            return {"duration": float(inputs.duration or 0.0)}
        return {"deadline": float(inputs.deadline)}

    def returns_in_time(self, inputs: WaitInputs) -> bool:
        # A fixed wait sleeps no longer than the time left; polling calls another type.
        return inputs.until is None

    def describe(self, inputs: WaitInputs, target: str | None) -> str:
        if inputs.until is None:
            return f"wait {format_duration(inputs.duration or 0.0)}"
        on = f" on {inputs.until.target}" if inputs.until.target else ""
        return (
            f"wait until {inputs.until.type}{on} holds {short(json.dumps(inputs.until.with_, sort_keys=True), 40)} "
            f"(every {format_duration(inputs.interval)}, "
            f"up to {format_duration(inputs.deadline)})"
        )

    def apply(self, ctx: StepContext[WaitInputs, None]) -> None:
        inputs = ctx.inputs
        if inputs.until is None:
            if (inputs.duration or 0.0) > ctx.remaining():
                raise StepTimeout("the wait is longer than the step's timeout")
            ctx.sleep(inputs.duration or 0.0)
            return
        from drctl.steps.registry import get_step_type

        cond = inputs.until
        sub_type = get_step_type(cond.type)
        # The condition's client library is imported here, not beside another step's import.
        sub_type.warm()
        sub_inputs = sub_type.Inputs.model_validate(cond.with_)
        target = ctx.target_named(cond.target) if cond.target else None
        sub = ctx.derive(sub_inputs, target)
        # A dry run asks whether the condition holds now; it never waits for it.
        within = 0.0 if ctx.dry_run else inputs.deadline
        cut = ctx.remaining() < within
        polled = ctx.poll(
            lambda: True if sub_type.verify(sub) else None,
            every=inputs.interval,
            within=within,
            retry_on=(StepError,),
        )
        if not polled.done:
            reason = polled.error.message if polled.error else "condition not met"
            why = " (the step's timeout ended the wait before its deadline)" if cut else ""
            raise StepTimeout(
                f"gave up after {polled.polls} polls in {polled.waited:.1f}s{why}: {reason}"
            ) from polled.error
        ctx.output("polls", polled.polls)
        ctx.output("waited", round(polled.waited, 3))
