"""The drill report's data: the run, its step timeline, the figures, the verdict, history.

Built from the state store only (the run record, its journal and the ``drill_measured``
event), so a report can be rebuilt later from any machine that shares the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from drctl.engine import events as ev
from drctl.engine.status import StepStatus
from drctl.state.base import Event, RunRecord, StateStore

#: The journal event a drill appends to its run when it has measured it.
DRILL_MEASURED = ev.DRILL_MEASURED
#: The journal event a drill appends when its run stopped unfinished (see drill.run).
DRILL_PAUSED = ev.DRILL_PAUSED

_ENDS = {
    ev.STEP_SUCCEEDED: StepStatus.SUCCEEDED,
    ev.STEP_FAILED: StepStatus.FAILED,
    ev.STEP_SKIPPED: StepStatus.SKIPPED,
    ev.STEP_RECOVERED: StepStatus.RECOVERED,
}
_STARTS = {ev.STEP_STARTED: StepStatus.RUNNING, ev.APPROVAL_NEEDED: StepStatus.WAITING}


@dataclass(frozen=True)
class StepSpan:
    """One step on the timeline: when it started and ended (seconds since the run started)."""

    id: str
    status: StepStatus
    start: float | None
    end: float | None
    mutates: bool


@dataclass(frozen=True)
class HistoryEntry:
    """An earlier (or this) drill of the same runbook, from its ``drill_measured`` event."""

    run_id: str
    started_at: float
    run_status: str
    passed: bool
    rto: float
    missing: int


@dataclass(frozen=True)
class PromoteGap:
    """What a promote of the drill journaled it gave up (its ``handoff`` record)."""

    step: str
    #: WAL the promoted standby lacked: not received of the old primary's end, or behind
    #: the most advanced candidate.
    gap_bytes: int
    #: False: the old primary's end was unknown, so the RPO is at least ``gap_bytes``.
    exact: bool

    @classmethod
    def from_record(cls, step: str, value: Any) -> PromoteGap | None:
        if not isinstance(value, dict) or not isinstance(value.get("gap_bytes"), int):
            return None
        return cls(step, int(value["gap_bytes"]), bool(value.get("handoff_exact")))

    def describe(self) -> str:
        if self.exact:
            return f"{self.gap_bytes} bytes of WAL ({self.step})"
        return (
            f"at least {self.gap_bytes} bytes of WAL ({self.step}; the old primary's end unknown)"
        )


@dataclass(frozen=True)
class DrillReport:
    """Everything a drill report shows."""

    run_id: str
    name: str
    runbook: str
    run_status: str
    started_at: float
    finished_at: float | None
    drill: ev.DrillMeasured
    steps: tuple[StepSpan, ...]
    history: tuple[HistoryEntry, ...]
    #: What each promote journaled it gave up (its handoff proof's gap).
    promote_gaps: tuple[PromoteGap, ...] = ()

    @property
    def passed(self) -> bool:
        return self.drill.passed

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "runbook": self.runbook,
            "run_status": self.run_status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "passed": self.passed,
            **self.drill.to_json(),
            "steps": [asdict(s) for s in self.steps],
            "history": [asdict(h) for h in self.history],
            # Only when a promote journaled one: a report without stays as 0.1.0 wrote it.
            **(
                {"promote_gaps": [asdict(g) for g in self.promote_gaps]}
                if self.promote_gaps
                else {}
            ),
        }


def drill_event(events: Sequence[Event]) -> ev.DrillMeasured | None:
    """The run's last ``drill_measured`` event, if it was a drill."""
    found = [e for e in events if e.kind == DRILL_MEASURED]
    fact = ev.decode(found[-1]) if found else None
    return fact if isinstance(fact, ev.DrillMeasured) else None


