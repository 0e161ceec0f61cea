"""Patroni's JSON rebuilt as classes, and the judgements made on them (pure, offline)."""

from __future__ import annotations

from typing import Any

import pytest

from drctl.errors import StepError
from drctl.providers.patroni.api import ClusterView, ConfigView, NodeView
from drctl.providers.patroni.base import Views
from drctl.providers.patroni.pause import split
from drctl.providers.patroni.status import StatusInputs, problems


def _cluster(*members: dict[str, Any], pause: bool = False) -> ClusterView:
    data: dict[str, Any] = {"members": list(members), "scope": "s"}
    if pause:
        data["pause"] = True
    return ClusterView.from_json(data, "http://x")


def _node(role: str, state: str = "running", pause: bool = True) -> NodeView:
    return NodeView.from_json({"role": role, "state": state, "pause": pause}, "http://x")


LEADER = {"name": "pg1", "role": "leader", "state": "running", "timeline": 2,
          "api_url": "http://127.0.0.1:8008/patroni"}  # fmt: skip
REPLICA = {"name": "pg2", "role": "replica", "state": "streaming", "timeline": 2, "lag": 0,
           "tags": {"nofailover": True}}  # fmt: skip


def test_cluster_view_reads_members_and_strips_the_api_path() -> None:
    """/cluster's members become MemberViews; api_url loses its /patroni suffix; lines name tags."""
    view = _cluster(LEADER, REPLICA, pause=True)
    assert view.paused and view.leader is not None and view.leader.name == "pg1"
    assert view.leader.base_url == "http://127.0.0.1:8008"
    assert (
        view.lines() == "pg1 leader running TL 2; pg2 replica streaming TL 2 lag 0 tags nofailover"
    )


def test_a_body_that_is_not_patronis_is_a_step_error() -> None:
    """An answer without a members list is refused, not half-read."""
    with pytest.raises(StepError, match="not Patroni's cluster view"):
        ClusterView.from_json({"members": "nope"}, "http://x")


def test_resume_waits_while_the_lock_is_on_a_member_that_is_not_the_primary() -> None:
    """split() names the lock holder and the primary when they differ, and is None when they agree."""
    both = _cluster(LEADER, REPLICA)
    moved = Views(both, {"pg1": _node("primary", "stopped"), "pg2": _node("primary")})
    assert "pg1 holds Patroni's leader lock but pg2 runs as primary" in (split(moved) or "")
    agreed = Views(both, {"pg1": _node("primary"), "pg2": _node("replica")})
    assert split(agreed) is None
    unlocked = _cluster({**LEADER, "role": "replica"}, REPLICA)
    assert "no member holds" in (split(Views(unlocked, {"pg2": _node("primary")})) or "")


def test_status_problems_name_what_the_cluster_does_not_meet() -> None:
    """Lag over the limit, an unknown lag, too few streaming and the pause view are each named."""
    view = _cluster(LEADER, REPLICA, {"name": "pg3", "role": "replica", "state": "stopped"})
    seen = Views(view, {"pg1": _node("primary", pause=False), "pg2": None, "pg3": None})
    found = problems(StatusInputs(max_lag_bytes=0, min_streaming=2, paused=True), seen)
    assert "pg3 lags unknown (limit 0)" in found
    assert "1 replicas stream, fewer than 2" in found
    assert "not paused in the view of pg1, pg2, pg3" in found
    assert problems(StatusInputs(), seen) == []


def test_failover_tags_and_config_read_as_patroni_reads_them() -> None:
    """nofailover wins over failover_priority, priority 0 alone means nofailover; /config's defaults are Patroni's."""
    member = _cluster(LEADER, {**REPLICA, "tags": {"failover_priority": 0}}).member("pg2")
    assert member is not None and member.nofailover and member.failover_priority == 0
    both = _cluster({**REPLICA, "tags": {"nofailover": False, "failover_priority": 0}})
    assert not both.members[0].nofailover
    sync = _cluster({**REPLICA, "role": "quorum_standby", "tags": {}}).members[0]
    assert sync.sync_standby and not sync.nofailover and sync.failover_priority is None
    assert ConfigView.from_json({}, "http://x") == ConfigView(1048576, "off", False)
    tuned = {
        "maximum_lag_on_failover": 0,
        "synchronous_mode": "on",
        "synchronous_mode_strict": True,
    }
    assert ConfigView.from_json(tuned, "http://x") == ConfigView(0, "on", True)
    assert ConfigView.from_json({"synchronous_mode": "quorum"}, "http://x").synchronous
    with pytest.raises(StepError, match="not Patroni's configuration"):
        ConfigView.from_json(["x"], "http://x")
