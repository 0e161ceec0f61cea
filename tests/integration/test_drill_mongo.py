"""Drills with the MongoDB canary, against a replica set played over the wire by mockupdb.

The canary is pymongo writing ``w: majority, j: true`` through the set's URI, as an
application would; the mock keeps each member's documents apart, so what the new
primary holds after a failover is what was really replicated to it. A planned failover
loses nothing; a regional disaster forced onto members the writes never reached loses
every write acknowledged before it, and a drill with ``rpo: 0`` fails. A drill stopped at
its gate is continued by ``drctl drill --resume`` and measured as one drill.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_cli
from tests.integration.mongo_fixtures import (
    MockReplicaSet,
    mock_rs,  # noqa: F401
    mock_rs5,  # noqa: F401
    mockup_servers,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PLANNED = "runbooks/mongo-planned-failover.yaml"
DISASTER = "runbooks/mongo-regional-disaster.yaml"
CANARY_NS = "drctl.drctl_canary"


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _journal(state: Path, run_id: str) -> list[dict[str, Any]]:
    log = run_cli("log", run_id, "--output", "json", "--state", str(state))
    assert log.returncode == 0, _explain(log)
    return [json.loads(line) for line in log.stdout.splitlines() if line.strip()]


def test_planned_failover_drill_loses_nothing(mock_rs: MockReplicaSet, tmp_path: Path) -> None:  # noqa: F811
    """The canary follows the election to the new primary; every acknowledged write is there; exit 0."""
    a, b, c = mock_rs.hosts
    state = tmp_path / "state.db"
    report = tmp_path / "drill.json"
    done = run_cli(
        "drill", PLANNED, "-p", f"new_primary={c}", "-p", f"hold={b}", "--yes",
        "--state", str(state), "--canary", "mongo", "--canary-dsn", mock_rs.uri(),
        "--report", str(report),
        env={"MONGO_URI": mock_rs.uri()}, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, _explain(done)
    assert mock_rs.primary == c
    data = json.loads(report.read_text())
    assert data["passed"] and data["canary"]["kind"] == "mongo", data
    m = data["measurement"]
    assert m["missing"] == 0, m
    # Writes were confirmed first by the old primary, then by the new one, named exactly.
    # (How many there were is the machine's speed, not the drill's behaviour.)
    assert m["new_primary_address"] == c, m
    assert m["time_to_new_primary"] is not None and 0 < m["time_to_new_primary"] < 60, m
    answered: dict[str, list[int]] = {}
    for host, namespace, doc in mock_rs.acknowledged:
        if namespace == CANARY_NS and doc["drill_id"] == data["drill_id"]:
            answered.setdefault(host, []).append(doc["seq"])
    assert set(answered) == {a, c} and max(answered[a]) < min(answered[c]), answered
    assert m["acknowledged"] <= len(answered[a]) + len(answered[c]), (m, answered)
    # Every write acknowledged, as the canary counted them and as the servers answered
    # them, is on the new primary, with majority.
    held = mock_rs.holds(c, CANARY_NS)
    seqs = {d["seq"] for d in held.values() if d["drill_id"] == data["drill_id"]}
    assert len(seqs) >= m["acknowledged"]
    assert {*answered[a], *answered[c]} <= seqs, (answered, seqs)
    inserts = [doc for _host, doc in mock_rs.sent("insert") if doc["insert"] == "drctl_canary"]
    assert inserts and all(
        doc["writeConcern"].get("w") == "majority" and doc["writeConcern"].get("j") is True
        for doc in inserts
    ), inserts[0]
    assert {host for host, doc in mock_rs.sent("insert") if doc["insert"] == "drctl_canary"} >= {
        a,
        c,
    }


def test_regional_disaster_drill_loses_acknowledged_writes(
    mock_rs5: MockReplicaSet,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Writes acknowledged by the lost region's majority never reached the survivors: RPO > 0, exit 1."""
    a, b, c, d, e = mock_rs5.hosts
    # The other region is behind (a slow link): majority writes are acknowledged by a, b, c.
    mock_rs5.set_lag(d, 30)
    mock_rs5.set_lag(e, 30)

    def region_lost() -> None:
        mock_rs5.down(a, b, c)
        # With the link gone the survivors replicate from each other again.
        mock_rs5.member(d).lag = mock_rs5.member(e).lag = 0.0

    # The region goes right after the canary's first write was acknowledged: before the
    # runbook starts, which finds the survivors without a primary.
    mock_rs5.on_next("insert", region_lost)
    runbook = tmp_path / "disaster.yaml"
    runbook.write_text(
        (REPO / DISASTER)
        .read_text(encoding="utf-8")
        .replace("objectives: {rto: 5m}", "objectives: {rto: 5m, rpo: 0}"),
        encoding="utf-8",
    )
    state = tmp_path / "state.db"
    report = tmp_path / "drill.json"
    done = run_cli(
        "drill", str(runbook), "-p", f"survivor={d}", "-p", f"lost={a},{b},{c}", "--yes",
        "--state", str(state), "--canary", "mongo", "--canary-dsn", mock_rs5.uri(),
        "--report", str(report),
        env={"MONGO_SURVIVORS_URI": mock_rs5.uri([d, e])}, timeout=90,
    )  # fmt: skip
    assert done.returncode == 1, _explain(done)
    assert "FAILED: objectives missed" in done.stderr, _explain(done)
    data = json.loads(report.read_text())
    assert data["run_status"] == "succeeded" and not data["passed"], data
    assert data["verdict"]["rpo_met"] is False
    m = data["measurement"]
    assert m["missing"] > 0 and m["missing_first_seq"] == 1, m
    assert m["new_primary_address"] in (d, e), m
    # After the reconfig the canary's writes land on the survivors again: they are kept.
    assert m["acknowledged"] > m["missing"], m
    # The lost writes were real: the old primary holds every one of them.
    lost_region = {doc["seq"] for doc in mock_rs5.holds(a, CANARY_NS).values()}
    survivors = {doc["seq"] for doc in mock_rs5.holds(m["new_primary_address"], CANARY_NS).values()}
    assert len(lost_region - survivors) == m["missing"], (lost_region, survivors)


