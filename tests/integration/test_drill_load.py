"""Drills under a pgbench load, and drills that count what a rewind discarded against RPO.

A real pair is failed over with the hard fence while pgbench clients write beside the
canary through the same DNS name: the report gives RTO and RPO under that load and the
load's own figures. A lossy drill whose old primary is rewound with ``accept_discard``
reports that its RPO includes the discarded bytes. Bad values of the new flag and field
exit 2 without a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from drctl.drill.pg_canary import TABLE_SQL
from tests.conftest import RUNBOOKS
from tests.integration.pg_sandbox import (
    Pair,
    drctl,
    execute,
    explain,
    in_recovery,
    one,
    sandbox,  # noqa: F401
    wait_for,
    wait_replayed,
)

FAILOVER = RUNBOOKS / "sandbox-pg-pair-failover.yaml"


def hard_fence_runbook(path: Path) -> Path:
    """The sandbox runbook with the hard fence instead of the read-only one."""
    text = FAILOVER.read_text()
    fenced = text.replace("with: {mode: read_only}", "with: {mode: hard}", 1)
    assert fenced != text
    path.write_text(fenced)
    return path


def _app_dsn(pair: Pair) -> tuple[str, str]:
    params = pair.params()
    zone = str(params["dns_zone"]).rstrip(".")
    dsn = f"host=db.{zone} port={params['pg_port']} dbname=postgres user=postgres"
    return dsn, f"127.0.0.1:{params['dns_port']}"


def _pgbench_processes(port: int) -> list[str]:
    """pgbench processes on this machine connecting to ``port`` (the drill must leave none)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pgbench") and f"port={port}".encode() in b" ".join(argv):
            found.append(pid)
    return found


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_drill_under_pgbench_load_reports_rto_rpo_and_the_load(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """drill --pgbench-clients 4 with the hard fence: no acknowledged write lost, RTO measured, pgbench's figures in the report, no pgbench left."""
    pair = sandbox
    dsn, dns_server = _app_dsn(pair)
    state = str(tmp_path / "state.db")
    report = tmp_path / "drill.json"
    done = drctl(
        "drill", str(hard_fence_runbook(tmp_path / "hard.yaml")), "--params-file",
        str(pair.params_file), "--yes", "--state", state, "--canary-dsn", dsn,
        "--canary-dns-server", dns_server, "--pgbench-clients", "4", "--report", str(report),
    )  # fmt: skip
    assert done.returncode == 0, explain(done)
    assert not in_recovery(pair.node2.dsn)
    data = json.loads(report.read_text())
    m, load = data["measurement"], data["load"]
    assert data["passed"] and m["missing"] == 0 and m["discarded_bytes"] == 0, data
    assert 0 < m["rto"] <= data["objectives"]["rto"], m
    assert load["clients"] == 4 and load["transactions"] > 0 and load["failed"] == 0, load
    assert load["runs"] >= 1 and load["seconds"] > 0, load
    # The fence cut pgbench's sessions on the old primary; it came back on the new one.
    assert load["aborted"] >= 1 and load["runs"] >= 2, load
    assert "; load: pgbench 4 clients for" in done.stderr, explain(done)
    # Its tables live in a schema of their own, on the new primary now.
    assert one(pair.node2.dsn, "SELECT count(*) FROM drctl_pgbench.pgbench_branches") == 1
    assert (
        one(
            pair.node2.dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'drctl_pgbench%%'",
        )
        == 0
    )
    assert _pgbench_processes(int(pair.params()["pg_port"])) == []
    md = drctl("drill", "--help")  # the flag is documented where operators look
    assert "--pgbench-clients" in md.stdout


_LOSSY_REJOIN = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: lossy-rejoin}}
objectives: {{rto: 60s, rpo: 0}}
targets:
  old_primary: {old}
  standby: {standby}
settings: {{step_timeout: 60s}}
steps:
  - {{id: fence, type: postgres.fence, target: old_primary, with: {{mode: stop}}}}
  - id: promote
    type: postgres.promote
    target: standby
    with: {{old_primary: old_primary, accept_data_loss: true, catchup_seconds: 1}}
    acknowledge: [DR002]
  - {{id: rejoin, type: postgres.rejoin, target: old_primary, with: {{new_primary: standby, accept_discard: true}}}}
