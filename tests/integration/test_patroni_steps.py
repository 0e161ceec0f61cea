"""The patroni.* step types called directly against a real three-node Patroni cluster.

Tests on the module's shared cluster put back what they change (pause, stopped
processes); the switchover tests move the leader and come last; a failover of a
cluster whose leader is down gets a cluster of its own.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from drctl.errors import StepError, Unreachable
from drctl.providers.patroni.guard import refuse_unless_paused
from drctl.providers.patroni.member import Reinit, ReinitInputs, Restart, RestartInputs
from drctl.providers.patroni.pause import Pause, PauseInputs, Resume
from drctl.providers.patroni.status import PatroniStatus, StatusInputs
from drctl.providers.patroni.switchover import (
    Failover,
    FailoverInputs,
    Switchover,
    SwitchoverInputs,
)
from drctl.providers.postgres.fence import Fence, FenceInputs
from drctl.providers.postgres.follow import Follow, FollowInputs
from drctl.providers.postgres.rejoin import Rejoin, RejoinInputs
from drctl.steps.base import StepInputs, StepType
from tests.integration.patroni_cluster import (
    PASSWORD,
    PatroniCluster,
    shared_patroni,  # noqa: F401
)
from tests.integration.pg_sandbox import RealContext, execute, in_recovery, one, timeline

pytestmark = pytest.mark.integration


def _ctx(cluster: PatroniCluster, inputs: StepInputs, **kw: Any) -> RealContext[Any, Any]:
    return RealContext(inputs, target=cluster.target(), timeout=120.0, **kw)


@pytest.fixture
def own_cluster() -> Iterator[PatroniCluster]:
    """A cluster of this test's own (it kills the leader)."""
    with PatroniCluster.running() as cluster:
        yield cluster


@pytest.fixture
def healthy(shared_patroni: PatroniCluster) -> Iterator[PatroniCluster]:  # noqa: F811
    """The shared cluster, healthy and unpaused before and after the test."""
    shared_patroni.wait_healthy()
    yield shared_patroni
    if (shared_patroni.cluster() or {}).get("pause"):
        shared_patroni.set_paused(False)
    shared_patroni.wait_healthy()


def test_status_publishes_members_leader_lag_and_timeline(healthy: PatroniCluster) -> None:
    """patroni.status publishes the leader, every member with role/state/lag/timeline, and pause."""
    ctx = _ctx(healthy, StatusInputs(max_lag_bytes=16 * 1024 * 1024, min_streaming=2))
    PatroniStatus().apply(ctx)
    leader = healthy.leader()
    assert ctx.outputs["leader"] == leader
    members = {m["name"]: m for m in ctx.outputs["members"]}
    assert set(members) == {"pg1", "pg2", "pg3"}
    assert members[leader]["role"] == "leader"
    for name in {"pg1", "pg2", "pg3"} - {leader}:
        assert members[name]["state"] == "streaming"
        assert isinstance(members[name]["lag"], int)
        assert members[name]["api_url"] == healthy.node(name).api_url
    assert ctx.outputs["paused"] is False
    assert ctx.outputs["timeline"] == members[leader]["timeline"]
    assert PatroniStatus().verify(ctx)


def test_status_fails_on_what_it_is_asked_naming_every_member(healthy: PatroniCluster) -> None:
    """A status asked for another leader and for a paused cluster fails, listing each member's state."""
    leader = healthy.leader()
    other = next(n.name for n in healthy.nodes if n.name != leader)
    ctx = _ctx(healthy, StatusInputs(leader=other, paused=True))
    with pytest.raises(StepError) as err:
        PatroniStatus().apply(ctx)
    text = err.value.message
    assert f"{leader} leads, not {other}" in text
    assert "not paused in the view of pg1, pg2, pg3" in text
    for name in ("pg1", "pg2", "pg3"):
        assert name in text.split("Members:")[1]
    assert not PatroniStatus().verify(ctx)


def test_pause_is_verified_on_every_member_and_its_undo_resumes(healthy: PatroniCluster) -> None:
    """pause returns only when each member's own /patroni says paused; its undo resumes all."""
    ctx = _ctx(healthy, PauseInputs())
    assert "pause the cluster" in (Pause().check(ctx) or "")
    Pause().apply(ctx)
    for node in healthy.nodes:
        assert (node.get("/patroni") or {}).get("pause") is True, node.name
    assert Pause().verify(ctx)
    assert not Resume().verify(_ctx(healthy, PauseInputs()))
    assert Pause().check(_ctx(healthy, PauseInputs())) == "already paused"
    Pause().undo(ctx)
    for node in healthy.nodes:
        assert not (node.get("/patroni") or {}).get("pause"), node.name
    assert Resume().verify(_ctx(healthy, PauseInputs()))


