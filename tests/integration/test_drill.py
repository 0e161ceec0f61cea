"""Drills on a real sandbox: a canary writer through the client path, RTO/RPO, reports, history.

The happy path fails the sandbox over through its DNS name and must lose no acknowledged
write; the lagging-standby drill promotes a standby that stopped replaying while the
canary kept writing to the old primary, so acknowledged writes are lost and the drill
must fail its ``rpo: 0`` objective with exit 1. Pure measurement rules are pinned first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drctl.drill.canary import Ack
from drctl.drill.measure import judge, measure
from drctl.drill.pg_canary import TABLE_SQL
from tests.conftest import RUNBOOKS
from tests.integration.pg_sandbox import (
    Pair,
    drctl,
    execute,
    explain,
    free_port,
    in_recovery,
    one,
    sandbox,  # noqa: F401
    wait_for,
    wait_replayed,
)

FAILOVER = str(RUNBOOKS / "sandbox-pg-pair-failover.yaml")

_LOSSY_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: lossy-promote}}
objectives: {{rto: 60s, rpo: 0}}
targets:
  old_primary: {old}
  standby: {standby}
settings: {{step_timeout: 30s}}
steps:
  - {{id: fence, type: postgres.fence, target: old_primary, with: {{mode: read_only}}}}
  - id: promote
    type: postgres.promote
    target: standby
    with: {{old_primary: old_primary, accept_data_loss: true, catchup_seconds: 1}}
    acknowledge: [DR002]
"""


def _server(params: dict[str, Any], role: str) -> str:
    """What the canary records as the server of a write: the node's ``host:port``."""
    return f"{params[role + '_host']}:{params['pg_port']}"


def _app_dsn(pair: Pair) -> tuple[str, str]:
    """The DSN an application uses (the sandbox's DNS name) and the DNS server to resolve it."""
    params = pair.params()
    zone = str(params["dns_zone"]).rstrip(".")
    dsn = f"host=db.{zone} port={params['pg_port']} dbname=postgres user=postgres"
    return dsn, f"127.0.0.1:{params['dns_port']}"


# -- the measurement rules (no server) ---------------------------------------------------


def test_measure_counts_missing_acks_and_longest_gap() -> None:
    """Acknowledged seqs absent on the new primary are RPO; the longest ack gap is the outage."""
    acks = [Ack(1, 10.0, "a"), Ack(2, 10.5, "a"), Ack(3, 11.0, "a"), Ack(4, 15.0, "b")]
    m = measure(
        acks, {1, 2, 4}, windows=[(9.9, 15.1)], first_mutation_at=10.8,
        new_primary_address="b",
    )  # fmt: skip
    assert (m.missing, m.missing_first_seq, m.missing_span) == (1, 3, 0.0)
    assert m.longest_gap == pytest.approx(4.0)
    assert m.time_to_new_primary == pytest.approx(4.2)
    assert m.rto == pytest.approx(4.2)


def test_judge_fails_rpo_zero_on_any_loss_and_rto_over_objective() -> None:
    """With rpo 0 a single lost write misses the objective; an RTO over the objective misses it too."""
    lost = measure(
        [Ack(1, 1.0, "a"), Ack(2, 1.1, "a")], {1}, windows=[(1.0, 1.2)],
        first_mutation_at=None, new_primary_address="a",
    )  # fmt: skip
    assert not judge(lost, {"rto": 60.0, "rpo": 0.0}).passed
    assert judge(lost, {"rto": 60.0, "rpo": None}).passed
    slow = measure(
        [Ack(1, 1.0, "a"), Ack(2, 9.0, "a")], {1, 2}, windows=[(1.0, 9.0)],
        first_mutation_at=None, new_primary_address="a",
    )  # fmt: skip
    verdict = judge(slow, {"rto": 5.0, "rpo": 0.0})
    assert (verdict.rto_met, verdict.rpo_met, verdict.passed) == (False, True, False)


