"""Reading a journal back into where each step stands: what resume decides from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from drctl.engine import events as ev
from drctl.engine.status import RunStatus, StepStatus
from drctl.state.base import Event


@dataclass
class StepState:
    """One step as the journal tells it."""

    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def in_doubt(self) -> bool:
        """Started with no outcome: the process died or was cancelled mid-step."""
        return self.status is StepStatus.RUNNING

    @property
    def done(self) -> bool:
        """Finished in a way that lets dependent steps run."""
        return self.status.done


@dataclass
class RunState:
    steps: dict[str, StepState] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)
    finished: RunStatus | None = None
    events: int = 0

    def step(self, step_id: str) -> StepState:
        state = self.steps.get(step_id)
        if state is None:
            state = self.steps[step_id] = StepState()
        return state


def replay(events: Iterable[Event]) -> RunState:
    """Fold a run's events into its state. Pure; linear in the number of events."""
    run = RunState()
    for e in events:
        run.events += 1
        kind = e.kind
        if kind in _IGNORED:
            continue  # decoding only what tells a step's state keeps resume quick
        fact = ev.decode(e)
        match fact:
            case ev.RunFinished():
                run.finished = fact.status
            case ev.RunResumed() | ev.RunStarted():
                run.finished = None
            case ev.ApprovalGranted():
                run.approved.add(fact.step)
            case ev.StepStarted():
                s = run.step(fact.step)
                s.status = StepStatus.RUNNING
                s.attempts = max(s.attempts, fact.attempt or 1)
                s.started_at = s.started_at or e.ts
                s.error = None
            case ev.StepRecorded():
                run.step(fact.step).recorded[fact.key] = fact.value
            case ev.StepSucceeded():
                s = run.step(fact.step)
                s.status = StepStatus.SUCCEEDED
                s.outputs = dict(fact.outputs)
                s.finished_at = e.ts
            case ev.StepFailed():
                s = run.step(fact.step)
                if not fact.final:
                    s.status = StepStatus.RETRYING
                else:
                    s.status = StepStatus.IGNORED if fact.ignored else StepStatus.FAILED
                s.error = fact.error
                s.finished_at = e.ts
            case ev.StepSkipped():
                run.step(fact.step).status = StepStatus.SKIPPED
            case ev.StepRecovered():
                run.step(fact.step).status = StepStatus.RECOVERED
            case ev.UndoSucceeded():
                run.step(fact.step).status = StepStatus.UNDONE
            case ev.UndoStarted():
                run.step(fact.step).status = StepStatus.UNDOING
    return run


#: Kinds that change no step's state nor the run's.
_IGNORED = frozenset(
    {
        ev.RUN_INTERRUPTED, ev.RUN_ABORTED, ev.LOCK_TAKEN_OVER, ev.LOCK_FORCE_RELEASED,
        ev.APPROVAL_NEEDED, ev.APPROVAL_DENIED, ev.STEP_CHECKED, ev.UNDO_FAILED,
        ev.DRILL_MEASURED, ev.DRILL_PAUSED,
    }
)  # fmt: skip
