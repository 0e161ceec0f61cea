"""Each PostgreSQL step type's check/apply/verify/undo against a real sandbox pair.

Step types are called directly with a real-clock context (pg_sandbox.RealContext);
the fence's undo is also driven once through the CLI's rollback. Tests on the
module's shared pair put back what they change (the stop fence runs last); promote
and rejoin, which change the topology for good, get a pair of their own.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drctl.errors import StepError
from drctl.providers.postgres.fence import Fence, FenceInputs
from drctl.providers.postgres.lag import LagInputs, ReplicationLag
from drctl.providers.postgres.probe import ProbeInputs, WriteProbe
from drctl.providers.postgres.promote import Promote, PromoteInputs
from drctl.providers.postgres.rejoin import Rejoin, RejoinInputs
from drctl.providers.postgres.sql import Sql, SqlInputs
from drctl.steps.base import StepInputs
from tests.integration.pg_sandbox import (
    Pair,
    RealContext,
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
    shared_sandbox,  # noqa: F401
    timeline,
    wait_for,
    wait_replayed,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

READ_ONLY_LINE = "default_transaction_read_only = 'on'"


def _ctx(
    inputs: StepInputs,
    target: dict[str, Any],
    targets: dict[str, dict[str, Any]] | None = None,
    **kw: Any,
) -> RealContext:
    return RealContext(inputs, target=target, targets=targets or {}, timeout=60.0, **kw)


def _nobody() -> dict[str, Any]:
    dsn = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=2"
    assert not answers(dsn)
    return {"type": "postgres", "dsn": dsn}


def _fresh_session_writes(dsn: str) -> bool:
    """Whether a new session can write (a temp table), as a client would find out."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("CREATE TEMP TABLE fence_check (x int)")
        return True
    except psycopg.errors.ReadOnlySqlTransaction:
        return False


def _unfence(pair: Pair) -> None:
    """Put node1 back to a running, writable primary whatever a failed test left behind."""
    if not pair.pg_ctl_running(pair.node1):
        pair.start(pair.node1)
    execute(
        pair.node1.dsn,
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
    )
    wait_for("node1 to take writes again", lambda: _fresh_session_writes(pair.node1.dsn))


# -- postgres.replication_lag -------------------------------------------------------------


@pytest.mark.integration
def test_replication_lag_publishes_its_figures(shared_sandbox: Pair) -> None:  # noqa: F811
    """On a caught-up standby the lag step passes and publishes lag_bytes, lag_seconds and the LSNs."""
    pair = shared_sandbox
    execute(pair.node1.dsn, "CREATE TABLE lag_seed AS SELECT 1 AS x")
    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    targets = {"old": pair.target(pair.node1), "gone": _nobody()}

    ctx = _ctx(LagInputs(primary="old", max_bytes=65536), pair.target(pair.node2), targets)
    assert re.fullmatch(r"measure a lag of \d+ bytes, [\d.]+s", ReplicationLag().check(ctx) or "")
    ReplicationLag().apply(ctx)
    out = ctx.outputs
    assert set(out) == {
        "lag_bytes", "standby_lag_bytes", "lag_seconds", "receive_lsn", "replay_lsn",
        "primary_lsn", "primary_position", "primary_reachable", "not_received_bytes",
        "wal_seen",
    }  # fmt: skip
    assert 0 <= out["lag_bytes"] < 65536
    assert out["lag_seconds"] >= 0
    assert out["primary_reachable"] is True
    assert out["primary_position"] == "known"
    assert lsn_int(out["primary_lsn"]) >= lsn_int(out["replay_lsn"]) > 0
    assert "measured on primary and standby" in ctx.lines[-1]

    # Without a primary: measured on the standby alone, by design.
    alone = _ctx(LagInputs(max_bytes=65536), pair.target(pair.node2), targets)
    ReplicationLag().apply(alone)
    assert alone.outputs["primary_position"] == "not_asked"
    assert alone.outputs["primary_lsn"] is None
    assert "standby only" in alone.lines[-1]

    # With one that does not answer: its position is unknown, and that fails unless warned.
    gone = LagInputs(primary="gone", max_bytes=65536)
    with pytest.raises(StepError, match="primary's WAL position is unknown"):
        ReplicationLag().apply(_ctx(gone, pair.target(pair.node2), targets))
    warned = _ctx(
        gone.model_copy(update={"primary_unreachable": "warn"}), pair.target(pair.node2), targets
    )
    ReplicationLag().apply(warned)
    assert warned.outputs["primary_position"] == "unknown"
    assert warned.outputs["lag_bytes"] is None
    assert warned.lines[-1].startswith("warning: the primary's WAL position is unknown")

    with pytest.raises(StepError, match="not in recovery"):
        ReplicationLag().apply(_ctx(LagInputs(), pair.target(pair.node1)))


