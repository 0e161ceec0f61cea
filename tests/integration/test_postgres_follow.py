"""``postgres.follow`` on a standby whose WAL receiver is not running, on real three-node topologies.

A standby that followed one promotion and then lost its primary (the primary moved, or
its primary_conninfo points at nothing) has no WAL receiver, so its timeline must come
from what it replayed — not from its last restartpoint, which is still on the old
timeline minutes after the switch.
"""

from __future__ import annotations

import pytest

from drctl.errors import StepError
from drctl.providers.postgres.follow import Follow, FollowInputs
from tests.integration.pg_sandbox import (
    Node,
    ThreeNodes,
    execute,
    free_port,
    in_recovery,
    lsn_int,
    one,
    query,
    three_nodes,  # noqa: F401
    wait_for,
)
from tests.integration.test_postgres_topology import _ctx, _targets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _receive_from_nowhere(node: Node) -> None:
    """Point ``node``'s primary_conninfo at a port nothing listens on; wait until no WAL receiver runs."""
    nowhere = f"host=127.0.0.1 port={free_port()} connect_timeout=1 application_name={node.name}"
    execute(
        node.dsn,
        f"ALTER SYSTEM SET primary_conninfo = '{nowhere}'",
        "SELECT pg_reload_conf()",
    )
    wait_for(
        f"{node.name}'s WAL receiver to stop",
        lambda: one(node.dsn, "SELECT count(*) FROM pg_stat_wal_receiver") == 0,
    )


def _restartpoint_timeline(node: Node) -> int:
    return int(one(node.dsn, "SELECT timeline_id FROM pg_control_checkpoint()"))


def test_follow_repoints_in_place_a_standby_already_on_the_new_timeline_with_no_receiver(
    three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """node3 follows node2 onto timeline 2, loses its WAL receiver, and is repointed in place (no rewind)."""
    topo = three_nodes
    node2, node3 = topo.standbys
    targets = _targets(topo)
    topo.write_wal(500)
    topo.wait_caught_up(node2)
    topo.wait_caught_up(node3)
    execute(node2.dsn, "SELECT pg_promote(true)")
    inputs = FollowInputs(new_primary="node2", wait_seconds=30)
    first = _ctx(inputs, targets["node3"], targets)
    Follow().apply(first)
    assert Follow().verify(_ctx(inputs, targets["node3"], targets, recorded=first.recorded))
    fork = lsn_int(one(node2.dsn, "SELECT pg_read_file('pg_wal/00000002.history')").split()[1])
    # node3 replays well past the fork on timeline 2 ...
    execute(node2.dsn, "CREATE TABLE past_fork AS SELECT g FROM generate_series(1, 20000) g")
    end = lsn_int(one(node2.dsn, "SELECT pg_current_wal_lsn()::text"))
    wait_for("node3 to replay past the fork", lambda: topo.replayed_lsn(node3) >= end)
    assert end > fork
    # ... while its last restartpoint is still on timeline 1: what made the old code
    # see a standby 'diverged on timeline 1'.
    assert _restartpoint_timeline(node3) == 1
    _receive_from_nowhere(node3)

    # What the servers say is shown in a dry run; a run's apply reads it again anyway.
    said = Follow().check(_ctx(inputs, targets["node3"], targets, dry_run=True)) or ""
    assert said.startswith("repoint in place, on the new primary's timeline 2"), said
    ctx = _ctx(inputs, targets["node3"], targets)
    Follow().apply(ctx)
    assert ctx.outputs["rewound"] is False
    assert Follow().verify(_ctx(inputs, targets["node3"], targets, recorded=ctx.recorded))
    assert in_recovery(node3.dsn)
    assert query(
        node3.dsn, "SELECT status, received_tli, sender_port FROM pg_stat_wal_receiver"
    ) == [("streaming", 2, node2.port)]
    assert one(node3.dsn, "SELECT count(*) FROM past_fork") == 20000  # kept, not rewound


def test_follow_still_refuses_a_diverged_standby_with_no_receiver(
    three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """A sibling that received WAL past the fork and then lost its receiver is still found diverged."""
    topo = three_nodes
    node2, node3 = topo.standbys
    targets = _targets(topo)
    topo.stop_receiving(node2)
    end = topo.write_wal(2000)
    wait_for("node3 to receive the writes node2 lacks", lambda: topo.received_lsn(node3) >= end)
    execute(node2.dsn, "SELECT pg_promote(true)")
    fork = lsn_int(one(node2.dsn, "SELECT pg_read_file('pg_wal/00000002.history')").split()[1])
    assert fork < end
    _receive_from_nowhere(node3)

    inputs = FollowInputs(new_primary="node2", wait_seconds=30)
    # A dry run's check says so, and a run's apply refuses before it repoints anything.
    for step, dry_run in ((Follow().check, True), (Follow().apply, False)):
        with pytest.raises(
            StepError, match=r"refusing to follow without a rewind: diverged: timeline 1 up to "
        ) as refused:
            step(_ctx(inputs, targets["node3"], targets, dry_run=dry_run))
        assert f"so {topo.received_lsn(node3) - fork} bytes" in str(refused.value)
        assert in_recovery(node3.dsn)
