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
    #: A resume found it started with no outcome and could not verify it: it stays in
    #: doubt, for every later resume, until the operator decides (--reapply, --mark-done).
    doubtful: bool = False

    @property
    def in_doubt(self) -> bool:
        """Started with no outcome (the process died or was cancelled mid-step), or left in doubt."""
        return self.status is StepStatus.RUNNING or self.doubtful

    @property
    def done(self) -> bool:
        """Finished in a way that lets dependent steps run."""
        return self.status.done


@dataclass
class RunState:
    """A run as its journal tells it so far: each step's state, the gates opened, the end."""

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
        # Dispatch on the stored kind, then read only that kind: resume folds whole journals.
        if kind == ev.STEP_STARTED and e.step is not None:
            # All a start says is in the store's own columns.
            s = run.step(e.step)
            s.status = StepStatus.RUNNING
            s.attempts = max(s.attempts, e.attempt or 1)
            s.started_at = s.started_at or e.ts
            s.error = None
            s.doubtful = False
        elif kind == ev.STEP_SUCCEEDED:
            s = run.step(e.step or "")
            s.status = StepStatus.SUCCEEDED
            s.outputs = ev.StepSucceeded.outputs_of(e)
            s.finished_at = e.ts
            s.doubtful = False
        elif kind == ev.STEP_FAILED:
            failed = ev.StepFailed.read(e)
            s = run.step(failed.step)
            if not failed.final:
                s.status = StepStatus.RETRYING
            else:
                s.status = StepStatus.IGNORED if failed.ignored else StepStatus.FAILED
            s.error = failed.error
            s.finished_at = e.ts
            s.doubtful = failed.in_doubt
        elif kind == ev.STEP_RECORDED:
            recorded = ev.StepRecorded.read(e)
            run.step(recorded.step).recorded[recorded.key] = recorded.value
        elif kind == ev.RUN_FINISHED:
            run.finished = ev.RunFinished.read(e).status
        elif kind in (ev.RUN_RESUMED, ev.RUN_STARTED):
            run.finished = None
        elif kind == ev.APPROVAL_GRANTED and e.step is not None:
            run.approved.add(e.step)
        elif kind in _STEP_STATES and e.step is not None:
            # Skipped, recovered, undoing, undone: the kind and the step say it all.
            run.step(e.step).status = _STEP_STATES[kind]
    return run


#: Kinds whose whole meaning for a step's state is their kind.
_STEP_STATES = {
    ev.STEP_SKIPPED: StepStatus.SKIPPED,
    ev.STEP_RECOVERED: StepStatus.RECOVERED,
    ev.UNDO_STARTED: StepStatus.UNDOING,
    ev.UNDO_SUCCEEDED: StepStatus.UNDONE,
}
