"""The PostgreSQL canary's address through a multi-host DSN, against a real three-node topology.

A Patroni user's client path names every member (``host=a,b,c
target_session_attrs=read-write``); the canary must record the one server libpq settled
on, or a drill cannot tell when writes reached the new primary.
"""

from __future__ import annotations

import time
import uuid

import pytest

from drctl.drill.canary import CanarySpec, make_canary
from drctl.drill.measure import measure
from tests.integration.pg_sandbox import (
    Node,
    ThreeNodes,
    execute,
    in_recovery,
    three_nodes,  # noqa: F401
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _address(node: Node) -> str:
    return f"{node.host}:{node.port}"


def test_canary_records_the_server_a_multi_host_dsn_connected_to(
    three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """Acks name the primary libpq chose from the host list, then the promoted standby; the drill's time to new primary is computed."""
    topo = three_nodes
    node1 = topo.primary
    node2, node3 = topo.standbys
    # The standbys first: read-write makes libpq skip them for the primary.
    members = (node2, node3, node1)
    dsn = (
        f"host={','.join(n.host for n in members)} port={','.join(str(n.port) for n in members)} "
        "dbname=postgres user=postgres target_session_attrs=read-write connect_timeout=1"
    )
    canary = make_canary(CanarySpec("postgres", dsn, interval=0.02, timeout=1.0), uuid.uuid4().hex)
    canary.check()
    canary.prepare()
    canary.start()
    try:
        wait_for("acks on node1", lambda: len(canary.acks()) >= 5)
        moved = time.time()
        for n in topo.sandbox.nodes:
            if n.name == node1.name:
                n.stop()
        execute(node2.dsn, "SELECT pg_promote(true)")
        assert not in_recovery(node2.dsn)
        wait_for(
            "acks on node2",
            lambda: any(a.address == _address(node2) for a in canary.acks()),
        )
    finally:
        canary.stop()
    acks = canary.acks()
    before = {a.address for a in acks if a.at < moved}
    assert before == {_address(node1)}, before
    assert {a.address for a in acks} == {_address(node1), _address(node2)}
    verify = make_canary(CanarySpec("postgres", dsn, verify_dsn=node2.dsn), canary.drill_id)
    present, address, _ = verify.read_back()
    assert address == _address(node2)
    m = measure(
        acks, present, windows=[(canary.started_at, canary.stopped_at)],
        first_mutation_at=moved, new_primary_address=address,
    )  # fmt: skip
    assert m.time_to_new_primary is not None and m.time_to_new_primary > 0
    assert m.missing == 0
