"""A drill's windows in the journal: the pause is journaled before anything can fail.

The engine runs for real against SQLite; the canary writes into a list (its writes to
real databases are tested in tests/integration), and its read-back can be made to fail.
"""

from __future__ import annotations

from typing import Any

import pytest

from drctl.compiler.params import ParamInput
from drctl.drill import run as drill_run
from drctl.drill.canary import CanarySpec
from drctl.engine.executor import Interrupts, Options
from drctl.engine.runs import abort, find_run, paused_drill
from drctl.engine.status import RunStatus
from tests.engine.conftest import HEAD, Harness
from tests.unit.test_canary_writer import ListCanary

GATED = (
    HEAD
    + """steps:
  - {id: first, type: shell, with: {command: "true", mutates: false}}
  - {id: gate, type: approve, with: {message: go on?}}
  - {id: last, type: shell, with: {command: "true", mutates: false}}
"""
)


class BrokenReadBack(ListCanary):
    def read_back(self) -> tuple[set[int], str, str]:
        raise RuntimeError("read-back blew up")


def _drill(harness: Harness, path: str, canary: ListCanary) -> Any:
    runner = drill_run.DrillRunner(
        harness.store, lambda plan: [harness.sink], harness.gate, Interrupts(), harness.clock
    )
    return runner.drill(path, ParamInput(()), Options(), CanarySpec("list", "list://"))


def test_a_pause_is_journaled_before_the_read_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drill stopped at its gate whose read-back fails still leaves its window for a resume."""
    canary = BrokenReadBack()
    monkeypatch.setattr(drill_run, "make_canary", lambda spec, drill_id, first_seq=1: canary)
    with pytest.raises(RuntimeError, match="read-back blew up"):
        _drill(harness, harness.write(GATED), canary)
    [record] = harness.store.list_runs()
    assert record.status == RunStatus.WAITING_APPROVAL
    paused = paused_drill(harness.store, record.id)
    assert paused is not None
    assert len(paused.acks.rows) == len(canary.acks()) > 0
    assert paused.next_seq == canary.next_seq
    # Given up: an aborted run is no paused drill any more.
    abort(find_run(harness.store, record.id), "test", harness.store)
    assert paused_drill(harness.store, record.id) is None


def test_a_drill_that_finished_journals_no_pause(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Approved at once, the drill concludes: one drill_measured, no drill_paused, not resumable."""
    canary = ListCanary()
    monkeypatch.setattr(drill_run, "make_canary", lambda spec, drill_id, first_seq=1: canary)
    harness.gate_answers["gate"] = "granted"
    result = _drill(harness, harness.write(GATED), canary)
    assert result.exit_code == 0
    kinds = [k for k, _ in harness.kinds(result.run_id)]
    assert kinds.count("drill_measured") == 1 and "drill_paused" not in kinds
    assert paused_drill(harness.store, result.run_id) is None
