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
    summary: str | None = None
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
        if kind == ev.RUN_FINISHED:
            run.finished = RunStatus(str(e.data.get("status")))
            continue
        if kind in (ev.RUN_RESUMED, ev.RUN_STARTED):
            run.finished = None
            continue
        if kind == ev.APPROVAL_GRANTED and e.step is not None:
            run.approved.add(e.step)
            continue
        if e.step is None:
            continue
        s = run.step(e.step)
        if kind == ev.STEP_STARTED:
            s.status = StepStatus.RUNNING
            s.attempts = max(s.attempts, e.attempt or 1)
            s.started_at = s.started_at or e.ts
            s.error = None
        elif kind == ev.STEP_RECORDED:
            s.recorded[str(e.data["key"])] = e.data.get("value")
        elif kind == ev.STEP_SUCCEEDED:
            s.status = StepStatus.SUCCEEDED
            s.outputs = dict(e.data.get("outputs") or {})
            s.summary = e.data.get("summary")
            s.finished_at = e.ts
        elif kind == ev.STEP_FAILED:
            if e.data.get("final", True):
                s.status = StepStatus.IGNORED if e.data.get("ignored") else StepStatus.FAILED
            else:
                s.status = StepStatus.RETRYING
            s.error = e.data.get("error")
            s.finished_at = e.ts
        elif kind == ev.STEP_SKIPPED:
            s.status = StepStatus.SKIPPED
            s.summary = e.data.get("reason")
        elif kind == ev.STEP_RECOVERED:
            s.status = StepStatus.RECOVERED
            s.summary = e.data.get("summary")
        elif kind == ev.UNDO_SUCCEEDED:
            s.status = StepStatus.UNDONE
        elif kind == ev.UNDO_STARTED:
            s.status = StepStatus.UNDOING
    return run
