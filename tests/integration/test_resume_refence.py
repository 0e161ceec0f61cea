"""A fence journaled as succeeded and lifted since: the refusal names every way out, and --reapply works."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.pg_sandbox import (
    Pair,
    drctl,
    execute,
    explain,
    in_recovery,
    journal,
    run_id_of,
    sandbox,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: refence}}
targets:
  old_primary: {old}
  standby: {standby}
settings: {{step_timeout: 30s}}
steps:
  - {{id: lag, type: postgres.replication_lag, target: standby, with: {{primary: old_primary}}}}
  - {{id: fence, type: postgres.fence, target: old_primary, with: {{mode: read_only}}}}
  - id: promote
    type: postgres.promote
    target: standby
    approve: true
    with: {{old_primary: old_primary, catchup_seconds: 2}}
"""


@pytest.mark.integration
def test_a_lifted_fence_is_named_with_every_way_out_and_reapply_fences_again(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """When a succeeded fence was lifted by someone else, the refused promote names --reapply and abort, and --reapply fence re-fences, then promotes."""
    pair = sandbox
    path = tmp_path / "refence.yaml"
    path.write_text(
        _RUNBOOK.format(old=pair.target_yaml(pair.node1), standby=pair.target_yaml(pair.node2))
    )
    state = ["--state", str(tmp_path / "state.db")]
    gated = drctl("run", str(path), *state)
    assert gated.returncode == 4, explain(gated)
    run_id = run_id_of(gated)

    # Someone lifts the fence while the run waits at its gate.
    rw = pair.node1.dsn + " options='-c default_transaction_read_only=off'"
    execute(rw, "ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()")
    execute(rw, "CREATE TABLE lifted (id int)")

    refused = drctl("resume", run_id, "--yes", *state)
    assert refused.returncode == 1, explain(refused)
    assert "fence step fence succeeded earlier in this run" in refused.stderr, explain(refused)
    assert f"drctl resume {run_id} --reapply fence" in refused.stderr
    assert f"drctl abort {run_id}" in refused.stderr
    assert in_recovery(pair.node2.dsn), "promoted beside a primary that takes writes"

    again = drctl("resume", run_id, "--yes", "--reapply", "fence", *state)
    assert again.returncode == 0, explain(again)
    assert not in_recovery(pair.node2.dsn)
    fences = [e for e in journal(tmp_path / "state.db", run_id) if e["step"] == "fence"]
    assert [e["kind"] for e in fences if e["kind"] in ("step_started", "step_succeeded")] == [
        "step_started",
        "step_succeeded",
        "step_started",
        "step_succeeded",
    ]