def test_undo_of_a_pause_leaves_a_cluster_that_was_paused_before(healthy: PatroniCluster) -> None:
    """A pause step on a cluster paused already records it, and its undo does not resume it."""
    healthy.set_paused(True)
    ctx = _ctx(healthy, PauseInputs())
    Pause().apply(ctx)
    assert ctx.recorded["was_paused"] is True
    Pause().undo(ctx)
    assert all((n.get("/patroni") or {}).get("pause") for n in healthy.nodes)
    Resume().apply(_ctx(healthy, PauseInputs()))
    assert not any((n.get("/patroni") or {}).get("pause") for n in healthy.nodes)


def test_a_wrong_password_is_refused_without_showing_it(healthy: PatroniCluster) -> None:
    """Patroni's 401 on a write fails the step naming the credentials, never their value."""
    target = {**healthy.target(), "password": "wrong-" + PASSWORD}
    ctx = RealContext(PauseInputs(), target=target, timeout=60.0)
    with pytest.raises(StepError) as err:
        Pause().apply(ctx)
    assert "HTTP 401" in err.value.message
    assert PASSWORD not in err.value.message
    assert not any(PASSWORD in line for line in ctx.lines)


def test_no_member_answering_is_unreachable(healthy: PatroniCluster) -> None:
    """A target whose members all refuse connections raises Unreachable naming each URL."""
    from tests.integration.pg_sandbox import free_port

    target = {"type": "patroni", "members": [f"http://127.0.0.1:{free_port()}"]}
    with pytest.raises(Unreachable, match="no Patroni member answered"):
        PatroniStatus().apply(RealContext(StatusInputs(), target=target, timeout=10.0))


@pytest.mark.parametrize(
    ("step", "inputs", "action"),
    [
        (Fence(), FenceInputs(mode="stop"), "fence it"),
        (Follow(), FollowInputs(new_primary="leader"), "repoint it"),
        (Rejoin(), RejoinInputs(new_primary="leader"), "rejoin it"),
    ],
)
def test_managed_fence_follow_and_rejoin_refuse_while_patroni_runs(
    healthy: PatroniCluster, step: StepType[Any, Any], inputs: StepInputs, action: str
) -> None:
    """Each of them fails before acting on a managed server while its Patroni is not paused."""
    leader = healthy.node(str(healthy.leader()))
    replica = next(n for n in healthy.nodes if n.name != leader.name)
    targets = {"cluster": healthy.target(), "leader": healthy.postgres_target(leader)}
    ctx = RealContext(
        inputs, target=healthy.postgres_target(replica), targets=targets, timeout=60.0
    )
    with pytest.raises(StepError, match=f"refusing to {action}: this server is managed by Patroni"):
        step.apply(ctx)
    assert in_recovery(replica.dsn)
    assert healthy.healthy(leader.name)


def test_the_guard_lets_a_step_act_once_every_member_is_paused(healthy: PatroniCluster) -> None:
    """With the cluster paused in every member's view, the live check passes and says so."""
    healthy.set_paused(True)
    replica = next(n for n in healthy.nodes if n.name != healthy.leader())
    ctx = RealContext(FenceInputs(), target=healthy.postgres_target(replica),
                      targets={"cluster": healthy.target()}, timeout=60.0)  # fmt: skip
    refuse_unless_paused(ctx, "fence it")
    assert any("is paused in every member's view" in line for line in ctx.lines)


def test_restart_of_a_replica_is_verified_by_a_new_postmaster(healthy: PatroniCluster) -> None:
    """patroni.restart on a replica returns once it streams again under a newer postmaster."""
    replica = next(n for n in healthy.nodes if n.name != healthy.leader())
    before = one(replica.dsn, "SELECT pg_postmaster_start_time()")
    ctx = _ctx(healthy, RestartInputs(member=replica.name))
    Restart().apply(ctx)
    assert one(replica.dsn, "SELECT pg_postmaster_start_time()") > before
    assert Restart().verify(ctx)
    skipped = _ctx(healthy, RestartInputs(member=replica.name, pending_only=True))
    assert "not pending restart" in (Restart().check(skipped) or "")
    Restart().apply(skipped)
    assert Restart().verify(skipped)