def timeline(run: RunRecord, events: Sequence[Event]) -> tuple[StepSpan, ...]:
    """Each plan step's span, from its first ``step_started`` to its last outcome."""
    steps = run.plan().steps
    mutates = {s.id: s.mutates for s in steps}
    starts: dict[str, tuple[float, StepStatus]] = {}
    ends: dict[str, tuple[float, StepStatus]] = {}
    for e in events:
        if e.step is None:
            continue
        if e.kind in (ev.STEP_STARTED, ev.APPROVAL_NEEDED):
            # When it first started (or reached its gate), and what it does since.
            was = starts.get(e.step, (e.ts, StepStatus.PENDING))[0]
            starts[e.step] = (was, _STARTS[e.kind])
        elif e.kind in _ENDS:
            ends[e.step] = (e.ts, _ENDS[e.kind])
    spans = []
    for sid in [s.id for s in steps]:
        start = starts.get(sid)
        end = ends.get(sid)
        status = end[1] if end else (start[1] if start is not None else StepStatus.PENDING)
        spans.append(
            StepSpan(
                id=sid,
                status=status,
                start=None if start is None else start[0] - run.started_at,
                end=None if end is None else end[0] - run.started_at,
                mutates=mutates.get(sid, False),
            )
        )
    return tuple(spans)


def first_mutation(run: RunRecord, events: Sequence[Event]) -> float | None:
    """When the first mutating step started (wall time), from the journal."""
    mutating = {s.id for s in run.plan().steps if s.mutates}
    for e in events:
        if e.kind == ev.STEP_STARTED and e.step in mutating:
            return e.ts
    return None


def history(store: StateStore, name: str, limit: int = 200) -> tuple[HistoryEntry, ...]:
    """Drills of runbook ``name`` in ``store``, newest first."""
    out = []
    for run in store.list_runs(limit=limit, name=name):
        entry = history_entry(run, store.events(run.id))
        if entry is not None:
            out.append(entry)
    return tuple(out)


def history_entry(run: RunRecord, events: Sequence[Event]) -> HistoryEntry | None:
    found = drill_event(events)
    if found is None:
        return None
    return HistoryEntry(
        run_id=run.id,
        started_at=run.started_at,
        run_status=run.status,
        passed=found.passed,
        rto=found.rto or 0.0,
        missing=found.missing or 0,
    )


def drills(store: StateStore, limit: int = 20) -> list[tuple[RunRecord, HistoryEntry]]:
    """The most recent drills in ``store`` (any runbook), newest first."""
    out = []
    for run in store.list_runs(limit=max(limit * 10, 200)):
        entry = history_entry(run, store.events(run.id))
        if entry is not None:
            out.append((run, entry))
        if len(out) >= limit:
            break
    return out


def build(store: StateStore, run_id: str) -> DrillReport:
    """The report of drill run ``run_id`` (its ``drill_measured`` event must be journaled)."""
    from drctl.errors import RunNotFound

    run = store.get_run(run_id)
    if run is None:
        raise RunNotFound(f"no run {run_id!r} in {store.location}")
    events = store.events(run_id)
    found = drill_event(events)
    if found is None:
        raise RunNotFound(f"run {run_id} was not a drill (no {DRILL_MEASURED} event)")
    return DrillReport(
        run_id=run.id,
        name=run.name,
        runbook=run.runbook,
        run_status=run.status,
        started_at=run.started_at,
        finished_at=run.finished_at,
        drill=found,
        steps=timeline(run, events),
        history=history(store, run.name),
        promote_gaps=promote_gaps(events),
    )


def promote_gaps(events: Sequence[Event]) -> tuple[PromoteGap, ...]:
    """Each promote's last journaled handoff record, in the order first seen."""
    found: dict[str, PromoteGap] = {}
    for e in events:
        if e.kind == ev.STEP_RECORDED and e.step and e.data.get("key") == "handoff":
            gap = PromoteGap.from_record(e.step, e.data.get("value"))
            if gap is not None:
                found[e.step] = gap
    return tuple(found.values())
