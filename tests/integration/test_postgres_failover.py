"""Whole failovers on a real sandbox (primary + streaming standby), through the real CLI.

Failover, rejoin and fail-back; kill -9 at the promote and the fence and resume; a
lagging standby; an unreachable old primary; and a dry run that must change nothing.
Each test that changes the topology gets a fresh pair (tests/integration/pg_sandbox.py).
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUNBOOKS
from tests.integration.pg_sandbox import (
    Pair,
    answers,
    auto_conf,
    drctl,
    execute,
    explain,
    free_port,
    history_files,
    in_recovery,
    journal,
    lsn_int,
    one,
    query,
    sandbox,  # noqa: F401
    timeline,
    wait_for,
    wait_replayed,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FAILOVER = str(RUNBOOKS / "sandbox-pg-pair-failover.yaml")
#: The rejoined node's application_name: its target name in the runbook, never a step id.
REJOIN_APP = "old_primary"
#: In a clean run of sandbox-pg-failover.yaml, the journal event that is promote's
#: ``step_started`` (run_started, check-lag x2, promote's preflight before the fence, fence
#: x4 — started, read_only and final_lsn recorded, succeeded —, approval + approve x2, then it).
#: test_failover_rejoin_then_failback pins this number against a real journal.
PROMOTE_STARTED_EVENT = 12


def _run(pair: Pair, tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    return drctl(
        "run", FAILOVER, "--params-file", str(pair.params_file), "--yes",
        "--state", str(tmp_path / "state.db"), *extra, env=env,
    )  # fmt: skip


def _seed(dsn: str, table: str, rows: int) -> None:
    execute(
        dsn,
        f"CREATE TABLE {table} (id int PRIMARY KEY, note text)",
        f"INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, {rows}) g",
    )


def _streams_from(standby_dsn: str, primary_dsn: str, app: str, tl: int) -> bool:
    """The standby's WAL receiver streams timeline ``tl`` and the primary lists it by name."""
    receiver = query(standby_dsn, "SELECT status, received_tli FROM pg_stat_wal_receiver")
    listed = one(
        primary_dsn,
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s "
        "AND state = 'streaming'",
        (app,),
    )
    return receiver == [("streaming", tl)] and listed == 1


def _assert_failed_over_once(pair: Pair) -> None:
    """node2 is the primary on timeline 2 (one promotion, not two); node1 streams from it."""
    new, old = pair.node2, pair.node1
    assert not in_recovery(new.dsn), "the standby was not promoted"
    assert timeline(new.dsn) == 2, "expected exactly one timeline switch"
    assert history_files(new.data_dir) == ["00000002.history"], "more than one promotion"
    assert in_recovery(old.dsn), "the old primary did not come back as a standby"
    wait_for(
        "the old primary to stream from the new one",
        lambda: _streams_from(old.dsn, new.dsn, REJOIN_APP, 2),
    )
    assert "default_transaction_read_only" not in auto_conf(old.data_dir)
    assert one(old.dsn, "SHOW default_transaction_read_only") == "off"


def _resolve_db(pair: Pair) -> str:
    """What db.<zone> resolves to at the sandbox's authoritative server."""
    import dns.message
    import dns.query

    info = pair.sandbox.status().dns
    reply = dns.query.tcp(
        dns.message.make_query(info.name, "A"), info.server, port=info.port, timeout=5
    )
    return str(next(iter(reply.answer[0])).address)


def _step_events(events: list[dict[str, Any]], step: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["step"] == step and e["kind"] == kind]


