"""The Patroni fixture itself: a real three-node cluster as an unprivileged user, torn down."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from tests.integration.patroni_cluster import PatroniCluster
from tests.integration.pg_sandbox import in_recovery

pytestmark = pytest.mark.integration


def test_cluster_comes_up_with_a_leader_and_two_streaming_replicas_and_is_torn_down() -> None:
    """pg1 leads, pg2 and pg3 stream from it, nothing runs as root, and teardown kills it all."""
    with PatroniCluster.running() as cluster:
        assert cluster.leader() == "pg1"
        assert cluster.streaming() == {"pg2", "pg3"}
        assert not in_recovery(cluster.node("pg1").dsn)
        assert in_recovery(cluster.node("pg2").dsn)
        pids = [n.postmaster_pid() for n in cluster.nodes]
        assert all(pids), pids
        for node in cluster.nodes:
            assert node.process is not None
            owner = Path(f"/proc/{node.process.pid}").stat().st_uid
            assert pwd.getpwuid(owner).pw_name == cluster.os_user
            if os.geteuid() == 0:
                assert owner != 0
        root = cluster.root
    for pid in pids:
        assert pid is not None
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )
    assert not root.exists()
