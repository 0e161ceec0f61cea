"""Stop conditions (``guards:``) read in the background while a run lasts.

The engine runs in-process against SQLite with real shell guards and steps; a step holds
until the test has seen the guard trip in the journal (bounded), so what is asserted is
what the run did after the trip, not how fast the machine read the guard.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from drctl.compiler.compile import compile_runbook
from drctl.compiler.params import ParamInput
from drctl.engine.status import RunStatus
from drctl.errors import RunbookInvalid
from tests.conftest import REPO, loaded_by_cli, run_cli
from tests.engine.conftest import HEAD, Harness

BOUND = 60.0  # seconds any wait in these tests may take at most


def _wait_for(what: str, predicate: Any) -> None:
    deadline = time.monotonic() + BOUND
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _held_step(sid: str, tmp: Path, line: str) -> str:
    """A mutating step that appends ``line`` once ``release`` exists (bounded), undoable."""
    return (
        f"  - {{id: {sid}, type: shell, with: {{command: 'for i in $(seq 1200); do test -e "
        f"{tmp}/release && break; sleep 0.05; done; echo {line} >> {tmp}/fx', verify: "
        f"'grep -qx {line} {tmp}/fx', undo: 'echo undo-{line} >> {tmp}/fx'}}}}\n"
    )


def _step(sid: str, tmp: Path, line: str, requires: str) -> str:
    return (
        f"  - {{id: {sid}, type: shell, requires: [{requires}], with: {{command: 'echo {line} "
        f">> {tmp}/fx', verify: 'grep -qx {line} {tmp}/fx', undo: 'echo undo-{line} >> "
        f"{tmp}/fx'}}}}\n"
    )


def _guard(tmp: Path, **extra: str) -> str:
    fields = {"every": "0.05s", "trip_after": "2", **extra}
    more = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return (
        "guards:\n"
        f"  - {{id: healthy, type: shell, with: {{command: 'test ! -e {tmp}/bad', mutates: false}}, {more}}}\n"
    )


def _run_in_thread(harness: Harness, path: str) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def go() -> None:
        box["result"] = harness.run(path)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, box


def _kinds(harness: Harness) -> list[str]:
    runs = harness.store.list_runs()
    return [e.kind for e in harness.store.events(runs[0].id)] if runs else []


def test_a_tripped_guard_halts_the_run_and_lets_the_step_in_flight_finish(harness: Harness) -> None:
    """Tripped while a step runs: that step ends, nothing more starts; halted, exit 1, resumable."""
    tmp = harness.tmp
    path = harness.write(
        HEAD
        + _guard(tmp)
        + "steps:\n"
        + _held_step("one", tmp, "one")
        + _step("two", tmp, "two", "one")
    )
    thread, box = _run_in_thread(harness, path)
    _wait_for("step one to start", lambda: "step_started" in _kinds(harness))
    (tmp / "bad").touch()
    _wait_for("the guard to trip", lambda: "guard_tripped" in _kinds(harness))
    (tmp / "release").touch()
    thread.join(BOUND)
    run_id, outcome = box["result"]
    assert (outcome.status, outcome.exit_code) == (RunStatus.HALTED, 1)
    assert "guard healthy tripped" in outcome.message and "drctl resume" in outcome.message
    assert (tmp / "fx").read_text() == "one\n"
    kinds = harness.kinds(run_id)
    assert ("step_started", "two") not in kinds and ("run_halted", None) in kinds
    readings = [e for e in harness.store.events(run_id) if e.kind == "guard_reading"]
    assert [e.data["state"] for e in readings] == ["ok", "failing"]
    tripped = next(e for e in harness.store.events(run_id) if e.kind == "guard_tripped")
    assert tripped.data["failures"] == 2 and tripped.data["action"] == "halt"

    # Resumed once it reads well again: re-armed, it reads once before the first step.
    (tmp / "bad").unlink()
    resumed = harness.resume(run_id)
    assert resumed.status is RunStatus.SUCCEEDED, resumed.message
    assert (tmp / "fx").read_text() == "one\ntwo\n"
    after = harness.kinds(run_id)
    resumed_at = after.index(("run_resumed", None))
    assert ("guard_reading", None) in after[resumed_at:]


def test_a_guard_that_trips_with_rollback_undoes_completed_steps_in_reverse(
    harness: Harness,
) -> None:
    """on_trip: rollback halts, then undoes every completed mutating step, last first."""
    tmp = harness.tmp
    path = harness.write(
        HEAD
        + _guard(tmp, on_trip="rollback")
        + "steps:\n"
        + f"  - {{id: a, type: shell, with: {{command: 'echo a >> {tmp}/fx', verify: 'grep -qx a {tmp}/fx', undo: 'echo undo-a >> {tmp}/fx'}}}}\n"
        + _step("b", tmp, "b", "a")
        + _held_step("c", tmp, "c").replace("{id: c,", "{id: c, requires: [b],")
        + _step("d", tmp, "d", "c")
    )
    thread, box = _run_in_thread(harness, path)
    _wait_for(
        "step c to start",
        lambda: (
            (tmp / "fx").exists()
            and (tmp / "fx").read_text() == "a\nb\n"
            and _kinds(harness).count("step_started") == 3
        ),
    )
    (tmp / "bad").touch()
    _wait_for("the guard to trip", lambda: "guard_tripped" in _kinds(harness))
    (tmp / "release").touch()
    thread.join(BOUND)
    _, outcome = box["result"]
    assert (outcome.status, outcome.exit_code) == (RunStatus.ROLLED_BACK, 1), outcome.message
    assert (tmp / "fx").read_text().split() == ["a", "b", "c", "undo-c", "undo-b", "undo-a"]


@pytest.mark.parametrize(("on_error", "trips"), [("trip", True), ("ignore", False)])
def test_a_guard_that_cannot_be_read_follows_on_error(
    harness: Harness, on_error: str, trips: bool
) -> None:
    """An http guard on a closed port is unreadable: it trips under trip, is ignored under ignore."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    tmp = harness.tmp
    path = harness.write(
        HEAD
        + "guards:\n"
        + f"  - {{id: api, type: http, with: {{url: 'http://127.0.0.1:{port}/health'}}, every: 0.05s, trip_after: 2, on_error: {on_error}}}\n"
        + "steps:\n"
        + f"  - {{id: look, type: shell, with: {{command: 'for i in $(seq 1200); do test -e {tmp}/release && break; sleep 0.05; done', mutates: false}}}}\n"
        + "  - {id: after, type: shell, requires: [look], with: {command: 'true', mutates: false}}\n"
    )
    thread, box = _run_in_thread(harness, path)
    _wait_for("a reading", lambda: "guard_reading" in _kinds(harness))
    if trips:
        _wait_for("the guard to trip", lambda: "guard_tripped" in _kinds(harness))
    else:
        # Ignored readings never count: wait for several, then let the run end.
        _wait_for("the step", lambda: "step_started" in _kinds(harness))
        time.sleep(0.3)
    (tmp / "release").touch()
    thread.join(BOUND)
    run_id, outcome = box["result"]
    readings = [e for e in harness.store.events(run_id) if e.kind == "guard_reading"]
    assert readings[0].data["state"] == "unreadable"
    assert (
        "127.0.0.1" in readings[0].data["reading"]
        or "refused" in readings[0].data["reading"].lower()
    )
    if trips:
        assert outcome.status is RunStatus.HALTED and (
            "step_started",
            "after",
        ) not in harness.kinds(run_id)
    else:
        assert outcome.status is RunStatus.SUCCEEDED and "guard_tripped" not in _kinds(harness)
        assert readings[0].data["failures"] == 0


