"""Resume's escape hatches on real servers: a lifted fence is named with every way out and
--reapply re-fences; --mark-done of a promote killed mid-way is refused while verify says no."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.pg_sandbox import (
    Pair,
    ThreeNodes,
    drctl,
    execute,
    explain,
    in_recovery,
    journal,
    run_id_of,
    sandbox,  # noqa: F401
    three_nodes,  # noqa: F401
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


_KILLED_PROMOTE = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: killed-promote}}
targets:
  old_primary: {old}
  standby: {standby}
steps:
  - id: promote
    type: postgres.promote
    target: standby
    with: {{old_primary: old_primary, force: true, catchup_seconds: 120}}
    acknowledge: [DR001, DR002]
  - id: repoint
    type: shell
    with: {{command: "touch {tmp}/repointed", verify: "test -f {tmp}/repointed"}}
"""


@pytest.mark.integration
def test_mark_done_of_a_promote_killed_mid_way_is_refused_while_verify_says_no(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A promote killed before it took effect cannot be marked done on a bare --mark-done: verify says the standby is still in recovery, and nothing after it runs."""
    topo = three_nodes
    standby = topo.standbys[0]
    topo.pause_replay(standby)  # the promote waits for a lag that cannot drain
    topo.write_wal(200)
    path = tmp_path / "killed.yaml"
    path.write_text(
        _KILLED_PROMOTE.format(
            old=topo.target_yaml(topo.primary), standby=topo.target_yaml(standby), tmp=tmp_path
        )
    )
    state = ["--state", str(tmp_path / "state.db")]
    run = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", str(path), *state],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        assert run.stdout is not None
        seen, deadline = "", time.monotonic() + 60
        while "promote: started" not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"the promote never started:\n{seen}"
            if select.select([run.stdout], [], [], left)[0]:
                line = run.stdout.readline()
                assert line, f"the run ended first:\n{seen}"
                seen += line
    finally:
        run.kill()
        run.wait(timeout=30)
        if run.stdout is not None:
            run.stdout.close()
    run_id = run_id_of(subprocess.CompletedProcess([], 0, seen, ""))
    topo.resume_replay(standby)

    refused = drctl("resume", run_id, "--mark-done", "promote", *state)
    assert refused.returncode == 1, explain(refused)
    assert "promote: --mark-done: verify says it is NOT in effect" in refused.stdout, explain(
        refused
    )
    assert "--reason" in refused.stderr
    assert in_recovery(standby.dsn)
    assert not (tmp_path / "repointed").exists(), "a step after the promote ran"
