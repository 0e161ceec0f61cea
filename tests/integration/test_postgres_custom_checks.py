"""A failover on a three-node topology with no shell: a custom lag query as the lag check, postgres.exec, promote."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.pg_sandbox import (
    ThreeNodes,
    drctl,
    explain,
    in_recovery,
    journal,
    three_nodes,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.mark.integration
def test_custom_lag_query_and_exec_carry_a_three_node_failover(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A postgres.sql lag query with roles: [lag_check] satisfies DR002, postgres.exec checkpoints, node3 is promoted."""
    topo = three_nodes
    n1, _n2, n3 = topo.nodes
    runbook = tmp_path / "failover.yaml"
    lag_query = (
        "SELECT coalesce(bool_and(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) <= 16777216),"
        " false) FROM pg_stat_replication WHERE application_name = 'node3'"
    )
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: three-node-custom}\n"
        f"targets:\n  old: {topo.target_yaml(n1)}\n  candidate: {topo.target_yaml(n3)}\n"
        "settings: {step_timeout: 60s}\n"
        "steps:\n"
        "  - id: node3-caught-up\n    type: postgres.sql\n    target: old\n"
        f'    with: {{query: "{lag_query}", expect: true, roles: [lag_check]}}\n'
        "  - id: checkpoint\n    type: postgres.exec\n    target: old\n"
        "    with: {sql: CHECKPOINT, verify: 'SELECT true'}\n"
        "  - {id: fence, type: postgres.fence, target: old, with: {mode: read_only}}\n"
        "  - {id: promote, type: postgres.promote, target: candidate, with: {old_primary: old}}\n"
        "  - {id: probe, type: postgres.write_probe, target: candidate}\n"
    )
    state = tmp_path / "state.db"
    checked = drctl("validate", str(runbook))
    assert checked.returncode == 0, explain(checked)  # DR002 is satisfied by the custom query
    done = drctl("run", str(runbook), "--yes", "--state", str(state))
    assert done.returncode == 0, explain(done)
    assert not in_recovery(n3.dsn) and in_recovery(topo.nodes[1].dsn)
    succeeded = [e["step"] for e in journal(state) if e["kind"] == "step_succeeded"]
    assert succeeded == ["node3-caught-up", "checkpoint", "fence", "promote", "probe"], succeeded