def test_a_guard_failing_at_the_start_stops_the_run_before_any_step(harness: Harness) -> None:
    """Read once before the first step: trip_after 1 on a failing guard launches nothing."""
    tmp = harness.tmp
    (tmp / "bad").touch()
    path = harness.write(
        HEAD
        + _guard(tmp, trip_after="1")
        + "steps:\n"
        + _step("one", tmp, "one", "[]").replace("requires: [[]], ", "")
    )
    run_id, outcome = harness.run(path)
    assert outcome.status is RunStatus.HALTED
    assert not (tmp / "fx").exists() and "step_started" not in [k for k, _ in harness.kinds(run_id)]


def test_kill_9_mid_run_then_resume_rearms_the_guards(tmp_path: Path) -> None:
    """A drctl killed with -9 while guarded resumes with its guards read again; each effect once."""
    state = str(tmp_path / "state.db")
    runbook = tmp_path / "rb.yaml"
    runbook.write_text(
        HEAD
        + _guard(tmp_path)
        + "steps:\n"
        + _held_step("one", tmp_path, "one")
        + _step("two", tmp_path, "two", "one")
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", str(runbook), "--state", state],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for("a guard reading", lambda: _journal_has(state, "guard_reading"))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(BOUND)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(BOUND)
    (tmp_path / "release").touch()
    run_id = _last_run(state)
    resumed = run_cli("resume", run_id, "--state", state)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "fx").read_text() == "one\ntwo\n"
    log = run_cli("log", run_id, "--output", "json", "--state", state).stdout
    kinds = [
        line.split('"kind": "')[1].split('"')[0] for line in log.splitlines() if '"kind": "' in line
    ]
    assert kinds.count("guard_reading") >= 2 and kinds.index("run_resumed") < len(kinds) - 1
    assert kinds[kinds.index("run_resumed") :].count("guard_reading") >= 1


