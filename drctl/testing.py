"""Test helpers for authors of step types (drctl's own tests use them too).

``FakeContext`` is a StepContext without an engine: it records what a step type
records, outputs and logs, and its sleeps advance a fake clock, so a step type's
check/apply/verify/undo can be unit-tested against a real system without a run.

    ctx = FakeContext(MyStep.Inputs(name="db"), target={"dsn": dsn})
    MyStep().apply(ctx)
    assert ctx.outputs["lag_bytes"] == 0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drctl.errors import Cancelled
from drctl.steps.base import StepInputs

__all__ = ["FakeContext"]


class FakeContext:
    """A StepContext for tests: everything kept in plain attributes."""

    def __init__(
        self,
        inputs: StepInputs,
        *,
        target: Mapping[str, Any] | None = None,
        targets: Mapping[str, Mapping[str, Any]] | None = None,
        recorded: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        dry_run: bool = False,
        step_id: str = "step",
        attempt: int = 1,
    ) -> None:
        self.step_id = step_id
        self.attempt = attempt
        self.inputs = inputs
        self.target = target
        self.targets = dict(targets or {})
        self.recorded: dict[str, Any] = dict(recorded or {})
        self.dry_run = dry_run
        self.run_id = "test-run"
        self.runbook = "test"
        self.outputs: dict[str, Any] = {}
        self.lines: list[str] = []
        self.slept: list[float] = []
        self.elapsed = 0.0
        self.timeout = timeout
        self.cancel_requested = False

    def record(self, key: str, value: Any) -> None:
        self.recorded[key] = value

    def output(self, key: str, value: Any) -> None:
        self.outputs[key] = value

    def log(self, line: str) -> None:
        self.lines.append(line.rstrip("\n"))

    def remaining(self) -> float:
        return max(0.0, self.timeout - self.elapsed)

    @property
    def cancelled(self) -> bool:
        return self.cancel_requested

    def sleep(self, seconds: float) -> None:
        if self.cancel_requested:
            raise Cancelled("cancelled")
        step = min(seconds, self.remaining())
        self.slept.append(step)
        self.elapsed += step

    def raise_if_cancelled(self) -> None:
        if self.cancel_requested:
            raise Cancelled("cancelled")

    def target_named(self, name: str) -> Mapping[str, Any]:
        return self.targets[name]

    def derive(self, inputs: StepInputs, target: Mapping[str, Any] | None) -> FakeContext:
        child = FakeContext(inputs, target=target, targets=self.targets, timeout=self.remaining())
        child.slept = self.slept
        return child