@pytest.mark.integration
def test_replication_lag_fails_above_its_limits(shared_sandbox: Pair) -> None:  # noqa: F811
    """With replay paused, WAL received but not replayed is not lag against the primary (it is not lost), but fails max_bytes on the standby alone and max_seconds."""
    pair = shared_sandbox
    standby, targets = pair.target(pair.node2), {"old": pair.target(pair.node1)}
    execute(pair.node1.dsn, "CREATE TABLE lag_before AS SELECT 1 AS x")
    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    execute(pair.node2.dsn, "SELECT pg_wal_replay_pause()")
    try:
        wait_for(
            "replay to pause",
            lambda: one(pair.node2.dsn, "SELECT pg_get_wal_replay_pause_state()") == "paused",
        )
        execute(
            pair.node1.dsn,
            "CREATE TABLE lag_behind AS SELECT g, repeat('y', 500) AS pad "
            "FROM generate_series(1, 4000) g",
        )
        written = lsn_int(one(pair.node1.dsn, "SELECT pg_current_wal_lsn()::text"))
        wait_for(
            "the standby to receive the WAL",
            lambda: (
                lsn_int(one(pair.node2.dsn, "SELECT pg_last_wal_receive_lsn()::text")) >= written
            ),
        )
        time.sleep(0.1)  # so the replay delay is measurably above zero

        # Counted as Vitess counts it: received, not replayed, is not lost.
        ctx = _ctx(LagInputs(primary="old", max_bytes=65536), standby, targets)
        ReplicationLag().apply(ctx)
        assert ctx.outputs["lag_bytes"] == ctx.outputs["not_received_bytes"] < 65536
        assert ctx.outputs["standby_lag_bytes"] > 1_000_000
        assert ctx.outputs["receive_lsn"] != ctx.outputs["replay_lsn"]
        assert ctx.outputs["wal_seen"] == {"old": ctx.outputs["primary_lsn"]}

        # Measured on the standby alone the received-but-not-replayed WAL still counts.
        alone = _ctx(LagInputs(max_bytes=1024), standby)
        with pytest.raises(StepError, match=r"bytes behind \(received, not replayed; limit 1024\)"):
            ReplicationLag().apply(alone)

        slow = _ctx(LagInputs(max_seconds=0), standby)
        with pytest.raises(StepError, match=r"replay is [\d.]+s behind \(limit 0s\)"):
            ReplicationLag().apply(slow)
        assert slow.outputs["lag_seconds"] > 0
    finally:
        execute(pair.node2.dsn, "SELECT pg_wal_replay_resume()")
    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    ok = _ctx(LagInputs(primary="old", max_bytes=65536), standby, targets)
    ReplicationLag().apply(ok)
    assert ok.outputs["lag_bytes"] < 65536


# -- postgres.sql -----------------------------------------------------------------------


