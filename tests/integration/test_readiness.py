"""``drctl check`` against a real three-node topology: readiness and the drift between checks.

The first check reads a caught-up standby; then its replay is paused and WAL written, so
the second check must report the figure that grew — WAL received and not yet replayed —
and still be ready (received WAL is not lost); the topology is put back afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.pg_sandbox import (  # noqa: F401
    ThreeNodes,
    drctl,
    explain,
    shared_three_nodes,
    wait_for,
)

RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: readiness}}
targets:
  primary: {primary}
  standby: {standby}
steps:
  - id: lag
    type: postgres.replication_lag
    target: standby
    with: {{primary: primary, max_bytes: 0}}
"""


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_second_check_reports_the_lag_that_grew(
    shared_three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Paused replay between two checks: the second names standby_lag_bytes growing, still ready."""
    top = shared_three_nodes
    standby = top.standbys[0]
    runbook = tmp_path / "rb.yaml"
    runbook.write_text(
        RUNBOOK.format(primary=top.target_yaml(top.primary), standby=top.target_yaml(standby))
    )
    state = str(tmp_path / "state.db")
    top.wait_caught_up(standby)
    first = drctl("check", str(runbook), "--state", state, "--format", "json")
    assert first.returncode == 0, explain(first)
    before = json.loads(first.stdout)
    assert before["ready"] and before["previous"] is None
    assert before["readings"][0]["values"]["standby_lag_bytes"] == 0, before
    top.pause_replay(standby)
    try:
        written = top.write_wal(2000)
        wait_for("the standby to receive it", lambda: top.received_lsn(standby) >= written)
        second = drctl("check", str(runbook), "--state", state, "--format", "json")
    finally:
        top.resume_replay(standby)
        top.wait_caught_up(standby)
    assert second.returncode == 0, explain(second)
    after = json.loads(second.stdout)
    assert after["ready"] and after["previous"] == before["run_id"]
    grown = [d for d in after["drift"] if d.startswith("lag: standby_lag_bytes grew from 0 B to")]
    assert grown, after["drift"]
