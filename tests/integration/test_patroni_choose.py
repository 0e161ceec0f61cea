"""postgres.choose_primary on servers Patroni manages: Patroni's view beside drctl's, and its refusals.

One three-node cluster for the module; each test puts back what it changes (a member's
tags, synchronous_mode). The choice is read-only, so Patroni need not be paused.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from drctl.errors import StepError
from drctl.providers.postgres.choose import CandidateInputs, ChooseInputs, ChoosePrimary
from tests.integration.patroni_cluster import (
    PatroniCluster,
    shared_patroni,  # noqa: F401
)
from tests.integration.pg_sandbox import RealContext, execute, one

pytestmark = pytest.mark.integration


@pytest.fixture
def healthy(shared_patroni: PatroniCluster) -> Iterator[PatroniCluster]:  # noqa: F811
    """The shared cluster with a leader and two streaming replicas, before and after."""
    shared_patroni.wait_healthy()
    yield shared_patroni
    shared_patroni.wait_healthy()


def _context(
    cluster: PatroniCluster,
    prefer: str | None = None,
    patroni: str = "cluster",
    extra: dict[str, Any] | None = None,
    **kw: Any,
) -> RealContext[Any, Any]:
    """A context for choose_primary over the two replicas, their targets managed_by ``patroni``."""
    leader = cluster.leader()
    assert leader is not None
    replicas = sorted(n.name for n in cluster.nodes if n.name != leader)
    targets: dict[str, Any] = {"cluster": cluster.target(), **(extra or {})}
    for node in cluster.nodes:
        targets[node.name] = cluster.postgres_target(node, patroni if node.name != leader else None)
    inputs = ChooseInputs(
        candidates=[CandidateInputs(target=n) for n in replicas],
        old_primary=leader,
        prefer=prefer,
        **kw,
    )
    return RealContext(inputs, target=None, targets=targets, timeout=60.0)


def _choose(cluster: PatroniCluster, **kw: Any) -> RealContext[Any, Any]:
    """choose_primary run as ``_context`` builds it; the context, once it chose."""
    ctx = _context(cluster, **kw)
    ChoosePrimary().apply(ctx)
    return ctx


def _refused(cluster: PatroniCluster, **kw: Any) -> tuple[str, list[str]]:
    """The refusal's text and the log lines of a choice that must be refused."""
    ctx = _context(cluster, **kw)
    with pytest.raises(StepError) as err:
        ChoosePrimary().apply(ctx)
    return err.value.message, ctx.lines


def _set_nofailover(cluster: PatroniCluster, name: str, on: bool) -> None:
    node = cluster.node(name)
    config = json.loads(node.config.read_text())
    config.setdefault("tags", {})["nofailover"] = on
    node.config.write_text(json.dumps(config, indent=2))
    assert cluster.rest(node, "POST", "/reload") in (200, 202)

    def seen() -> bool:
        member = next(m for m in (cluster.cluster() or {}).get("members", []) if m["name"] == name)
        return bool(member.get("tags", {}).get("nofailover")) is on

    cluster.wait(f"{name}'s nofailover tag to be {on} in /cluster", seen)


def test_a_member_tagged_nofailover_in_patroni_is_refused_unless_acknowledged(
    healthy: PatroniCluster,
) -> None:
    """The choice of a member Patroni tags nofailover is refused naming the tag; acknowledged, it is made, logged and published."""
    leader = healthy.leader()
    tagged, other = sorted(n.name for n in healthy.nodes if n.name != leader)
    _set_nofailover(healthy, tagged, True)
    try:
        text, logs = _refused(healthy, prefer=tagged)
        assert f"refusing to choose {tagged}: Patroni (cluster) would not promote" in text
        assert "tagged nofailover in Patroni" in text
        assert f"Patroni would promote {other}" in text
        assert "accept_patroni_refusal: true" in text
        rows = [line for line in logs if line.startswith(f"{tagged}: ")]
        assert rows and "patroni: replica streaming lag " in rows[0] and "nofailover" in rows[0]
        assert "Patroni would refuse it: tagged nofailover in Patroni" in rows[0]

        ctx = _choose(healthy, prefer=tagged, accept_patroni_refusal=True)
        assert ctx.outputs["target"] == tagged
        accepted = ctx.outputs["patroni_refusal_accepted"]
        assert accepted["target"] == tagged
        assert accepted["objections"] == ["tagged nofailover in Patroni"]
        assert accepted["patroni"]["nofailover"] is True
        assert accepted["patroni"]["maximum_lag_on_failover"] == 1048576
        assert any(f"accept_patroni_refusal: {tagged} chosen although" in m for m in ctx.lines)
        table = {r["name"]: r for r in ctx.outputs["table"]}
        assert table[other]["patroni"]["objections"] == []
        assert table[other]["reason"].endswith("; Patroni has no objection")
    finally:
        _set_nofailover(healthy, tagged, False)
    # With the tag gone Patroni has nothing against it: no acknowledgement needed.
    ctx = _choose(healthy, prefer=tagged)
    assert ctx.outputs["target"] == tagged and "patroni_refusal_accepted" not in ctx.outputs


