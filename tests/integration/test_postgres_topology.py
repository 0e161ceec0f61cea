"""The three-node PostgreSQL step types against a real primary and two standbys.

``postgres.fence`` with ``mode: hard``, ``postgres.choose_primary`` and
``postgres.follow`` are called directly with a real-clock context (RealContext) or
driven through ``drctl run``. Tests on the module's shared topology put back what they
change; those that promote get a topology of their own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drctl.errors import StepError
from drctl.providers.postgres.choose import CandidateInputs, ChooseInputs, ChoosePrimary
from drctl.providers.postgres.fence import Fence, FenceInputs
from drctl.providers.postgres.hba import BACKUP_SUFFIX, MARK
from drctl.steps.base import StepInputs
from tests.integration.pg_sandbox import (
    RealContext,
    ThreeNodes,
    execute,
    free_port,
    lsn_int,
    one,
    shared_three_nodes,  # noqa: F401
    three_nodes,  # noqa: F401
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _ctx(
    inputs: StepInputs,
    target: dict[str, Any] | None = None,
    targets: dict[str, dict[str, Any]] | None = None,
    **kw: Any,
) -> RealContext:
    return RealContext(inputs, target=target, targets=targets or {}, timeout=60.0, **kw)


def _targets(topology: ThreeNodes) -> dict[str, dict[str, Any]]:
    """Every node as a target under its node name (node1 the primary, node2, node3)."""
    return {n.name: topology.target(n) for n in topology.nodes}


def _silent() -> dict[str, Any]:
    """A postgres target on a free port: nothing answers there."""
    dsn = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=2"
    return {"type": "postgres", "dsn": dsn}


def _session_writes(dsn: str, *, override: bool) -> bool:
    """Whether a fresh application session (optionally turning read-only off) can commit."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            if override:
                conn.execute("SET default_transaction_read_only = off")
            conn.execute("CREATE TABLE IF NOT EXISTS fence_writes (x int)")
            conn.execute("INSERT INTO fence_writes VALUES (1)")
        return True
    except psycopg.errors.ReadOnlySqlTransaction:
        return False


def _hba(topology: ThreeNodes) -> Path:
    return Path(topology.primary.data_dir) / "pg_hba.conf"


def _restore_hba(topology: ThreeNodes, original: str) -> None:
    """Put the primary's pg_hba.conf back and reload, whatever a failed test left."""
    from drctl.sandbox.pgnode import as_user

    _hba(topology).write_text(original)
    pg_ctl = str(Path(topology.bin_dir) / "pg_ctl")
    argv = as_user(topology.os_user, [pg_ctl, "reload", "-D", topology.primary.data_dir])
    subprocess.run(argv, capture_output=True, timeout=30, check=True)
    wait_for(
        "sessions to get in again", lambda: _session_writes(topology.primary.dsn, override=False)
    )


# -- postgres.fence, mode: hard -------------------------------------------------------------