@pytest.mark.integration
def test_sql_compares_results_and_cannot_write(shared_sandbox: Pair) -> None:  # noqa: F811
    """A matching expect passes and publishes rows; a mismatch fails; a write fails in the read-only session."""
    pair = shared_sandbox
    node = pair.target(pair.node1)
    execute(
        pair.node1.dsn,
        "CREATE TABLE sql_data (id int PRIMARY KEY, note text)",
        "INSERT INTO sql_data VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    )

    count = _ctx(SqlInputs(query="SELECT count(*) FROM sql_data", expect=3), node)
    Sql().apply(count)
    assert count.outputs["rows"] == [[3]]
    whole = [[1, "a"], [2, "b"], [3, "c"]]
    rows = _ctx(SqlInputs(query="SELECT id, note FROM sql_data ORDER BY id", expect=whole), node)
    Sql().apply(rows)
    assert rows.outputs["rows"] == whole
    # On the standby too (it is read-only anyway).
    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    Sql().apply(
        _ctx(SqlInputs(query="SELECT pg_is_in_recovery()", expect=True), pair.target(pair.node2))
    )

    with pytest.raises(StepError, match=r"query returned 3, expected 4"):
        Sql().apply(_ctx(SqlInputs(query="SELECT count(*) FROM sql_data", expect=4), node))
    with pytest.raises(StepError, match="query returned"):
        Sql().apply(
            _ctx(
                SqlInputs(query="SELECT id, note FROM sql_data ORDER BY id", expect=whole[:2]), node
            )
        )

    for write in (
        "INSERT INTO sql_data VALUES (4, 'd') RETURNING id",
        "CREATE TABLE sql_made (x int)",
        "UPDATE sql_data SET note = 'z' RETURNING id",
    ):
        with pytest.raises(StepError, match="read-only transaction"):
            Sql().apply(_ctx(SqlInputs(query=write), node))
    assert query(pair.node1.dsn, "SELECT id, note FROM sql_data ORDER BY id") == [
        (1, "a"), (2, "b"), (3, "c"),
    ]  # fmt: skip
    assert one(pair.node1.dsn, "SELECT to_regclass('sql_made')") is None


# -- postgres.write_probe -----------------------------------------------------------------


@pytest.mark.integration
def test_write_probe_writes_on_a_primary_and_gives_up_on_a_standby(shared_sandbox: Pair) -> None:  # noqa: F811
    """The probe writes a row and reads it back on the primary; on a standby it fails after its deadline."""
    pair = shared_sandbox
    ctx = _ctx(ProbeInputs(deadline=10, interval=0.2), pair.target(pair.node1), step_id="probe-1")
    WriteProbe().apply(ctx)
    assert ctx.outputs["attempts"] == 1
    assert ctx.outputs["latency_ms"] > 0
    assert one(pair.node1.dsn, "SELECT count(*) FROM drctl_probe WHERE step = 'probe-1'") == 1

    started = time.monotonic()
    with pytest.raises(StepError, match=r"no successful write after (\d+) tries") as failed:
        WriteProbe().apply(_ctx(ProbeInputs(deadline=2.0, interval=0.25), pair.target(pair.node2)))
    took = time.monotonic() - started
    # Until its 2 s deadline, not the step's 60 s (generous for a loaded machine).
    assert 1.7 <= took < 20.0
    # It tried again (one try per 0.25 s at most; how many fit in 2 s is the machine's speed).
    tries = re.search(r"after (\d+) tries", str(failed.value))
    assert tries and 2 <= int(tries.group(1)) <= 9, str(failed.value)
    assert "read-only" in str(failed.value)


# -- postgres.fence -----------------------------------------------------------------------


@pytest.mark.integration
def test_fence_read_only_check_apply_verify_undo(shared_sandbox: Pair) -> None:  # noqa: F811
    """read_only: fresh sessions cannot write and old ones are ended; undo lifts it and cleans postgresql.auto.conf."""
    pair = shared_sandbox
    node = pair.target(pair.node1)
    inputs = FenceInputs(mode="read_only")
    # Nothing more to say than the plan's description (which names the target): None.
    # What the servers say is shown in a dry run (a run's apply asks them anew).
    assert Fence().check(_ctx(inputs, node, dry_run=True)) is None
    assert "do nothing: the server is a standby and takes no writes already" in (
        Fence().check(_ctx(inputs, pair.target(pair.node2), dry_run=True)) or ""
    )
    assert "does not answer" in (Fence().check(_ctx(inputs, _nobody(), dry_run=True)) or "")
    assert Fence().verify(_ctx(inputs, node)) is False  # an unfenced primary takes writes

    old_session = psycopg.connect(pair.node1.dsn, autocommit=True, connect_timeout=5)
    try:
        ctx = _ctx(inputs, node)
        Fence().apply(ctx)
        assert ctx.recorded == {"read_only": True, "final_lsn": ctx.outputs["final_lsn"]}
        assert ctx.outputs["fenced"] is True
        assert ctx.outputs["mode"] == "read_only"
        assert ctx.outputs["sessions_ended"] >= 1
        assert READ_ONLY_LINE in auto_conf(pair.node1.data_dir)
        assert one(pair.node1.dsn, "SHOW default_transaction_read_only") == "on"
        assert _fresh_session_writes(pair.node1.dsn) is False
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            execute(pair.node1.dsn, "CREATE TABLE fenced_write (x int)")
        with pytest.raises(psycopg.OperationalError):
            old_session.execute("SELECT 1")  # the session opened before the fence was ended
        assert Fence().verify(_ctx(inputs, node)) is True

        Fence().undo(_ctx(inputs, node, recorded=ctx.recorded))
        assert "default_transaction_read_only" not in auto_conf(pair.node1.data_dir)
        wait_for("the fence to lift", lambda: _fresh_session_writes(pair.node1.dsn), timeout=10)
        assert Fence().verify(_ctx(inputs, node)) is False
        assert pair.pg_ctl_running(pair.node1)
    finally:
        old_session.close()
        _unfence(pair)


@pytest.mark.integration
def test_fence_undo_through_a_cli_rollback(shared_sandbox: Pair, tmp_path: Path) -> None:  # noqa: F811
    """A run that fences and then fails with on_failure: rollback undoes the fence from the journal."""
    pair = shared_sandbox
    fields = ", ".join(f'{k}: "{v}"' for k, v in pair.target(pair.node1).items())
    runbook = tmp_path / "fence-rollback.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: fence-rollback}\n"
        f"targets:\n  old_primary: {{{fields}}}\n"
        "settings: {step_timeout: 60s}\n"
        "steps:\n"
        "  - {id: fence, type: postgres.fence, target: old_primary, with: {mode: read_only}}\n"
        "  - id: fail\n    type: shell\n    with: {command: 'false'}\n"
        "    on_failure: rollback\n    acknowledge: [DR004]\n"
    )
    try:
        done = drctl("run", str(runbook), "--yes", "--state", str(tmp_path / "state.db"))
        assert done.returncode == 1, explain(done)
        assert "rolled back" in done.stderr
        kinds = [(e["kind"], e["step"]) for e in journal(tmp_path / "state.db")]
        assert ("step_succeeded", "fence") in kinds
        assert ("undo_succeeded", "fence") in kinds
        assert "default_transaction_read_only" not in auto_conf(pair.node1.data_dir)
        wait_for("the fence to lift", lambda: _fresh_session_writes(pair.node1.dsn), timeout=10)
    finally:
        _unfence(pair)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["stop", "read_only_then_stop"])