def test_reinit_reclones_a_replica_and_refuses_the_leader(healthy: PatroniCluster) -> None:
    """patroni.reinit wipes a replica and re-clones it (a file it held is gone); the leader is refused."""
    leader = healthy.leader()
    assert leader is not None
    replica = next(n for n in healthy.nodes if n.name != leader)
    marker = replica.data_dir / "drctl-reinit-marker"
    marker.write_text("local only")
    ctx = _ctx(healthy, ReinitInputs(member=replica.name, force=True))
    Reinit().apply(ctx)
    assert not marker.exists()
    assert in_recovery(replica.dsn)
    assert Reinit().verify(ctx)
    with pytest.raises(StepError, match="is the leader"):
        Reinit().check(_ctx(healthy, ReinitInputs(member=leader)))


def test_a_refused_switchover_shows_patronis_text_and_the_members(healthy: PatroniCluster) -> None:
    """With both replicas' Patroni frozen, Patroni's 412 "no good candidates" is shown with the members."""
    leader = healthy.leader()
    replicas = [n for n in healthy.nodes if n.name != leader]
    frozen = [n.process.pid for n in replicas if n.process is not None]
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        ctx = _ctx(healthy, SwitchoverInputs())
        with pytest.raises(StepError) as err:
            Switchover().apply(ctx)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    text = err.value.message
    assert "HTTP 412" in text, text
    assert "no good candidates" in text
    assert f"{leader} leader running" in text
    assert healthy.leader() == leader


def test_switchover_to_a_named_then_to_an_unnamed_candidate(healthy: PatroniCluster) -> None:
    """Each switchover is verified: the candidate leads, the timeline moved, the old leader streams."""
    old = healthy.leader()
    assert old is not None
    candidate = next(n.name for n in healthy.nodes if n.name != old)
    tl_before = timeline(healthy.node(old).dsn)
    ctx = _ctx(healthy, SwitchoverInputs(leader=old, candidate=candidate))
    Switchover().apply(ctx)
    assert ctx.outputs["leader"] == candidate
    assert ctx.outputs["timeline"] > tl_before
    assert not in_recovery(healthy.node(candidate).dsn)
    assert in_recovery(healthy.node(old).dsn)
    assert Switchover().verify(ctx)
    # The old leader streams from the new one: a write there arrives on it.
    execute(
        healthy.node(candidate).dsn,
        "CREATE TABLE IF NOT EXISTS sw (n int)",
        "INSERT INTO sw VALUES (1)",
    )
    healthy.wait("the write to reach the old leader",
                 lambda: one(healthy.node(old).dsn, "SELECT count(*) FROM pg_class WHERE relname = 'sw'") == 1)  # fmt: skip

    again = _ctx(healthy, SwitchoverInputs())
    Switchover().apply(again)
    assert again.outputs["leader"] != candidate
    assert again.outputs["timeline"] > ctx.outputs["timeline"]
    assert Switchover().verify(again)
    healthy.wait_healthy(again.outputs["leader"])


def test_verify_without_a_recorded_leader_says_nothing_happened(healthy: PatroniCluster) -> None:
    """A switchover interrupted before it asked Patroni anything does not verify (resume re-applies)."""
    assert not Switchover().verify(_ctx(healthy, SwitchoverInputs()))


def test_failover_of_a_paused_cluster_whose_leader_is_down(own_cluster: PatroniCluster) -> None:
    """With Patroni paused and the leader's machine gone, patroni.failover promotes the candidate."""
    own_cluster.set_paused(True)
    own_cluster.kill(own_cluster.node("pg1"))
    own_cluster.wait(
        "the dead leader's lock to expire", lambda: own_cluster.leader() is None, within=90
    )
    ctx = _ctx(own_cluster, FailoverInputs(candidate="pg2"))
    Failover().apply(ctx)
    assert ctx.outputs["leader"] == "pg2"
    assert not in_recovery(own_cluster.node("pg2").dsn)
    assert Failover().verify(ctx)
    Resume().apply(_ctx(own_cluster, PauseInputs()))
    own_cluster.wait("pg3 to stream from pg2", lambda: "pg3" in own_cluster.streaming())
