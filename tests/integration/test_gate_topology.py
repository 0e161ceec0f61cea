"""A gate over a real three-node PostgreSQL topology, on a real terminal: the operator sees
each standby's position as the run read it, not the template that reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.terminal import Screen
from tests.integration.pg_sandbox import (
    ThreeNodes,
    one,
    three_nodes,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_promote_gate_shows_each_standbys_position_rendered(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With node2's replay paused behind node3, the promote gate's prompt and live row read
    "node2 is at <its LSN>, node3 at <its LSN>; promote node3?" with the positions the run
    queried, and denying it (exit 4) promotes nothing."""
    topo = three_nodes
    node2, node3 = topo.standbys
    topo.pause_replay(node2)
    topo.write_wal(2000)
    topo.wait_caught_up(node3)
    position = "SELECT pg_last_wal_replay_lsn()::text"
    runbook = tmp_path / "rb.yaml"
    runbook.write_text(
        f"""apiVersion: drctl/v1
kind: Runbook
metadata: {{name: pick-standby}}
params:
  a_name: {{type: str, default: node2}}
  b_name: {{type: str, default: node3}}
targets:
  a: {topo.target_yaml(node2)}
  b: {topo.target_yaml(node3)}
steps:
  - {{id: position-a, type: postgres.sql, target: a, with: {{query: "{position}"}}}}
  - {{id: position-b, type: postgres.sql, target: b, requires: [], with: {{query: "{position}"}}}}
  - id: confirm
    type: approve
    requires: [position-a, position-b]
    with:
      message: "{{{{ params.a_name }}}} is at {{{{ steps['position-a'].outputs.rows[0][0] }}}}, {{{{ params.b_name }}}} at {{{{ steps['position-b'].outputs.rows[0][0] }}}}; promote node3?"
"""
    )
    lsn2, lsn3 = one(node2.dsn, position), one(node3.dsn, position)
    assert lsn2 != lsn3  # node2 is behind: the gate has something to tell
    screen = Screen(tmp_path, "run", str(runbook), "--state", str(tmp_path / "state.db"))
    try:
        seen = screen.wait_for("Approve confirm? [y/N]", timeout=90)
        screen.send("n", "Enter")
        code = screen.exit_code()
    finally:
        screen.close()
    want = f"node2 is at {lsn2}, node3 at {lsn3}; promote node3?"
    prompt = seen.split("Approval needed: confirm", 1)[1]
    assert prompt.count(want) == 1, seen
    assert f"waiting for approval: gate: node2 is at {lsn2}" in seen
    assert "{{" not in seen
    assert code == 4
    assert one(node3.dsn, "SELECT pg_is_in_recovery()") is True