def _stop_at_the_gate(
    rs: MockReplicaSet, state: Path, runbook: str = PLANNED
) -> tuple[str, dict[str, Any], subprocess.CompletedProcess[str]]:
    """A planned-failover drill without --yes: it stops at its gate (exit 4)."""
    _a, b, c = rs.hosts
    stopped = run_cli(
        "drill", runbook, "-p", f"new_primary={c}", "-p", f"hold={b}", "--state", str(state),
        "--canary", "mongo", "--canary-dsn", rs.uri(), "--format", "json",
        env={"MONGO_URI": rs.uri()}, timeout=90,
    )  # fmt: skip
    assert stopped.returncode == 4, _explain(stopped)
    report = json.loads(stopped.stdout)
    return str(report["run_id"]), report, stopped


def test_drill_stopped_at_its_gate_resumes_and_is_measured_whole(
    mock_rs: MockReplicaSet,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Exit 4 at the gate; plain resume is refused; drill --resume finishes it with the canary writing again."""
    _a, b, c = mock_rs.hosts
    state = tmp_path / "state.db"
    env = {"MONGO_URI": mock_rs.uri()}
    run_id, first, stopped = _stop_at_the_gate(mock_rs, state)
    assert f"drctl drill --resume {run_id}" in stopped.stderr, _explain(stopped)
    assert first["paused"] is True and first["measurement"]["acknowledged"] > 0, first

    plain = run_cli("resume", run_id, "--yes", "--state", str(state), env=env)
    assert plain.returncode == 2, _explain(plain)
    assert f"drctl drill --resume {run_id}" in plain.stderr, _explain(plain)
    assert mock_rs.sent("replSetStepDown") == []

    mixed = run_cli("drill", PLANNED, "--resume", run_id, "--state", str(state), env=env)
    assert mixed.returncode == 2 and "FILE" in mixed.stderr, _explain(mixed)
    fresh = run_cli(
        "drill", PLANNED, "-p", f"new_primary={c}", "-p", f"hold={b}", "--yes",
        "--state", str(state), "--canary", "mongo", "--canary-dsn", mock_rs.uri(),
        env=env, timeout=90,
    )  # fmt: skip
    assert fresh.returncode == 3, _explain(fresh)
    assert f"drctl drill --resume {run_id}" in fresh.stderr, _explain(fresh)

    resumed = run_cli(
        "drill", "--resume", run_id, "--yes", "--state", str(state), "--format", "json",
        env=env, timeout=90,
    )  # fmt: skip
    assert resumed.returncode == 0, _explain(resumed)
    assert mock_rs.primary == c
    whole = json.loads(resumed.stdout)
    assert whole["run_id"] == run_id and whole["drill_id"] == first["drill_id"]
    assert whole["passed"] and whole["paused"] is False, whole
    assert len(whole["windows"]) == 2, whole["windows"]
    m = whole["measurement"]
    assert m["missing"] == 0 and m["acknowledged"] > first["measurement"]["acknowledged"], m
    # Sequence numbers go on where the first window stopped: none is written twice.
    events = _journal(state, run_id)
    [pause] = [e["data"] for e in events if e["kind"] == "drill_paused"]
    held = {
        d["seq"] for d in mock_rs.holds(c, CANARY_NS).values() if d["drill_id"] == whole["drill_id"]
    }
    assert pause["next_seq"] in held and max(held) > pause["next_seq"], (pause, held)
    assert mock_rs.duplicate_inserts == 0
    assert len(held) >= m["acknowledged"]
    # The pause between the windows is not a write gap (nobody wrote then).
    (_s1, e1), (s2, _e2) = whole["windows"]
    assert m["gap_to"] <= e1 or m["gap_from"] >= s2, (m, whole["windows"])
    kinds = [e["kind"] for e in events]
    assert kinds.count("drill_paused") == 1 and kinds.count("drill_measured") == 2, kinds
    listed = json.loads(
        run_cli("runs", "--drills", "--output", "json", "--state", str(state)).stdout
    )
    assert len(listed) == 1 and listed[0]["passed"], listed

    again = run_cli("drill", "--resume", run_id, "--yes", "--state", str(state), env=env)
    assert again.returncode == 2 and "not a paused drill" in again.stderr, _explain(again)


def test_mongo_canary_flags_are_checked(tmp_path: Path) -> None:
    """A DNS server with the mongo canary, a missing DSN or FILE: exit 2 naming the flag."""
    state = str(tmp_path / "s.db")
    shell = str(REPO / "runbooks" / "shell-demo.yaml")
    dns = run_cli(
        "drill", shell, "--yes", "--state", state, "--canary", "mongo",
        "--canary-dsn", "mongodb://127.0.0.1:1", "--canary-dns-server", "127.0.0.1:53",
    )  # fmt: skip
    assert dns.returncode == 2 and "--canary-dns-server" in dns.stderr, _explain(dns)
    no_dsn = run_cli("drill", shell, "--yes", "--state", state)
    assert no_dsn.returncode == 2 and "--canary-dsn" in no_dsn.stderr, _explain(no_dsn)
    nothing = run_cli("drill", "--yes", "--state", state)
    assert nothing.returncode == 2 and "--resume" in nothing.stderr, _explain(nothing)
    empty = run_cli("drill", shell, "--yes", "--state", state, "--canary-dsn", " ")
    assert empty.returncode == 2 and "--canary-dsn is empty" in empty.stderr, _explain(empty)
    stray = run_cli(
        "drill", shell, "--state", state, "--canary-dsn", "mongodb://127.0.0.1:1",
        "--canary", "mongo", "--reapply", "x", "--allow-changed-plan",
    )  # fmt: skip
    assert stray.returncode == 2, _explain(stray)
    assert "--reapply, --allow-changed-plan only mean something with --resume" in stray.stderr
    shown = dns.stderr + no_dsn.stderr + nothing.stderr + empty.stderr + stray.stderr
    assert "Traceback" not in shown


def test_mongo_canary_that_cannot_write_refuses_the_drill(tmp_path: Path) -> None:
    """A URI nobody answers on: exit 2 before any run starts, the URI's password never shown."""
    from tests.integration.pg_sandbox import free_port

    state = str(tmp_path / "s.db")
    uri = f"mongodb://drill:hunter2-canary@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300"
    done = run_cli(
        "drill", str(REPO / "runbooks" / "shell-demo.yaml"), "--yes", "--state", state,
        "--canary", "mongo", "--canary-dsn", uri, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, _explain(done)
    assert "no write acknowledged" in done.stderr, _explain(done)
    assert "hunter2-canary" not in done.stdout + done.stderr
    assert run_cli("runs", "--state", state).stdout == "no runs\n"


def test_a_resumed_drill_must_keep_its_dsn_and_plan(
    mock_rs: MockReplicaSet,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Another DSN or a changed runbook refuses the drill's resume before its canary writes;
    --allow-changed-plan with --yes shows the diff and goes on."""
    _a, _b, c = mock_rs.hosts
    runbook = tmp_path / "planned.yaml"
    runbook.write_text((REPO / PLANNED).read_text(encoding="utf-8"), encoding="utf-8")
    state = tmp_path / "state.db"
    env = {"MONGO_URI": mock_rs.uri()}
    run_id, _report, _stopped = _stop_at_the_gate(mock_rs, state, str(runbook))
    writes = len(mock_rs.sent("insert"))

    other = run_cli(
        "drill", "--resume", run_id, "--yes", "--state", str(state),
        "--canary-dsn", mock_rs.uri([c]), env=env,
    )  # fmt: skip
    assert other.returncode == 2 and "not the one the drill started with" in other.stderr, _explain(
        other
    )
    via_dns = run_cli(
        "drill", "--resume", run_id, "--yes", "--state", str(state),
        "--canary-dns-server", "127.0.0.1:53", env=env,
    )  # fmt: skip
    assert via_dns.returncode == 2, _explain(via_dns)
    assert "--canary-dns-server is not the one" in via_dns.stderr, _explain(via_dns)
    runbook.write_text(
        runbook.read_text(encoding="utf-8").replace("step_timeout: 2m", "step_timeout: 3m"),
        encoding="utf-8",
    )
    changed = run_cli("drill", "--resume", run_id, "--yes", "--state", str(state), env=env)
    # Resume refused (exit 1, as for drctl resume): the plan is checked before the canary starts.
    assert changed.returncode == 1 and "runbook changed" in changed.stderr, _explain(changed)
    assert len(mock_rs.sent("insert")) == writes  # refused before the canary wrote again

    allowed = run_cli(
        "drill", "--resume", run_id, "--yes", "--allow-changed-plan", "--state", str(state),
        "--format", "json", env=env, timeout=90,
    )  # fmt: skip
    assert allowed.returncode == 0, _explain(allowed)
    assert "step_timeout" in allowed.stderr  # the plan's diff, kept off the report
    whole = json.loads(allowed.stdout)
    assert whole["passed"] and len(whole["windows"]) == 2, whole


def test_a_drill_resumed_unmeasured_cannot_be_measured_whole(
    mock_rs: MockReplicaSet,  # noqa: F811
    tmp_path: Path,
) -> None:
    """After `drctl resume --unmeasured` the drill went on without its canary: drill --resume refuses."""
    _a, _b, c = mock_rs.hosts
    state = tmp_path / "state.db"
    env = {"MONGO_URI": mock_rs.uri()}
    run_id, _report, _stopped = _stop_at_the_gate(mock_rs, state)
    unmeasured = run_cli(
        "resume", run_id, "--unmeasured", "--yes", "--state", str(state), env=env, timeout=90
    )
    assert unmeasured.returncode == 0, _explain(unmeasured)
    assert mock_rs.primary == c
    late = run_cli("drill", "--resume", run_id, "--yes", "--state", str(state), env=env)
    assert late.returncode == 2 and "without its canary" in late.stderr, _explain(late)