@pytest.mark.integration
def test_failover_rejoin_then_failback(sandbox: Pair, tmp_path: Path) -> None:  # noqa: F811
    """The example runbook fails over, rejoins the old primary, and fails back with no data lost."""
    pair = sandbox
    _seed(pair.node1.dsn, "before_failover", 100)
    wait_replayed(pair.node1.dsn, pair.node2.dsn)

    first = _run(pair, tmp_path)
    assert first.returncode == 0, explain(first)
    _assert_failed_over_once(pair)
    assert one(pair.node2.dsn, "SELECT count(*) FROM before_failover") == 100
    assert one(pair.node2.dsn, "SELECT count(*) FROM drctl_probe WHERE step = 'probe'") == 1
    # The name clients use now points at the new primary, and the probe wrote through it.
    assert _resolve_db(pair) == pair.node2.dsn.split("host=")[1].split()[0]
    probe = _step_events(journal(tmp_path / "state.db"), "probe", "step_succeeded")
    assert probe[0]["data"]["outputs"]["address"] == _resolve_db(pair)
    rejoin = _step_events(journal(tmp_path / "state.db"), "rejoin-old-primary", "step_succeeded")
    assert rejoin
    assert "Accepted publickey" in (pair.root / "ssh" / "sshd.log").read_text()

    events = journal(tmp_path / "state.db")
    kinds = [(e["kind"], e["step"]) for e in events]
    assert kinds.index(("step_started", "promote")) + 1 == PROMOTE_STARTED_EVENT
    assert len(_step_events(events, "promote", "step_started")) == 1

    # Writes on the new primary reach the rejoined node.
    _seed(pair.node2.dsn, "after_failover", 50)
    wait_replayed(pair.node2.dsn, pair.node1.dsn)
    assert one(pair.node1.dsn, "SELECT count(*) FROM after_failover") == 50

    back = drctl(
        "run", FAILOVER, "--params-file", str(pair.write_failback_params(tmp_path / "back.yaml")),
        "--yes", "--state", str(tmp_path / "state.db"),
    )  # fmt: skip
    assert back.returncode == 0, explain(back)
    assert not in_recovery(pair.node1.dsn)
    assert timeline(pair.node1.dsn) == 3
    assert in_recovery(pair.node2.dsn)
    wait_for(
        "node2 to stream from node1 after the fail-back",
        lambda: _streams_from(pair.node2.dsn, pair.node1.dsn, REJOIN_APP, 3),
    )
    assert "default_transaction_read_only" not in auto_conf(pair.node2.data_dir)
    assert one(pair.node1.dsn, "SELECT count(*) FROM before_failover") == 100
    assert one(pair.node1.dsn, "SELECT count(*) FROM after_failover") == 50
    execute(pair.node1.dsn, "INSERT INTO after_failover VALUES (51, 'after fail-back')")
    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    assert one(pair.node2.dsn, "SELECT note FROM after_failover WHERE id = 51") == "after fail-back"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("fault", "killed_step"),
    [
        ("after-apply:promote", "promote"),
        ("after-apply:fence-old-primary", "fence-old-primary"),
        (f"event:{PROMOTE_STARTED_EVENT}", "promote"),
    ],
    ids=["after-promote-apply", "after-fence-apply", "at-promote-started"],
)
def test_kill_9_then_resume_promotes_once(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
    fault: str,
    killed_step: str,
) -> None:
    """A drctl killed -9 in the fence or the promote resumes to one promotion and the right topology."""
    pair = sandbox
    killed = _run(pair, tmp_path, env={"DRCTL_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL, explain(killed)

    before = journal(tmp_path / "state.db")
    assert before[-1]["step"] == killed_step, before[-1]
    if fault.startswith("event:"):
        assert before[-1]["kind"] == "step_started", before[-1]
    assert not _step_events(before, killed_step, "step_succeeded")
    # Where the world stands at the kill: the promotion happened only after promote's apply.
    if fault == "after-apply:promote":
        assert not in_recovery(pair.node2.dsn)
    else:
        assert in_recovery(pair.node2.dsn)
    if fault == "after-apply:fence-old-primary":
        assert "default_transaction_read_only = 'on'" in auto_conf(pair.node1.data_dir)

    resumed = drctl("resume", "--last", "--yes", "--state", str(tmp_path / "state.db"))
    assert resumed.returncode == 0, explain(resumed)
    _assert_failed_over_once(pair)

    events = journal(tmp_path / "state.db")
    assert events[-1]["kind"] == "run_finished"
    assert events[-1]["data"]["status"] == "succeeded"
    done = _step_events(events, killed_step, "step_succeeded")
    assert len(done) == 1
    if fault.startswith("after-apply:"):
        # The effect was in place: resume proved it with verify and did not apply again.
        assert done[0]["data"].get("verified_on_resume") is True
        assert len(_step_events(events, killed_step, "step_started")) == 1
        assert "verified on resume" in resumed.stdout
    else:
        # Killed before anything happened: verify said "not in effect", so it ran again.
        assert "not in effect; applying again" in resumed.stdout
        assert not done[0]["data"].get("verified_on_resume")
        assert [e["attempt"] for e in _step_events(events, "promote", "step_started")] == [1, 2]


_LAG_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: {name}}}
targets:
  old_primary: {old}
  standby: {standby}
