"""The Patroni runbooks and the coordination rules, through the real CLI on real clusters.

runbooks/patroni-switchover.yaml and runbooks/patroni-manual-failover.yaml run end to
end; a managed server's promote is refused at run time while Patroni is active; the
basic-auth password appears nowhere in the output, the journal or the plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUNBOOKS
from tests.integration.patroni_cluster import (
    PASSWORD,
    USER,
    PatroniCluster,
    shared_patroni,  # noqa: F401
)
from tests.integration.pg_sandbox import drctl, execute, explain, in_recovery, journal, one

pytestmark = pytest.mark.integration


def _params(path: Path, **values: Any) -> Path:
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return path


def _env() -> dict[str, str]:
    return {"PATRONI_PASSWORD": PASSWORD}


def _no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


def test_switchover_runbook_moves_the_leader_and_never_shows_the_password(
    shared_patroni: PatroniCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """patroni-switchover.yaml hands the leader to the candidate; the password is in no output."""
    cluster = shared_patroni
    cluster.wait_healthy()
    leader = cluster.leader()
    assert leader is not None
    candidate = next(n.name for n in cluster.nodes if n.name != leader)
    execute(cluster.node(leader).dsn, "CREATE TABLE IF NOT EXISTS kept (n int)",
            "INSERT INTO kept SELECT generate_series(1, 500)")  # fmt: skip
    params = _params(
        tmp_path / "params.yaml", patroni_members=[cluster.nodes[0].api_url], patroni_user=USER,
        leader=leader, candidate=candidate, replicas=2,
    )  # fmt: skip
    state = tmp_path / "state.db"
    plan = drctl("plan", str(RUNBOOKS / "patroni-switchover.yaml"), "--params-file", str(params),
                 "--format", "json", env=_env())  # fmt: skip
    assert plan.returncode == 0, explain(plan)
    result = drctl("run", str(RUNBOOKS / "patroni-switchover.yaml"), "--params-file", str(params),
                   "--yes", "--state", str(state), env=_env())  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert cluster.leader() == candidate
    assert not in_recovery(cluster.node(candidate).dsn)
    assert one(cluster.node(candidate).dsn, "SELECT count(*) FROM kept") == 500
    events = journal(state)
    done = [e for e in events if e["step"] == "switchover" and e["kind"] == "step_succeeded"]
    assert done and done[0]["data"]["outputs"]["leader"] == candidate
    _no_password(plan.stdout, result.stdout, result.stderr, json.dumps(events))
    cluster.wait_healthy(candidate)


def test_a_managed_servers_promote_is_refused_while_patroni_is_active(
    shared_patroni: PatroniCluster,  # noqa: F811
    tmp_path: Path,
    write_runbook: Any,
) -> None:
    """postgres.promote on a target managed_by an unpaused cluster fails at run time, promoting nothing."""
    cluster = shared_patroni
    cluster.wait_healthy()
    leader = cluster.leader()
    replica = next(n for n in cluster.nodes if n.name != leader)
    target = json.dumps(cluster.postgres_target(replica))
    runbook = write_runbook(f"""
        apiVersion: drctl/v1
        kind: Runbook
        metadata: {{name: behind-patronis-back}}
        acknowledge: [DR001, DR002, DR006]
        targets:
          cluster: {{type: patroni, members: {json.dumps([cluster.nodes[0].api_url])},
                     username: {USER}, password: "${{env:PATRONI_PASSWORD}}"}}
          replica: {target}
        steps:
          - {{id: promote, type: postgres.promote, target: replica, with: {{force: true, accept_data_loss: true}}}}
        """)
    result = drctl("run", runbook, "--yes", "--state", str(tmp_path / "state.db"), env=_env())
    assert result.returncode == 1, explain(result)
    assert (
        "refusing to promote it: this server is managed by Patroni (cluster)"
        in result.stdout + result.stderr
    )
    assert "not paused" in result.stdout + result.stderr
    assert in_recovery(replica.dsn)
    assert cluster.leader() == leader
    _no_password(result.stdout, result.stderr)


def test_manual_failover_runbook_pauses_fails_over_and_hands_back_to_patroni(
    tmp_path: Path,
) -> None:
    """patroni-manual-failover.yaml promotes pg2 with Patroni paused; after resume Patroni leads with pg2."""
    with PatroniCluster.running() as cluster:
        old, new, other = cluster.node("pg1"), cluster.node("pg2"), cluster.node("pg3")
        execute(
            old.dsn, "CREATE TABLE kept (n int)", "INSERT INTO kept SELECT generate_series(1, 300)"
        )
        params = _params(
            tmp_path / "params.yaml",
            patroni_members=[n.api_url for n in cluster.nodes], patroni_user=USER,
            old_member="pg1", old_dsn=old.dsn, old_data=str(old.data_dir),
            new_member="pg2", new_dsn=new.dsn,
            other_member="pg3", other_dsn=other.dsn, other_data=str(other.data_dir),
            pg_bin=cluster.bin_dir, os_user=cluster.os_user,
        )  # fmt: skip
        state = tmp_path / "state.db"
        result = drctl("run", str(RUNBOOKS / "patroni-manual-failover.yaml"), "--params-file",
                       str(params), "--yes", "--state", str(state), env=_env())  # fmt: skip
        assert result.returncode == 0, explain(result) + cluster.tail(new)
        assert cluster.leader() == "pg2"
        assert one(new.dsn, "SELECT count(*) FROM kept") == 300
        assert not (cluster.cluster() or {}).get("pause")
        cluster.wait_healthy("pg2")
        assert in_recovery(old.dsn)
        events = journal(state)
        _no_password(result.stdout, result.stderr, json.dumps(events))
        succeeded = {e["step"] for e in events if e["kind"] == "step_succeeded"}
        # The choice showed Patroni's view of each managed candidate beside drctl's.
        chose = next(e for e in events if e["kind"] == "step_succeeded" and e["step"] == "choose")
        rows = {r["name"]: r for r in chose["data"]["outputs"]["table"]}
        assert rows["candidate"]["patroni"]["member"] == "pg2", rows
        assert rows["candidate"]["patroni"]["objections"] == [], rows
        assert "Patroni has no objection" in rows["candidate"]["reason"], rows
        assert "patroni: replica streaming lag" in result.stdout, explain(result)
        assert {
            "choose",
            "pause",
            "fence-old-primary",
            "promote",
            "follow",
            "resume",
            "post-check",
        } <= succeeded