def test_in_synchronous_mode_only_patronis_sync_standby_passes(healthy: PatroniCluster) -> None:
    """With synchronous_mode on, choosing the plain replica is refused naming Patroni's sync standby; the sync standby passes."""
    first = healthy.nodes[0]
    assert healthy.rest(first, "PATCH", "/config", {"synchronous_mode": True}) == 200

    def sync_standby() -> str | None:
        members = (healthy.cluster() or {}).get("members", [])
        return next((m["name"] for m in members if m.get("role") == "sync_standby"), None)

    try:
        healthy.wait("Patroni to name a sync standby", lambda: sync_standby() is not None)
        sync = sync_standby()
        assert sync is not None
        leader = healthy.leader()
        plain = next(n.name for n in healthy.nodes if n.name not in (sync, leader))
        text, _ = _refused(healthy, prefer=plain)
        assert f"not a sync standby with synchronous_mode on (Patroni's: {sync})" in text
        ctx = _choose(healthy, prefer=sync)
        assert ctx.outputs["target"] == sync and "patroni_refusal_accepted" not in ctx.outputs
        row = next(r for r in ctx.outputs["table"] if r["name"] == sync)
        assert row["patroni"]["sync_standby"] is True
        assert row["patroni"]["synchronous_mode"] == "on"
    finally:
        assert healthy.rest(first, "PATCH", "/config", {"synchronous_mode": False}) == 200
        healthy.wait("no sync standby any more", lambda: sync_standby() is None)


def test_a_member_lagging_over_maximum_lag_on_failover_is_refused_unless_acknowledged(
    healthy: PatroniCluster,
) -> None:
    """A replica whose walreceiver is stopped lags in Patroni's view past a 1-byte maximum_lag_on_failover: refused, then acknowledged."""
    leader = healthy.leader()
    assert leader is not None
    stalled = max(n.name for n in healthy.nodes if n.name != leader)
    node, first = healthy.node(stalled), healthy.nodes[0]
    # A stopped (not killed) walreceiver is a stalled link: nothing restarts it, nothing arrives.
    pid = int(one(node.dsn, "SELECT pid FROM pg_stat_wal_receiver"))
    assert healthy.rest(first, "PATCH", "/config", {"maximum_lag_on_failover": 1}) == 200
    os.kill(pid, signal.SIGSTOP)
    try:
        execute(healthy.node(leader).dsn, "CREATE TABLE IF NOT EXISTS choose_lag (n int)",
                "INSERT INTO choose_lag SELECT generate_series(1, 1000)")  # fmt: skip

        def lag() -> int:
            members = (healthy.cluster() or {}).get("members", [])
            found = next(m.get("lag") for m in members if m["name"] == stalled)
            return found if isinstance(found, int) else 0

        healthy.wait(f"Patroni to see {stalled} lag", lambda: lag() > 1)
        text, _ = _refused(healthy, prefer=stalled)
        assert f"refusing to choose {stalled}" in text
        assert "bytes in Patroni, over maximum_lag_on_failover 1" in text
        ctx = _choose(healthy, prefer=stalled, accept_patroni_refusal=True)
        accepted = ctx.outputs["patroni_refusal_accepted"]
        assert accepted["target"] == stalled and accepted["patroni"]["lag"] > 1
        assert "over maximum_lag_on_failover 1" in accepted["objections"][0]
    finally:
        os.kill(pid, signal.SIGCONT)
        assert healthy.rest(first, "PATCH", "/config", {"maximum_lag_on_failover": None}) == 200


def test_a_silent_patroni_is_logged_and_the_choice_made_on_drctls_facts(
    healthy: PatroniCluster,
) -> None:
    """When no member of the managing Patroni answers, the log says so and drctl chooses on its own facts."""
    silent = {"type": "patroni", "members": ["http://127.0.0.1:61999"]}
    ctx = _choose(healthy, patroni="silent", extra={"silent": silent})
    assert ctx.outputs["target"] in {n.name for n in healthy.nodes}
    assert any(
        "Patroni (silent) does not answer" in m and "judged on drctl's facts" in m
        for m in ctx.lines
    )
    for row in ctx.outputs["table"]:
        assert row["patroni"]["problem"] and row["patroni"]["objections"] == []
        assert row["reason"].endswith("; Patroni (silent) did not answer: judged on drctl's facts")