settings: {{step_timeout: 60s}}
steps:
{steps}
"""


def _write(tmp_path: Path, name: str, steps: str, old: str, standby: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(_LAG_RUNBOOK.format(name=name, old=old, standby=standby, steps=steps))
    return str(path)


def _run_file(path: str, tmp_path: Path, *extra: str) -> Any:
    return drctl("run", path, "--yes", "--state", str(tmp_path / "state.db"), *extra)


@pytest.mark.integration
def test_paused_replay_is_not_lag_the_promotion_replays_it(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A standby that received everything but replayed none of it is not behind (Vitess's count): promoted at max_lag_bytes 0, it keeps every row, and both figures are said."""
    pair = sandbox
    old, standby = pair.target_yaml(pair.node1), pair.target_yaml(pair.node2)
    execute(pair.node2.dsn, "SELECT pg_wal_replay_pause()")
    wait_for(
        "replay to pause on the standby",
        lambda: one(pair.node2.dsn, "SELECT pg_get_wal_replay_pause_state()") == "paused",
    )
    replayed = lsn_int(one(pair.node2.dsn, "SELECT pg_last_wal_replay_lsn()::text"))
    execute(
        pair.node1.dsn,
        "CREATE TABLE lagging AS SELECT g AS id, repeat('x', 1000) AS pad "
        "FROM generate_series(1, 4000) g",
    )
    written = lsn_int(one(pair.node1.dsn, "SELECT pg_current_wal_lsn()::text"))
    assert written - replayed > 4_000_000
    wait_for(
        "the standby to receive (not replay) the new WAL",
        lambda: lsn_int(one(pair.node2.dsn, "SELECT pg_last_wal_receive_lsn()::text")) >= written,
    )
    assert lsn_int(one(pair.node2.dsn, "SELECT pg_last_wal_replay_lsn()::text")) == replayed

    runbook = _write(
        tmp_path,
        "paused",
        "  - {id: fence, type: postgres.fence, target: old_primary, with: {mode: read_only}}\n"
        "  - id: promote\n    type: postgres.promote\n    target: standby\n"
        "    with: {old_primary: old_primary, max_lag_bytes: 0, catchup_seconds: 1}\n"
        "    acknowledge: [DR002]\n",
        old,
        standby,
    )
    done = _run_file(runbook, tmp_path)
    assert done.returncode == 0, explain(done)
    said = re.search(
        r"promote: preflight before any fence: .* 0 bytes not received, (\d+) received and "
        r"not yet replayed \(not lost\)",
        done.stdout,
    )
    assert said and int(said.group(1)) >= written - replayed - 65536, explain(done)
    assert "replay was paused: resumed" in done.stdout
    assert not in_recovery(pair.node2.dsn)
    assert one(pair.node2.dsn, "SELECT count(*) FROM lagging") == 4000  # nothing lost
    assert timeline(pair.node2.dsn) == 2


