"""Test helpers for authors of step types (drctl's own tests use them too).

``FakeContext`` is a StepContext without an engine: it records what a step type
records, outputs and logs, and its clock is fake — ``sleep`` and ``poll`` advance it
instead of waiting — so a step type's check/apply/verify/undo can be unit-tested
against a real system without a run, and a test of a wait never sleeps. A target
given as a mapping with a ``type`` becomes that type's model, as the engine would hand
it to the step. ``target_name``, ``fences`` and ``facts`` stand for what the engine
would tell the step: its target's runbook name, the fence steps it waits for, and the
steps of the run that finished before it with their outputs.

    ctx = FakeContext(MyStep.Inputs(name="db"), target={"type": "postgres", "dsn": dsn})
    MyStep().apply(ctx)
    assert ctx.outputs["lag_bytes"] == 0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, overload

from drctl.errors import Cancelled, StepError
from drctl.runbook.targets import TARGET_TYPES, TargetModel
from drctl.steps.base import (
    FenceRecord,
    I,
    J,
    M,
    Polled,
    R,
    StepContext,
    StepFacts,
    StepInputs,
    T,
    U,
    poll,
    target_of,
)

__all__ = ["FakeContext"]


class FakeContext(Generic[I, T]):
    """A StepContext for tests: everything kept in plain attributes, time on a fake clock.

    ``elapsed`` is the fake clock (``monotonic()`` reads it); ``slept`` lists every
    sleep asked for, polls' included.
    """

    @overload
    def __init__(
        self: FakeContext[I, None],
        inputs: I,
        *,
        target: None = None,
        targets: Mapping[str, TargetModel | Mapping[str, Any]] | None = None,
        recorded: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        dry_run: bool = False,
        step_id: str = "step",
        attempt: int = 1,
        fences: Sequence[FenceRecord] = (),
        target_name: str | None = None,
        facts: Sequence[StepFacts] = (),
    ) -> None: ...

    @overload
    def __init__(
        self,
        inputs: I,
        *,
        target: T,
        targets: Mapping[str, TargetModel | Mapping[str, Any]] | None = None,
        recorded: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        dry_run: bool = False,
        step_id: str = "step",
        attempt: int = 1,
        fences: Sequence[FenceRecord] = (),
        target_name: str | None = None,
        facts: Sequence[StepFacts] = (),
    ) -> None: ...

    @overload
    def __init__(
        self: FakeContext[I, Any],
        inputs: I,
        *,
        target: Mapping[str, Any],
        targets: Mapping[str, TargetModel | Mapping[str, Any]] | None = None,
        recorded: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        dry_run: bool = False,
        step_id: str = "step",
        attempt: int = 1,
        fences: Sequence[FenceRecord] = (),
        target_name: str | None = None,
        facts: Sequence[StepFacts] = (),
    ) -> None: ...

    def __init__(
        self,
        inputs: I,
        *,
        target: T | Mapping[str, Any] | None = None,
        targets: Mapping[str, TargetModel | Mapping[str, Any]] | None = None,
        recorded: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        dry_run: bool = False,
        step_id: str = "step",
        attempt: int = 1,
        fences: Sequence[FenceRecord] = (),
        target_name: str | None = None,
        facts: Sequence[StepFacts] = (),
    ) -> None:
        self.step_id = step_id
        self.attempt = attempt
        self.inputs = inputs
        self.target: T = _model(target)
        self.targets: dict[str, TargetModel] = {n: _model(t) for n, t in (targets or {}).items()}
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
        #: What ``fences()`` answers: the fence steps this step is to see as run before it.
        self.fence_records: tuple[FenceRecord, ...] = tuple(fences)
        #: The runbook's name for the target (what ``target_name`` answers).
        self.target_name = target_name
        #: What ``facts()`` answers: the steps this step is to see as finished before it.
        self.step_facts: tuple[StepFacts, ...] = tuple(facts)

    def record(self, key: str, value: Any) -> None:
        self.recorded[key] = value

    def output(self, key: str, value: Any) -> None:
        self.outputs[key] = value

    def log(self, line: str) -> None:
        self.lines.append(line.rstrip("\n"))

    def remaining(self) -> float:
        return max(0.0, self.timeout - self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    @property
    def cancelled(self) -> bool:
        return self.cancel_requested

    def sleep(self, seconds: float) -> None:
        if self.cancel_requested:
            raise Cancelled("cancelled")
        step = max(0.0, min(seconds, self.remaining()))
        self.slept.append(step)
        self.elapsed += step

    def poll(
        self,
        check: Callable[[], R | None],
        *,
        every: float,
        within: float,
        retry_on: tuple[type[StepError], ...] = (),
    ) -> Polled[R]:
        return poll(self, check, every=every, within=within, retry_on=retry_on)

    def raise_if_cancelled(self) -> None:
        if self.cancel_requested:
            raise Cancelled("cancelled")

    @overload
    def target_named(self, name: str) -> TargetModel: ...

    @overload
    def target_named(self, name: str, kind: type[M]) -> M: ...

    def target_named(self, name: str, kind: type[M] | None = None) -> TargetModel:
        if name not in self.targets:
            raise StepError(f"unknown target {name!r}")
        found = self.targets[name]
        return found if kind is None else target_of(name, found, kind)

    def fences(self) -> tuple[FenceRecord, ...]:
        return self.fence_records

    def facts(self) -> tuple[StepFacts, ...]:
        return self.step_facts

    def derive(self, inputs: J, target: U) -> StepContext[J, U]:
        child: FakeContext[J, U] = FakeContext(
            inputs,
            target=target,
            targets=self.targets,
            timeout=self.remaining(),
            fences=self.fence_records,
            target_name=self.target_name,
            facts=self.step_facts,
        )
        # One clock and one record of sleeps for the step and what it runs inside it.
        child.slept = self.slept
        child.elapsed = 0.0
        return child


def _model(target: Any) -> Any:
    """A target mapping with a ``type`` as its model, the way the engine hands it to a step.

    Anything else is kept as it is: a model, None, or a mapping without a type (a test
    written for 0.1.0, when a step's target was a mapping).
    """
    if isinstance(target, Mapping) and "type" in target and target["type"] in TARGET_TYPES:
        return TARGET_TYPES[str(target["type"])].model_validate(dict(target))
    return target


def _conforms(ctx: FakeContext[I, T]) -> StepContext[I, T]:
    """Not called: mypy checks here that a FakeContext is a StepContext of the same types."""
    return ctx


def _conforms_untyped(ctx: FakeContext) -> StepContext[StepInputs, TargetModel | None]:
    """Not called: the defaults (any inputs, any target or none) conform too."""
    return ctx