"""


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_drill_counts_a_rewind_that_discarded_writes_against_rpo(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A standby cut off while the canary wrote is promoted; the old primary's rewind discards those writes and the report says the RPO includes them."""
    pair = sandbox
    runbook = tmp_path / "lossy.yaml"
    runbook.write_text(
        _LOSSY_REJOIN.format(old=pair.target_yaml(pair.node1), standby=pair.target_yaml(pair.node2))
    )
    execute(pair.node1.dsn, TABLE_SQL)
    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    execute(pair.node2.dsn, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")
    wait_for(
        "the standby to stop streaming",
        lambda: one(pair.node2.dsn, "SELECT count(*) FROM pg_stat_wal_receiver") == 0,
    )
    state = str(tmp_path / "state.db")
    report = tmp_path / "drill.json"
    done = drctl(
        "drill", str(runbook), "--yes", "--state", state, "--canary-dsn", pair.node1.dsn,
        "--verify-dsn", pair.node2.dsn, "--report", str(report),
    )  # fmt: skip
    assert done.returncode == 1, explain(done)
    data = json.loads(report.read_text())
    assert data["run_status"] == "succeeded" and data["verdict"]["rpo_met"] is False, data
    m = data["measurement"]
    log = drctl("log", data["run_id"], "--output", "json", "--state", state)
    rejoined = [
        json.loads(line)
        for line in log.stdout.splitlines()
        if '"step_succeeded"' in line and '"rejoin"' in line
    ]
    outputs = rejoined[0]["data"]["outputs"]
    assert outputs["discarded_bytes"] > 0 and outputs["discarded_commits"] >= m["missing"] > 0
    assert (m["discarded_bytes"], m["discarded_commits"]) == (
        outputs["discarded_bytes"], outputs["discarded_commits"],
    )  # fmt: skip
    from drctl.drill.report import build
    from drctl.render.drill import as_markdown
    from drctl.state.open import open_store, state_spec

    store = open_store(state_spec(state, None))
    try:
        text = as_markdown(build(store, data["run_id"]))
    finally:
        store.close()
    assert f"the RPO includes {m['discarded_bytes']} discarded bytes of WAL" in text, text
    assert f"includes {m['discarded_bytes']} discarded bytes of WAL" in done.stderr, explain(done)


# -- bad input: exit 2, a clear message, no traceback ------------------------------------


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--pgbench-clients", "0"], "--pgbench-clients"),
        (["--pgbench-clients", "many"], "--pgbench-clients"),
        (["--pgbench-clients", "4", "--canary", "mongo"], "--canary postgres only"),
    ],
)
def test_bad_pgbench_flags_exit_2(tmp_path: Path, extra: list[str], says: str) -> None:
    """A zero, non-numeric or mongo-canary --pgbench-clients is refused with exit 2 before anything runs."""
    done = drctl(
        "drill", str(RUNBOOKS / "shell-demo.yaml"), "--yes", "--state", str(tmp_path / "s.db"),
        "--canary-dsn", "host=127.0.0.1 port=1 dbname=postgres", *extra,
    )  # fmt: skip
    assert done.returncode == 2, explain(done)
    assert says in done.stderr and "Traceback" not in done.stderr, explain(done)


def test_pgbench_clients_with_resume_exits_2(tmp_path: Path) -> None:
    """--pgbench-clients with --resume is refused (exit 2): a resumed drill runs no load."""
    done = drctl(
        "drill", "--resume", "x", "--pgbench-clients", "2", "--state", str(tmp_path / "s.db")
    )
    assert done.returncode == 2, explain(done)
    assert "--pgbench-clients cannot be given with --resume" in done.stderr, explain(done)


@pytest.mark.parametrize("step", ["postgres.rejoin", "postgres.follow"])
def test_bad_accept_discard_is_a_compile_error(tmp_path: Path, step: str) -> None:
    """accept_discard: maybe fails validation with exit 2, naming the field and its line."""
    runbook = tmp_path / "bad.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: bad}\n"
        "targets:\n  a: {type: postgres, dsn: 'host=a'}\n  b: {type: postgres, dsn: 'host=b'}\n"
        f"steps:\n  - id: s\n    type: {step}\n    target: a\n"
        "    with:\n      new_primary: b\n      accept_discard: maybe\n"
    )
    done = drctl("validate", str(runbook))
    assert done.returncode == 2, explain(done)
    said = done.stdout + done.stderr
    assert (
        "bad.yaml:13:23: error" in said
        and "with.accept_discard: input should be a valid boolean" in said
    ), explain(done)
    assert "Traceback" not in said