def test_fence_stop_check_apply_verify_undo(shared_sandbox: Pair, mode: str) -> None:  # noqa: F811
    """stop modes shut the server down with pg_ctl on its data_dir; undo starts it again, writable."""
    pair = shared_sandbox
    node = pair.target(pair.node1)
    inputs = FenceInputs(mode=mode)  # type: ignore[arg-type]
    assert Fence().check(_ctx(inputs, node)) is None  # the plan's description is shown
    no_dir = {k: v for k, v in node.items() if k != "data_dir"}
    with pytest.raises(StepError, match="no data_dir"):
        Fence().check(_ctx(inputs, no_dir))
    try:
        ctx = _ctx(inputs, node)
        Fence().apply(ctx)
        assert ctx.recorded["stopped"] is True
        assert ctx.recorded.get("read_only") is (True if mode == "read_only_then_stop" else None)
        assert ctx.outputs["fenced"] is True
        assert not pair.pg_ctl_running(pair.node1)
        assert not answers(pair.node1.dsn)
        assert Fence().verify(_ctx(inputs, node)) is True
        if mode == "stop":  # stopping a stopped server is a no-op, not an error
            again = _ctx(inputs, node)
            Fence().apply(again)
            assert "server was not running" in again.lines

        Fence().undo(_ctx(inputs, node, recorded=ctx.recorded))
        assert pair.pg_ctl_running(pair.node1)
        assert "default_transaction_read_only" not in auto_conf(pair.node1.data_dir)
        wait_for("the server to take writes", lambda: _fresh_session_writes(pair.node1.dsn))
        assert Fence().verify(_ctx(inputs, node)) is False
    finally:
        _unfence(pair)


# -- postgres.promote and postgres.rejoin --------------------------------------------------