def test_hard_fence_refuses_the_session_read_only_lets_write(
    shared_three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """A session that turns read-only off writes after read_only, is refused after hard; standbys keep streaming."""
    topo = shared_three_nodes
    primary = topo.target(topo.primary)
    original = _hba(topo).read_text()

    advisory = _ctx(FenceInputs(mode="read_only"), primary)
    Fence().apply(advisory)
    assert lsn_int(advisory.outputs["final_lsn"]) > 0
    assert advisory.outputs["final_lsn_from"] == "pg_current_wal_lsn"
    assert _session_writes(topo.primary.dsn, override=False) is False
    assert _session_writes(topo.primary.dsn, override=True) is True  # advisory: overridden
    Fence().undo(_ctx(FenceInputs(mode="read_only"), primary, recorded=advisory.recorded))
    wait_for(
        "the read-only fence to lift", lambda: _session_writes(topo.primary.dsn, override=False)
    )

    writer = psycopg.connect(topo.primary.dsn, autocommit=True, connect_timeout=5)
    writer.execute("SET default_transaction_read_only = off")
    inputs = FenceInputs(mode="hard")
    try:
        assert "pg_hba.conf rejects" in (Fence().check(_ctx(inputs, primary)) or "")
        assert Fence().verify(_ctx(inputs, primary)) is False
        ctx = _ctx(inputs, primary)
        Fence().apply(ctx)
        assert ctx.recorded["hba_original"] == original
        assert ctx.outputs["sessions_ended"] >= 1
        assert ctx.outputs["final_lsn_from"] == "pg_current_wal_lsn"
        final = lsn_int(ctx.outputs["final_lsn"])
        assert ctx.recorded["final_lsn"] == ctx.outputs["final_lsn"]

        with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
            _session_writes(topo.primary.dsn, override=True)
        with pytest.raises(psycopg.OperationalError):
            writer.execute("INSERT INTO fence_writes VALUES (2)")  # its backend was ended
        fenced = _hba(topo).read_text()
        assert fenced.startswith(MARK)
        assert "host replication all 127.0.0.0/8 trust" in fenced
        assert Path(str(_hba(topo)) + BACKUP_SUFFIX).read_text() == original
        assert Fence().verify(_ctx(inputs, primary, recorded=ctx.recorded)) is True
        # The server is up and its WAL, to the last byte, reaches both standbys.
        assert topo.pg_ctl_running(topo.primary)
        for node in topo.standbys:
            wait_for(
                f"{node.name} to receive the final WAL",
                lambda n=node: topo.received_lsn(n) >= final,
            )
            assert one(node.dsn, "SELECT status FROM pg_stat_wal_receiver") == "streaming"

        Fence().undo(_ctx(inputs, primary, recorded=ctx.recorded))
        assert _hba(topo).read_text() == original
        wait_for(
            "the hard fence to lift", lambda: _session_writes(topo.primary.dsn, override=False)
        )
        assert Fence().verify(_ctx(inputs, primary, recorded=ctx.recorded)) is False
    finally:
        writer.close()
        _restore_hba(topo, original)


# -- postgres.choose_primary ----------------------------------------------------------------


def _choose(
    topo: ThreeNodes, targets: dict[str, dict[str, Any]] | None = None, **kw: Any
) -> RealContext:
    """Run choose_primary over node2 and node3 (and extra targets) against node1; the context."""
    names = kw.pop("candidates", ["node2", "node3"])
    tags = kw.pop("tags", {})
    inputs = ChooseInputs(
        candidates=[CandidateInputs(target=n, **tags.get(n, {})) for n in names],
        old_primary="node1",
        **kw,
    )
    ctx = _ctx(inputs, None, _targets(topo) | (targets or {}))
    ChoosePrimary().apply(ctx)
    return ctx


def _row(ctx: RealContext, name: str) -> dict[str, Any]:
    return next(r for r in ctx.outputs["table"] if r["name"] == name)


def test_choose_most_advanced_and_why_each_other_lost(shared_three_nodes: ThreeNodes) -> None:  # noqa: F811
    """A standby that stopped receiving loses to the one that has every byte; its gap and reason say so."""
    topo = shared_three_nodes
    lagging, ahead = topo.standbys[1], topo.standbys[0]
    topo.stop_receiving(lagging)
    try:
        end = topo.write_wal(2000)
        wait_for("node2 to receive it all", lambda: topo.received_lsn(ahead) >= end)
        ctx = _choose(topo, tags={"node3": {"priority": 9}})
        assert ctx.outputs["target"] == "node2"
        assert ctx.outputs["gap_bytes"] == 0
        gap = ctx.outputs["gaps"]["node3"]
        assert gap == end - topo.received_lsn(lagging) > 0
        assert _row(ctx, "node2")["verdict"] == "chosen"
        loser = _row(ctx, "node3")
        assert loser["verdict"] == "behind"
        assert (
            loser["reason"] == f"received {gap} bytes less than node2"
        )  # priority 9 does not help
        assert any(line.startswith("node3: behind — received") for line in ctx.lines)
        assert ctx.outputs["preferred"] is False

        # prefer: the lagging one is chosen, and the log says what that gives up.
        preferred = _choose(topo, prefer="node3")
        assert preferred.outputs["target"] == "node3"
        assert preferred.outputs["gives_up_bytes"] == gap
        assert any(f"giving up {gap} bytes" in line for line in preferred.lines)

        # nofailover removes the best one; the other is chosen.
        tagged = _choose(topo, tags={"node2": {"nofailover": True}})
        assert tagged.outputs["target"] == "node3"
        assert _row(tagged, "node2")["reason"] == "tagged nofailover"
        with pytest.raises(StepError, match="prefer: node2 cannot be chosen: tagged nofailover"):
            _choose(topo, prefer="node2", tags={"node2": {"nofailover": True}})
    finally:
        topo.resume_receiving(lagging)


def test_choose_paused_replay_is_not_counted_as_lost(shared_three_nodes: ThreeNodes) -> None:  # noqa: F811
    """A standby that received all WAL but replayed none of the last writes has a gap of 0 and beats one that stopped receiving."""
    topo = shared_three_nodes
    paused, stopped = topo.standbys
    topo.pause_replay(paused)
    topo.stop_receiving(stopped)
    try:
        end = topo.write_wal(2000)
        wait_for("node2 to receive it all", lambda: topo.received_lsn(paused) >= end)
        assert topo.replayed_lsn(paused) < end
        ctx = _choose(topo)
        assert ctx.outputs["target"] == "node2"
        assert ctx.outputs["gaps"]["node2"] == 0
        row = _row(ctx, "node2")
        assert row["replay_paused"] is True
        assert lsn_int(row["replayed_lsn"]) < lsn_int(row["received_lsn"])
        assert ctx.outputs["gaps"]["node3"] > 0
    finally:
        topo.resume_replay(paused)
        topo.resume_receiving(stopped)
    # Both caught up again: equal position, the tie goes to the one that replayed more or by name.
    topo.wait_caught_up(paused)
    topo.wait_caught_up(stopped)
    even = _choose(topo)
    assert even.outputs["gaps"] == {"node2": 0, "node3": 0}
    assert "received as much as" in _row(even, "node3")["reason"]


def test_choose_refuses_when_a_silent_candidate_may_be_ahead(
    shared_three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """An unreachable candidate the old primary does not list refuses the choice unless accept_unreachable."""
    topo = shared_three_nodes
    gone = {"gone": _silent()}
    names = ["node2", "node3", "gone"]
    with pytest.raises(StepError, match=r"gone does not answer and may be the most advanced"):
        _choose(topo, gone, candidates=names)
    ctx = _choose(topo, gone, candidates=names, accept_unreachable=True)
    assert ctx.outputs["target"] in {"node2", "node3"}
    row = _row(ctx, "gone")
    assert row["verdict"] == "rejected"
    assert row["reason"].startswith("unreachable: gone: cannot connect")
    assert ctx.outputs["gaps"]["gone"] is None
    # The old primary silent too: still judged, on the candidates' own positions.
    alone = _choose(topo, {"node1": _silent()})
    assert alone.outputs["target"] in {"node2", "node3"}
    assert any("node1 does not answer" in line for line in alone.lines)


def test_choose_prefers_the_synchronous_standby_at_equal_position(
    shared_three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """With synchronous_standby_names naming node3, node3 wins a tie node2 would win by name."""
    topo = shared_three_nodes
    for node in topo.standbys:
        topo.wait_caught_up(node)
    assert _choose(topo).outputs["target"] == "node2"
    execute(
        topo.primary.dsn,
        "ALTER SYSTEM SET synchronous_standby_names = 'node3'",
        "SELECT pg_reload_conf()",
    )
    try:
        wait_for(
            "node3 to be synchronous",
            lambda: (
                one(
                    topo.primary.dsn,
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'node3'",
                )
                == "sync"
            ),
        )
        ctx = _choose(topo)
        assert ctx.outputs["target"] == "node3"
        assert _row(ctx, "node3")["sync_state"] == "sync"
        assert _row(ctx, "node3")["reason"] == "received as much as node2; synchronous standby"
    finally:
        execute(
            topo.primary.dsn,
            "ALTER SYSTEM RESET synchronous_standby_names",
            "SELECT pg_reload_conf()",
        )