def test_measure_counts_a_pause_after_a_mutation_as_outage() -> None:
    """A resumed drill wrote in two windows: a pause after the first mutation is a gap (last write before → first after); one before any mutation is not."""
    acks = [Ack(1, 1.0, "a"), Ack(2, 1.5, "a"), Ack(3, 100.0, "b"), Ack(4, 100.2, "b")]
    m = measure(
        acks, {1, 2, 3, 4}, windows=[(0.9, 2.0), (99.5, 100.3)], first_mutation_at=1.2,
        new_primary_address="b",
    )  # fmt: skip
    # The fence had started before the pause: nobody could write from 1.5 to 100.0.
    assert m.longest_gap == pytest.approx(98.5)
    assert (m.gap_from, m.gap_to) == (pytest.approx(1.5), pytest.approx(100.0))
    assert m.time_to_new_primary == pytest.approx(98.8)
    assert m.rto == pytest.approx(98.8)

    # Paused before anything changed: the database was untouched, the pause is no gap.
    early = measure(
        acks, {1, 2, 3, 4}, windows=[(0.9, 2.0), (99.5, 100.3)], first_mutation_at=99.6,
        new_primary_address="b",
    )  # fmt: skip
    assert early.longest_gap == pytest.approx(0.5)
    assert (early.gap_from, early.gap_to) == (pytest.approx(1.0), pytest.approx(1.5))


