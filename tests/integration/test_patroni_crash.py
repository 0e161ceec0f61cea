"""kill -9 of drctl in the middle of a Patroni switchover, then resume: verify decides."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.patroni_cluster import PASSWORD, USER, PatroniCluster
from tests.integration.pg_sandbox import drctl, explain, journal

pytestmark = [pytest.mark.integration, pytest.mark.crash]

#: Where drctl dies: right after the switchover journaled Patroni's answer (by its record,
#: not by an event count, which notes and warnings would shift).
KILL_AT = "record:switchover:patroni_answer"


def _runbook(path: Path, cluster: PatroniCluster, candidate: str) -> Path:
    members = json.dumps([n.api_url for n in cluster.nodes])
    path.write_text(f"""apiVersion: drctl/v1
kind: Runbook
metadata: {{name: patroni-crash}}
targets:
  cluster: {{type: patroni, members: {members}, username: {USER}, password: "${{env:PATRONI_PASSWORD}}"}}
steps:
  - {{id: lag, type: patroni.status, target: cluster, with: {{max_lag_bytes: 16777216}}}}
  - {{id: switchover, type: patroni.switchover, target: cluster, with: {{candidate: {candidate}}}}}
""")
    return path


def test_killed_mid_switchover_resume_verifies_instead_of_switching_again(tmp_path: Path) -> None:
    """drctl killed after Patroni answered the switchover resumes by verify: one switchover, no second."""
    with PatroniCluster.running() as cluster:
        runbook = _runbook(tmp_path / "crash.yaml", cluster, "pg2")
        state = tmp_path / "state.db"
        env = {"PATRONI_PASSWORD": PASSWORD}
        killed = drctl("run", str(runbook), "--yes", "--state", str(state),
                       env={**env, "DRCTL_FAULT": KILL_AT})  # fmt: skip
        assert killed.returncode == -9, explain(killed)
        events: list[dict[str, Any]] = journal(state)
        last = events[-1]
        kinds = [(e["step"], e["kind"]) for e in events]
        assert (last["step"], last["kind"]) == ("switchover", "step_recorded"), kinds
        assert "patroni_answer" in json.dumps(last["data"])
        resumed = drctl("resume", "--last", "--yes", "--state", str(state), env=env)
        assert resumed.returncode == 0, explain(resumed)
        cluster.wait_healthy("pg2")
        after = journal(state)
        starts = [e for e in after if e["step"] == "switchover" and e["kind"] == "step_started"]
        assert len(starts) == 1, "resume must verify, not ask Patroni for a second switchover"
        assert any(e["step"] == "switchover" and e["kind"] == "step_succeeded" for e in after)
        # Patroni lists the timeline switch once its loop has seen it: wait, bounded.
        deadline = time.monotonic() + 60
        history = cluster.node("pg2").get("/history")
        while not history and time.monotonic() < deadline:
            time.sleep(0.5)
            history = cluster.node("pg2").get("/history")
        assert isinstance(history, list) and len(history) == 1, history
