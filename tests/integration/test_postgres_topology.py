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

from drctl.providers.postgres.fence import Fence, FenceInputs
from drctl.providers.postgres.hba import BACKUP_SUFFIX, MARK
from drctl.steps.base import StepInputs
from tests.integration.pg_sandbox import (
    RealContext,
    ThreeNodes,
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
