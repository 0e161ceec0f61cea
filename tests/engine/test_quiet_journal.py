"""A guard's quiet journal shares the run's queue: what it commits of the run's is shown."""

from __future__ import annotations

from pathlib import Path

from drctl.engine.clock import SystemClock
from drctl.engine.events import StepStarted, StepSucceeded
from drctl.engine.journal import Journal
from drctl.engine.redact import Redactor
from drctl.state.base import Event, RunRecord
from drctl.state.sqlite import SqliteStore


class Recording:
    """A sink that keeps what it is shown."""

    def __init__(self) -> None:
        self.kinds: list[tuple[str, str | None]] = []
        self.lines: list[str] = []

    def event(self, event: Event) -> None:
        self.kinds.append((event.kind, event.step))

    def log(self, step: str, line: str) -> None:
        self.lines.append(line)

    def note(self, text: str) -> None:
        self.lines.append(text)

    def close(self) -> None:
        pass


def test_a_quiet_commit_shows_the_runs_queued_events_but_not_its_own(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.create_run(
        RunRecord(
            id="r1", runbook="/rb.yaml", name="rb", plan_hash="sha256:x", plan_json="{}",
            params_json="{}", user="u", host="h", pid=1, version="0", started_at=1000.0,
            lock_key="rb",
        )
    )  # fmt: skip
    sink = Recording()
    journal = Journal(store, "r1", None, Redactor(), SystemClock(), [sink])
    # A read-only step's intent and outcome wait in the queue for a later commit...
    journal.write_later(StepStarted(step="probe", attempt=1))
    journal.write_later(StepSucceeded(step="probe", attempt=1))
    # ...and a guard's reading, through the quiet journal, is what commits them.
    quiet = journal.quiet()
    quiet.write(StepStarted(step="guard-reading", attempt=1))
    quiet.log("guard-reading", "a guard's own line")
    quiet.note("a guard's own note")

    stored = [(e.kind, e.step) for e in store.events("r1")]
    assert stored == [
        ("step_started", "probe"), ("step_succeeded", "probe"),
        ("step_started", "guard-reading"),
    ]  # fmt: skip
    assert sink.kinds == [("step_started", "probe"), ("step_succeeded", "probe")]
    assert sink.lines == []
    journal.log("probe", "the run's own line")
    assert sink.lines == ["the run's own line"]
    store.close()
