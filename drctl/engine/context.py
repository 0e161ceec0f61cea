"""What a step type sees while it runs: the engine's side of StepContext."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, overload

from drctl.compiler.plan import Plan
from drctl.engine import events as ev
from drctl.engine import faults
from drctl.engine.clock import Clock
from drctl.engine.journal import Journal
from drctl.engine.status import StepStatus
from drctl.errors import Cancelled, StepError
from drctl.runbook.targets import TargetModel
from drctl.steps.base import (
    FenceRecord,
    FenceStatus,
    I,
    J,
    M,
    Polled,
    R,
    Role,
    StepContext,
    StepFacts,
    T,
    U,
    poll,
    target_of,
)

#: How the engine's step states read to a step type; anything else has not run.
_FENCE_STATUS = {
    StepStatus.SUCCEEDED: FenceStatus.SUCCEEDED,
    StepStatus.RECOVERED: FenceStatus.RECOVERED,
    StepStatus.FAILED: FenceStatus.FAILED,
    StepStatus.IGNORED: FenceStatus.IGNORED,
    StepStatus.SKIPPED: FenceStatus.SKIPPED,
    StepStatus.RUNNING: FenceStatus.IN_DOUBT,
    StepStatus.RETRYING: FenceStatus.IN_DOUBT,
    StepStatus.UNDOING: FenceStatus.IN_DOUBT,
    StepStatus.UNDONE: FenceStatus.FAILED,
}


def fence_status(status: object) -> FenceStatus:
    """A step's state as the executor holds it (a StepStatus, or a halt such as in doubt)."""
    if isinstance(status, StepStatus):
        return _FENCE_STATUS.get(status, FenceStatus.PENDING)
    # The executor's halts (cancelled, in doubt, lock lost) all leave the step in doubt.
    return FenceStatus.PENDING if status is None else FenceStatus.IN_DOUBT


def fences_before(
    plan: Plan, step_id: str, status: Mapping[str, object]
) -> tuple[FenceRecord, ...]:
    """The fence-role steps ``step_id`` waits for (transitively), with their states now."""
    path = waits_for(plan, step_id)
    return tuple(
        FenceRecord(s.id, s.target, fence_status(status.get(s.id)), s.fenced_target)
        for s in plan.steps
        if s.id in path and Role.FENCE.value in s.roles
    )


def waits_for(plan: Plan, step_id: str) -> set[str]:
    """Every step ``step_id`` waits for, transitively (its path)."""
    by_id = {s.id: s for s in (*plan.steps, *plan.fallbacks)}
    path: set[str] = set()
    todo = list(by_id[step_id].requires) if step_id in by_id else []
    while todo:
        sid = todo.pop()
        if sid not in path and sid in by_id:
            path.add(sid)
            todo.extend(by_id[sid].requires)
    return path


def facts_of(plan: Plan, order: list[str], outputs: Mapping[str, Any]) -> tuple[StepFacts, ...]:
    """The steps of the run that have finished (``order``), with what each published."""
    by_id = {s.id: s for s in (*plan.steps, *plan.fallbacks)}
    # Copies: worker threads append to both while a step reads them.
    published = dict(outputs)
    return tuple(
        StepFacts(sid, by_id[sid].type, by_id[sid].target, published.get(sid) or {})
        for sid in dict.fromkeys(list(order))
        if sid in by_id
    )


class Flag:
    """Set once from one thread, read from others; never waited on.

    All that ``StepRun.abandoned`` needs of a threading.Event, without the Condition and
    lock one builds: a run made one per step attempt, most of them never set.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class StepRun(Generic[I, T]):
    """One attempt of one step, handed to the step type's check/apply/verify/undo."""

    def __init__(
        self,
        *,
        step_id: str,
        attempt: int,
        inputs: I,
        target: T,
        targets: Mapping[str, TargetModel],
        recorded: dict[str, Any],
        journal: Journal,
        clock: Clock,
        deadline: float,
        cancel: threading.Event,
        dry_run: bool = False,
        run_id: str = "",
        runbook: str = "",
        fences: Callable[[], tuple[FenceRecord, ...]] = tuple,
        target_name: str | None = None,
        facts: Callable[[], tuple[StepFacts, ...]] = tuple,
    ) -> None:
        self.step_id = step_id
        self.attempt = attempt
        self.inputs = inputs
        self.target = target
        self._targets = targets
        self.recorded = recorded
        self.outputs: dict[str, Any] = {}
        self.lines: list[str] = []
        self.dry_run = dry_run
        self.run_id = run_id
        self.runbook = runbook
        self._journal = journal
        self._clock = clock
        self._deadline = deadline
        self._cancel = cancel
        self._fences = fences
        self.target_name = target_name
        self._facts = facts
        #: Set when the engine gave up on this attempt (timeout): its late writes are dropped.
        self.abandoned = Flag()

    @overload
    def target_named(self, name: str) -> TargetModel: ...

    @overload
    def target_named(self, name: str, kind: type[M]) -> M: ...

    def target_named(self, name: str, kind: type[M] | None = None) -> TargetModel:
        if name not in self._targets:
            raise StepError(f"unknown target {name!r}")
        found = self._targets[name]
        return found if kind is None else target_of(name, found, kind)

    def derive(self, inputs: J, target: U) -> StepContext[J, U]:
        """A context for a step type used inside this step (``wait: until``)."""
        child: StepRun[J, U] = StepRun(
            step_id=self.step_id, attempt=self.attempt, inputs=inputs, target=target,
            targets=self._targets, recorded={}, journal=self._journal, clock=self._clock,
            deadline=self._deadline, cancel=self._cancel, dry_run=self.dry_run,
            run_id=self.run_id, runbook=self.runbook, fences=self._fences,
            target_name=self.target_name, facts=self._facts,
        )  # fmt: skip
        child.abandoned = self.abandoned
        return child

    def fences(self) -> tuple[FenceRecord, ...]:
        """Read at the time of the call: the executor updates step states as they end."""
        return self._fences()

    def facts(self) -> tuple[StepFacts, ...]:
        """Read at the time of the call, like ``fences``."""
        return self._facts()

    def record(self, key: str, value: Any) -> None:
        if self.dry_run:
            return
        if self.abandoned.is_set():
            raise StepError("step attempt was abandoned after its timeout")
        self._journal.write(
            ev.StepRecorded(step=self.step_id, attempt=self.attempt, key=key, value=value)
        )
        self.recorded[key] = value
        faults.after_record(self.step_id, key)

    def output(self, key: str, value: Any) -> None:
        self.outputs[key] = value

    def log(self, line: str) -> None:
        line = line.rstrip("\n")
        self.lines.append(line)
        if len(self.lines) > 200:
            del self.lines[:100]
        self._journal.log(self.step_id, line)

    def remaining(self) -> float:
        return max(0.0, self._deadline - self._clock.monotonic())

    def monotonic(self) -> float:
        return self._clock.monotonic()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set() or self.abandoned.is_set()

    def sleep(self, seconds: float) -> None:
        """Sleep up to the deadline; raises Cancelled if the operator cancels meanwhile."""
        if self._clock.sleep(min(seconds, self.remaining()), self._cancel):
            raise Cancelled("cancelled by the operator")

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
        if self.cancelled:
            raise Cancelled("cancelled by the operator")