def _last_run(state: str) -> str:
    import json

    return str(json.loads(run_cli("runs", "--output", "json", "--state", state).stdout)[0]["id"])


def _journal_has(state: str, kind: str) -> bool:
    import sqlite3

    if not Path(state).exists():
        return False
    try:
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT 1 FROM events WHERE kind = ?", (kind,)).fetchone() is not None
        finally:
            db.close()
    except sqlite3.OperationalError:
        return False


@pytest.mark.parametrize(
    ("guard", "code", "said"),
    [
        ("{id: g, type: shell, with: {command: 'true'}}", "E295", "a guard only reads"),
        (
            "{id: g, type: shell, with: {command: 'true', mutates: false}, trip_after: 0}",
            "E200",
            "trip_after",
        ),
        (
            "{id: g, type: shell, with: {command: 'true', mutates: false}, every: fast}",
            "E200",
            "every",
        ),
        (
            "{id: g, type: shell, with: {command: 'true', mutates: false}, every: 0s}",
            "E200",
            "every",
        ),
        (
            "{id: g, type: shell, with: {command: 'true', mutates: false}, on_trip: explode}",
            "E200",
            "on_trip",
        ),
        (
            "{id: g, type: shell, with: {command: 'true', mutates: false}, requires: [x]}",
            "E201",
            "requires",
        ),
        ("{id: x, type: shell, with: {command: 'true', mutates: false}}", "E220", "duplicate id"),
        (
            "{id: g, type: shell, with: {command: '{{ steps.x.outputs.stdout }}', mutates: false}}",
            "E295",
            "steps' outputs",
        ),
    ],
)
def test_bad_guards_are_positioned_errors(tmp_path: Path, guard: str, code: str, said: str) -> None:
    """Every bad guard field is an error at its file:line:col, exit 2, no traceback."""
    path = tmp_path / "rb.yaml"
    path.write_text(
        HEAD
        + "guards:\n  - "
        + guard
        + "\nsteps:\n  - {id: x, type: shell, with: {command: 'true', mutates: false}}\n"
    )
    done = run_cli("validate", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert f"{path}:5:" in out and code in out and said in out, out
    assert "Traceback" not in out
    with pytest.raises(RunbookInvalid):
        compile_runbook(str(path), ParamInput(()))


def test_a_steps_own_guard_is_read_before_it_starts_and_only_while_it_runs(
    harness: Harness,
) -> None:
    """A step's guard that fails at once keeps the step from starting; other steps ignore it."""
    tmp = harness.tmp
    (tmp / "bad").touch()
    own = (
        f"    guards: [{{id: ready, type: shell, with: {{command: 'test ! -e {tmp}/bad', "
        "mutates: false}, every: 0.05s, trip_after: 1}]\n"
    )
    path = harness.write(
        HEAD
        + "steps:\n"
        + f"  - {{id: first, type: shell, with: {{command: 'echo first >> {tmp}/fx', verify: 'grep -qx first {tmp}/fx'}}}}\n"
        + f"  - id: promote\n    type: shell\n    with: {{command: 'echo promote >> {tmp}/fx', verify: 'grep -qx promote {tmp}/fx'}}\n"
        + own
    )
    run_id, outcome = harness.run(path)
    # The first step ran while the bad file already existed: its guard is not its own.
    assert (outcome.status, outcome.exit_code) == (RunStatus.HALTED, 1), outcome.message
    assert (tmp / "fx").read_text() == "first\n"
    assert ("step_started", "promote") not in harness.kinds(run_id)
    tripped = next(e for e in harness.store.events(run_id) if e.kind == "guard_tripped")
    assert tripped.data["for_step"] == "promote" and tripped.step is None

    (tmp / "bad").unlink()
    assert harness.resume(run_id).status is RunStatus.SUCCEEDED
    assert (tmp / "fx").read_text() == "first\npromote\n"
    plan = compile_runbook(path, ParamInput(()))
    assert [g.step.id for g in plan.step("promote").guards] == ["ready"]


def test_a_guard_halts_a_drill_which_resumes_measured_whole(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards are read during drills too: a trip pauses the drill; resumed, it is measured whole."""
    from drctl.drill import run as drill_run
    from drctl.drill.canary import CanarySpec
    from drctl.engine.executor import Interrupts, Options
    from drctl.engine.runs import find_run, paused_drill
    from tests.unit.test_canary_writer import ListCanary

    tmp = harness.tmp
    (tmp / "bad").touch()
    path = harness.write(
        HEAD + "objectives: {rto: 60s}\n" + _guard(tmp, trip_after="1") + "steps:\n"
        + _step("one", tmp, "one", "[]").replace("requires: [[]], ", "")
    )  # fmt: skip
    canary = ListCanary()
    monkeypatch.setattr(drill_run, "make_canary", lambda spec, drill_id, first_seq=1: canary)
    runner = drill_run.DrillRunner(
        harness.store, lambda plan: [harness.sink], harness.gate, Interrupts(), harness.clock
    )
    paused = runner.drill(path, ParamInput(()), Options(), CanarySpec("list", "list://"))
    assert paused.outcome.status is RunStatus.HALTED and paused.exit_code == 1
    assert paused_drill(harness.store, paused.run_id) is not None
    (tmp / "bad").unlink()
    done = runner.resume_drill(find_run(harness.store, paused.run_id), Options())
    assert done.outcome.status is RunStatus.SUCCEEDED and done.exit_code == 0
    assert (tmp / "fx").read_text() == "one\n"


def test_a_run_without_guards_imports_no_guard_machinery(tmp_path: Path) -> None:
    """The guard thread and its readings are imported only for a runbook that has guards."""
    code, loaded, done = loaded_by_cli(
        ["drctl.engine.guards"], "run", "runbooks/shell-demo.yaml", "--yes",
        "-p", f"workdir={tmp_path / 'work'}", "--state", str(tmp_path / "state.db"),
    )  # fmt: skip
    assert (code, loaded) == (0, set()), done.stdout + done.stderr