@pytest.mark.integration
def test_unreachable_old_primary_fence_stop_fails_and_promote_needs_force(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An old primary that neither answers nor has its data directory here cannot be fenced or proven fenced."""
    pair = sandbox
    nobody = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=2"
    assert not answers(nobody)
    standby = pair.target_yaml(pair.node2)
    # The old primary's host is gone: its DSN does not answer, its data directory is not here.
    gone = pair.target_yaml(pair.node1, dsn=nobody, data_dir=str(tmp_path / "elsewhere" / "node1"))
    remote = pair.target_yaml(pair.node1, dsn=nobody, data_dir=None)

    fence = _write(
        tmp_path,
        "fence-stop",
        "  - {id: fence, type: postgres.fence, target: old_primary, with: {mode: stop}}\n",
        gone,
        standby,
    )
    fenced = _run_file(fence, tmp_path)
    assert fenced.returncode == 1, explain(fenced)
    assert "fence" in fenced.stderr
    assert "cannot tell whether the server" in fenced.stderr, explain(fenced)
    assert "elsewhere/node1" in fenced.stderr
    assert "internal error" not in fenced.stderr + fenced.stdout
    assert "Traceback" not in fenced.stderr

    promote = (
        "  - id: promote\n    type: postgres.promote\n    target: standby\n"
        "    with: {{old_primary: old_primary{extra}}}\n    acknowledge: [DR001, DR002]\n"
    )
    for name, old in (("promote-gone", gone), ("promote-remote", remote)):
        refused = _run_file(
            _write(tmp_path, name, promote.format(extra=""), old, standby), tmp_path
        )
        assert refused.returncode == 1, explain(refused)
        assert "does not answer, so it cannot be shown to be fenced" in refused.stderr, name
        assert in_recovery(pair.node2.dsn), f"{name}: promoted without proof of a fence"

    forced = _run_file(
        _write(tmp_path, "promote-forced", promote.format(extra=", force: true"), gone, standby),
        tmp_path,
    )
    assert forced.returncode == 0, explain(forced)
    assert "force is set" in forced.stdout
    assert not in_recovery(pair.node2.dsn)
    assert timeline(pair.node2.dsn) == 2


def _snapshot(pair: Pair) -> dict[str, Any]:
    """Everything a dry run must not touch: roles, settings, data, config files, replication."""
    snap: dict[str, Any] = {}
    for node in (pair.node1, pair.node2):
        snap[node.name] = {
            "in_recovery": in_recovery(node.dsn),
            "read_only": one(node.dsn, "SHOW default_transaction_read_only"),
            "rows": one(node.dsn, "SELECT count(*) FROM dry_run_data"),
            "probe_table": one(node.dsn, "SELECT to_regclass('drctl_probe') IS NOT NULL"),
            "auto_conf": auto_conf(node.data_dir),
            "standby_signal": (Path(node.data_dir) / "standby.signal").exists(),
            "history": history_files(node.data_dir),
            "running": pair.pg_ctl_running(node),
        }
    snap["streaming"] = one(
        pair.node1.dsn, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
    )
    return snap


@pytest.mark.integration
def test_dry_run_changes_nothing(sandbox: Pair, tmp_path: Path) -> None:  # noqa: F811
    """`run --dry-run` of the failover runbook checks every step, exits 0, and leaves both servers as they were."""
    pair = sandbox
    _seed(pair.node1.dsn, "dry_run_data", 25)
    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    before = _snapshot(pair)
    assert before["node1"]["in_recovery"] is False
    assert before["node2"]["in_recovery"] is True

    dry = _run(pair, tmp_path, "--dry-run")
    assert dry.returncode == 0, explain(dry)
    assert "nothing was changed" in dry.stdout + dry.stderr

    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    assert _snapshot(pair) == before
    events = journal(tmp_path / "state.db")
    checked = [e for e in events if e["kind"] == "step_checked"]
    assert [e["step"] for e in checked] == [
        "check-lag", "fence-old-primary", "approve-promote", "promote", "repoint-dns",
        "wait-dns", "probe", "rejoin-old-primary",
    ]  # fmt: skip
    assert all(e["data"]["ok"] for e in checked), checked
    assert not [e for e in events if e["kind"] in ("step_started", "step_recorded")]


@pytest.mark.integration
def test_switchover_runbook_loses_nothing_written_before_the_fence(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """runbooks/pg-switchover.yaml waits for zero lag after the fence, so every committed row survives."""
    pair = sandbox
    _seed(pair.node1.dsn, "before_switchover", 2000)
    result = drctl(
        "run", str(RUNBOOKS / "pg-switchover.yaml"), "--params-file", str(pair.params_file),
        "--yes", "--state", str(tmp_path / "state.db"),
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert not in_recovery(pair.node2.dsn)
    assert timeline(pair.node2.dsn) == 2
    assert one(pair.node2.dsn, "SELECT count(*) FROM before_switchover") == 2000
    wait_for(
        "the old primary to stream from the new one",
        # Named after its target, "primary", as its monitoring knows it (not the step id).
        lambda: _streams_from(pair.node1.dsn, pair.node2.dsn, "primary", 2),
    )
    waited = [
        e
        for e in journal(tmp_path / "state.db")
        if e["step"] == "zero-lag" and e["kind"] == "step_succeeded"
    ]
    assert waited
    assert "polls" in waited[0]["data"]["outputs"]


@pytest.mark.integration
def test_fence_stop_over_ssh_stops_the_server_on_its_host(sandbox: Pair, tmp_path: Path) -> None:  # noqa: F811
    """fence mode stop on a target with an ssh target runs pg_ctl over SSH (strict host key) and the server goes down."""
    pair = sandbox
    params = pair.params()
    runbook = tmp_path / "stop.yaml"
    runbook.write_text(
        f"""apiVersion: drctl/v1
kind: Runbook
metadata: {{name: stop-over-ssh}}
targets:
  host: {{type: ssh, host: 127.0.0.1, port: {params["ssh_port"]}, user: {params["ssh_user"]},
          key_file: {params["ssh_key"]}, known_hosts: {params["ssh_known_hosts"]}}}
  old: {{type: postgres, dsn: "{pair.node1.dsn}", data_dir: {pair.node1.data_dir},
         bin_dir: {pair.bin_dir}, os_user: {pair.os_user}, ssh: host}}
steps:
  - {{id: stop, type: postgres.fence, target: old, with: {{mode: stop}}}}
"""
    )
    result = drctl("run", str(runbook), "--state", str(tmp_path / "state.db"))
    assert result.returncode == 0, explain(result)
    assert not pair.pg_ctl_running(pair.node1)
    log = (pair.root / "ssh" / "sshd.log").read_text()
    assert "Accepted publickey" in log