# -- drills on the sandbox -----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_drill_failover_through_dns_meets_objectives(sandbox: Pair, tmp_path: Path) -> None:  # noqa: F811
    """A drill of the sandbox runbook loses no acknowledged write, exits 0 and is listed by runs --drills."""
    pair = sandbox
    dsn, dns_server = _app_dsn(pair)
    state = str(tmp_path / "state.db")
    report = tmp_path / "drill.md"
    done = drctl(
        "drill", FAILOVER, "--params-file", str(pair.params_file), "--yes", "--state", state,
        "--canary-dsn", dsn, "--canary-dns-server", dns_server, "--report", str(report),
    )  # fmt: skip
    assert done.returncode == 0, explain(done)
    assert not in_recovery(pair.node2.dsn)
    # Server tools run as postgres from "/", not from root's home they cannot enter.
    assert "rejoin-old-primary | pg_rewind: Done!" in done.stderr, explain(done)
    assert "Permission denied" not in done.stderr, explain(done)
    text = report.read_text()
    assert "PASSED: objectives met" in text, text
    assert "| promote | succeeded |" in text, text
    assert "## History" in text
    listed = drctl("runs", "--drills", "--output", "json", "--state", state)
    assert listed.returncode == 0, explain(listed)
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["passed"] and rows[0]["missing"] == 0, rows
    run_id = rows[0]["id"]
    log = drctl("log", run_id, "--output", "json", "--state", state)
    measured = [json.loads(x) for x in log.stdout.splitlines() if '"drill_measured"' in x]
    assert len(measured) == 1, log.stdout
    m = measured[0]["data"]["measurement"]
    assert m["missing"] == 0, m
    # The canary reached the new primary through the name, after the first mutation (how
    # many writes it made meanwhile is the machine's speed, not the drill's behaviour).
    assert m["new_primary_address"] == _server(pair.params(), "standby"), m
    rto = measured[0]["data"]["objectives"]["rto"]
    assert m["time_to_new_primary"] is not None and 0 < m["time_to_new_primary"] <= rto, m
    assert 0 < m["rto"] <= rto, m
    # Every acknowledged write is on the new primary.
    drill_id = measured[0]["data"]["drill_id"]
    assert (
        one(pair.node2.dsn, "SELECT count(*) FROM drctl_canary WHERE drill_id = %s", (drill_id,))
        >= m["acknowledged"]
    )

    # A second drill fails back; its report's history lists both drills, newest first.
    back_report = tmp_path / "back.html"
    back = drctl(
        "drill", FAILOVER, "--params-file", str(pair.write_failback_params(tmp_path / "back.yaml")),
        "--yes", "--state", state, "--canary-dsn", dsn, "--canary-dns-server", dns_server,
        "--report", str(back_report),
    )  # fmt: skip
    assert back.returncode == 0, explain(back)
    assert not in_recovery(pair.node1.dsn)
    page = back_report.read_text()
    assert page.startswith("<!doctype html>") and "class='gantt'" in page
    assert page.index(run_id) > page.index("<h2>History</h2>"), page
    rows = json.loads(drctl("runs", "--drills", "--output", "json", "--state", state).stdout)
    assert [r["passed"] for r in rows] == [True, True] and rows[1]["id"] == run_id, rows


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_drill_with_lagging_standby_loses_writes_and_fails(sandbox: Pair, tmp_path: Path) -> None:  # noqa: F811
    """A standby that stopped receiving and replaying is promoted after the fence: acknowledged writes are lost, exit 1."""
    pair = sandbox
    runbook = tmp_path / "lossy.yaml"
    runbook.write_text(
        _LOSSY_RUNBOOK.format(
            old=pair.target_yaml(pair.node1), standby=pair.target_yaml(pair.node2)
        )
    )
    execute(pair.node1.dsn, TABLE_SQL)
    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    # Pausing replay alone loses nothing: promotion first replays all WAL already received.
    # So the standby also stops streaming, as a standby cut off from its primary would.
    execute(pair.node2.dsn, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")
    wait_for(
        "the standby to stop streaming",
        lambda: one(pair.node2.dsn, "SELECT count(*) FROM pg_stat_wal_receiver") == 0,
    )
    execute(pair.node2.dsn, "SELECT pg_wal_replay_pause()")
    wait_for(
        "replay to pause on the standby",
        lambda: one(pair.node2.dsn, "SELECT pg_get_wal_replay_pause_state()") == "paused",
    )
    state = str(tmp_path / "state.db")
    report = tmp_path / "drill.out"
    done = drctl(
        "drill", str(runbook), "--yes", "--state", state, "--canary-dsn", pair.node1.dsn,
        "--verify-dsn", pair.node2.dsn, "--report", str(report), "--format", "json",
    )  # fmt: skip
    assert done.returncode == 1, explain(done)
    assert "FAILED: objectives missed" in done.stderr, explain(done)
    data = json.loads(report.read_text())
    assert data["run_status"] == "succeeded"
    assert not data["passed"]
    assert data["verdict"]["rpo_met"] is False
    m = data["measurement"]
    # Every write acknowledged by the old primary (all before its fence) is missing.
    assert m["acknowledged"] > 0 and m["missing"] == m["acknowledged"], m
    assert m["missing_first_seq"] == 1 and m["missing_span"] is not None, m
    # The promote journaled the WAL it gave up, and the report says it beside the writes.
    gaps = data["promote_gaps"]
    assert [g["step"] for g in gaps] == ["promote"] and gaps[0]["gap_bytes"] > 0, gaps
    drill_id = data["drill_id"]
    on_old = one(
        pair.node1.dsn, "SELECT count(*) FROM drctl_canary WHERE drill_id = %s", (drill_id,)
    )
    assert on_old >= m["acknowledged"]
    assert not in_recovery(pair.node2.dsn)
    listed = drctl("runs", "--drills", "--state", state)
    assert "fail" in listed.stdout and "lossy-promote" in listed.stdout, explain(listed)
    # The same drill as HTML, rebuilt from the state store: a Gantt bar per step that ran.
    page = _html_report(state, data["run_id"])
    assert page.count("class='bar mutates'") == 2, page
    assert "FAILED: objectives missed" in page and "MISSED" in page


def _html_report(state: str, run_id: str) -> str:
    from drctl.drill.report import build
    from drctl.render.drill import as_html
    from drctl.state.open import open_store, state_spec

    store = open_store(state_spec(state, None))
    try:
        return as_html(build(store, run_id))
    finally:
        store.close()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_drill_stops_at_a_gate_and_resumes_measured(sandbox: Pair, tmp_path: Path) -> None:  # noqa: F811
    """No --yes: the drill stops at its gate (exit 4) without prompting; drill --resume finishes and measures it whole.

    The canary's DSN holds a password (the sandbox trusts, so it is not checked): it is
    in no output, report or journal, so resuming asks for --canary-dsn again.
    """
    pair = sandbox
    dsn, dns_server = _app_dsn(pair)
    dsn += " password=Canary-Secret-7731"
    state = tmp_path / "state.db"
    report = tmp_path / "drill.md"
    done = drctl(
        "drill", FAILOVER, "--params-file", str(pair.params_file), "--state", str(state),
        "--canary-dsn", dsn, "--canary-dns-server", dns_server, "--report", str(report),
    )  # fmt: skip
    assert done.returncode == 4, explain(done)
    assert in_recovery(pair.node2.dsn), "a drill without approval promoted"
    text = report.read_text()
    headline = "PAUSED: the run stopped waiting_approval (exit 4), measured up to the pause"
    assert headline in text, text
    # The summary line on the terminal says what the report says.
    assert f"{headline}; continue the drill with: drctl drill --resume" in done.stderr, explain(
        done
    )
    assert "| promote | pending |" in text, text
    # Stopped after the fence, before the promotion: no new primary to time yet.
    assert "| first mutation → first write on the new primary | - |" in text, text
    run_id = json.loads(drctl("runs", "--output", "json", "--state", str(state)).stdout)[0]["id"]
    assert f"drctl drill --resume {run_id}" in done.stderr, explain(done)

    forgot = drctl("drill", "--resume", run_id, "--yes", "--state", str(state))
    assert forgot.returncode == 2, explain(forgot)
    assert "--canary-dsn" in forgot.stderr and "password" in forgot.stderr, explain(forgot)

    resumed = drctl(
        "drill", "--resume", run_id, "--yes", "--state", str(state), "--canary-dsn", dsn,
        "--report", str(report), "--format", "json",
    )  # fmt: skip
    assert resumed.returncode == 0, explain(resumed)
    assert not in_recovery(pair.node2.dsn)
    data = json.loads(report.read_text())
    assert data["passed"] and not data["paused"] and len(data["windows"]) == 2, data
    m = data["measurement"]
    assert m["missing"] == 0 and m["new_primary_address"] == _server(pair.params(), "standby"), m
    # From the first mutation (before the gate) to the new primary: the wait at the gate counts.
    (_s1, first_end), (second_start, _e2) = data["windows"]
    assert m["time_to_new_primary"] > second_start - first_end, (m, data["windows"])
    # The pause came after the fence: nobody could write through it, so it is in the outage.
    assert m["longest_gap"] > second_start - first_end, (m, data["windows"])
    assert m["rto"] >= m["longest_gap"]
    assert "PASSED: objectives met" in resumed.stderr or "objectives missed" in resumed.stderr
    assert f"RTO {m['rto']:.2f}s" in resumed.stderr, explain(resumed)
    on_new = one(
        pair.node2.dsn, "SELECT count(*) FROM drctl_canary WHERE drill_id = %s", (data["drill_id"],)
    )
    assert on_new >= m["acknowledged"]
    assert "Resumed: the canary wrote in 2 windows" in _html_report(str(state), run_id)
    journal = drctl("log", run_id, "--output", "json", "--state", str(state))
    shown = done.stdout + done.stderr + forgot.stderr + resumed.stdout + resumed.stderr
    for text in (shown, report.read_text(), journal.stdout, state.read_bytes().decode("latin-1")):
        assert "Canary-Secret-7731" not in text


def test_drill_refuses_to_start_when_the_canary_cannot_write(tmp_path: Path) -> None:
    """A canary DSN nobody answers on fails the drill with exit 2 before any run starts."""
    nobody = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres"
    state = str(tmp_path / "state.db")
    done = drctl(
        "drill", str(RUNBOOKS / "shell-demo.yaml"), "--yes", "--state", state,
        "--canary-dsn", nobody,
    )  # fmt: skip
    assert done.returncode == 2, explain(done)
    assert "canary" in done.stderr and "cannot create drctl_canary" in done.stderr, explain(done)
    assert drctl("runs", "--state", state).stdout == "no runs\n"
    assert drctl("runs", "--drills", "--state", state).stdout == "no drills\n"