@pytest.mark.integration
def test_promote_refusal_says_why_the_old_primary_could_not_be_shown_stopped(
    shared_sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A silent old primary whose pg_ctl status cannot tell is refused, and the refusal says why."""
    pair = shared_sandbox
    old = {**_nobody(), "data_dir": str(tmp_path / "not-here"), "bin_dir": pair.bin_dir,
           "os_user": pair.os_user}  # fmt: skip
    inputs = PromoteInputs(old_primary="old", accept_data_loss=True)
    ctx = _ctx(inputs, pair.target(pair.node2), {"old": old})
    with pytest.raises(StepError, match="does not answer") as refused:
        Promote().check(ctx)
    assert "whether it is stopped is unknown too: cannot tell whether the server in" in (
        refused.value.message
    )
    assert isinstance(refused.value.__cause__, StepError)


def test_promote_then_rejoin(sandbox: Pair) -> None:  # noqa: F811
    """promote refuses an unfenced primary, promotes once, is idempotent; rejoin makes the old primary stream."""
    pair = sandbox
    old, new = pair.target(pair.node1), pair.target(pair.node2)
    targets = {"old": old, "new": new}
    promote = PromoteInputs(old_primary="old", catchup_seconds=10)
    rejoin = RejoinInputs(new_primary="new", wait_seconds=30)

    # Before the promotion: rejoin has nothing to follow; promote refuses an unfenced primary
    # (a dry run says what must happen first instead of failing).
    with pytest.raises(StepError, match="still in recovery: promote it first"):
        Rejoin().check(_ctx(rejoin, old, targets))
    assert "still in recovery now" in (
        Rejoin().check(_ctx(rejoin, old, targets, dry_run=True)) or ""
    )
    with pytest.raises(StepError, match="old primary old still accepts writes"):
        Promote().check(_ctx(promote, new, targets))
    assert "must be fenced" in (Promote().check(_ctx(promote, new, targets, dry_run=True)) or "")
    assert Promote().verify(_ctx(promote, new, targets)) is False
    assert in_recovery(pair.node2.dsn)

    Fence().apply(_ctx(FenceInputs(mode="read_only"), old))
    checked = Promote().check(_ctx(promote, new, targets)) or ""
    assert re.fullmatch(
        r"promote \(lag \d+ bytes not received .*; old refuses writes \(live probe\)\)", checked
    ), checked

    ctx = _ctx(promote, new, targets)
    Promote().apply(ctx)
    assert ctx.recorded == {"timeline_before": 1, "promote_signalled": True}
    assert ctx.outputs["timeline"] == 2
    # The new primary keeps no upstream: the old primary_conninfo is gone from the file.
    assert (
        "primary_conninfo" not in (Path(pair.node2.data_dir) / "postgresql.auto.conf").read_text()
    )
    assert Promote().verify(_ctx(promote, new, targets, recorded=ctx.recorded)) is True
    assert not in_recovery(pair.node2.dsn)
    assert one(pair.node2.dsn, "SELECT count(*) FROM drctl_probe WHERE nonce = 'promote'") == 1

    # Promoting a primary does nothing: no second timeline switch.
    assert (
        Promote().check(_ctx(promote, new, targets)) == "do nothing: the server is primary already"
    )
    again = _ctx(promote, new, targets)
    Promote().apply(again)
    assert "already primary" in again.lines
    assert again.outputs["timeline"] == 2
    assert again.recorded == {}
    assert timeline(pair.node2.dsn) == 2
    assert history_files(pair.node2.data_dir) == ["00000002.history"]

    # Rejoin: the old primary rewinds and streams from the new one.
    assert Rejoin().check(_ctx(rejoin, old, targets, step_id="rejoin-1")) is None
    Rejoin().apply(_ctx(rejoin, old, targets, step_id="rejoin-1"))
    assert Rejoin().verify(_ctx(rejoin, old, targets, step_id="rejoin-1")) is True
    assert in_recovery(pair.node1.dsn)
    # Freshly rejoined and idle: nothing left to replay, so no lag in bytes or seconds
    # (its receive position is the streaming start, behind what it has replayed).
    lag = _ctx(LagInputs(primary="new", max_bytes=0, max_seconds=0.5), old, targets)
    ReplicationLag().apply(lag)
    assert (lag.outputs["lag_bytes"], lag.outputs["lag_seconds"]) == (0, 0)
    assert query(pair.node1.dsn, "SELECT status, received_tli FROM pg_stat_wal_receiver") == [
        ("streaming", 2)
    ]
    assert (
        one(
            pair.node2.dsn,
            "SELECT state FROM pg_stat_replication WHERE application_name = 'drctl_rejoin_1'",
        )
        == "streaming"
    )
    conf = auto_conf(pair.node1.data_dir)
    assert "default_transaction_read_only" not in conf
    conninfo = [line for line in conf.splitlines() if line.startswith("primary_conninfo")]
    assert len(conninfo) == 1
    assert f"port={pair.node2.port}" in conninfo[0]
    assert "application_name=drctl_rejoin_1" in conninfo[0]
    assert (Path(pair.node1.data_dir) / "standby.signal").exists()
    execute(pair.node2.dsn, "CREATE TABLE after_rejoin AS SELECT 7 AS x")
    wait_replayed(pair.node2.dsn, pair.node1.dsn)
    assert one(pair.node1.dsn, "SELECT x FROM after_rejoin") == 7

    # verify needs both halves: streaming on the node AND listed by the new primary under
    # this step's name. Another step id's name is not listed, so verify says no.
    short = RejoinInputs(new_primary="new", wait_seconds=1)
    assert Rejoin().verify(_ctx(short, old, targets, step_id="another-step")) is False
    # A node that is down is not streaming, whatever the new primary lists.
    for n in pair.sandbox.nodes:
        if n.name == "node1":
            n.stop("fast")
    assert Rejoin().verify(_ctx(short, old, targets, step_id="rejoin-1")) is False
