"""The candidate ranking rule of postgres.choose_primary, on facts made up for each case."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from drctl.providers.patroni.api import ClusterView, ConfigView
from drctl.providers.postgres.candidate import Candidate, PatroniSays, Verdict, rank
from drctl.providers.postgres.choose import CandidateInputs, _with_patroni


def _c(name: str, received: int, **kw: Any) -> Candidate:
    facts: dict[str, Any] = {
        "reachable": True, "problem": None, "replayed": received, "timeline": 1,
        "replay_paused": False, "nofailover": False, "priority": 0,
    } | kw  # fmt: skip
    return Candidate(name=name, received=received, **facts)


def _rank(*candidates: Candidate, **kw: Any) -> Any:
    options = {"primary_end": None, "accept_unreachable": False, "accept_timeline_split": False}
    return rank(list(candidates), **(options | kw))


def test_timeline_split_refuses_unless_acknowledged() -> None:
    """Candidates on different timelines refuse the choice; acknowledged, only the newest timeline is eligible."""
    a, b = _c("a", 900, timeline=1), _c("b", 500, timeline=2)
    assert any("disagree on timeline (a on 1, b on 2)" in r for r in _rank(a, b).refusals)
    ranking = _rank(a, b, accept_timeline_split=True)
    assert ranking.refusals == ()
    assert ranking.winner is not None and ranking.winner.name == "b"
    loser = next(c for c in ranking.candidates if c.name == "a")
    assert (loser.verdict, loser.reason) == (Verdict.REJECTED, "on timeline 1, not the newest (2)")


def test_received_wins_over_replayed_and_priority_breaks_ties() -> None:
    """More received beats more replayed; at an equal position the higher priority wins."""
    paused = _c("paused", 1000, replayed=100, replay_paused=True)
    replayed = _c("replayed", 900)
    assert _rank(paused, replayed).winner.name == "paused"  # type: ignore[union-attr]
    low, high = _c("low", 1000), _c("high", 1000, priority=5)
    ranking = _rank(low, high, primary_end=1200)
    assert ranking.winner.name == "high"  # type: ignore[union-attr]
    assert ranking.winner.reason == "received as much as low; higher priority (5 > 0)"  # type: ignore[union-attr]
    assert {c.name: c.gap_bytes for c in ranking.candidates} == {"high": 200, "low": 200}


def test_unreachable_candidate_known_behind_does_not_refuse() -> None:
    """A silent candidate the old primary saw flush less than the best is rejected, not a refusal."""
    silent = Candidate(
        name="silent", reachable=False, problem="no answer", received=None, replayed=None,
        timeline=None, replay_paused=False, nofailover=False, priority=0, primary_saw_flushed=400,
    )  # fmt: skip
    ranking = _rank(_c("a", 1000), silent)
    assert ranking.refusals == ()
    assert ranking.winner.name == "a"  # type: ignore[union-attr]
    ahead = Candidate(**{**silent.__dict__, "primary_saw_flushed": 1100})
    assert "saw it flush 100 bytes past" in _rank(_c("a", 1000), ahead).refusals[0]


def _said(member: str, **kw: Any) -> PatroniSays:
    facts: dict[str, Any] = {
        "listed": True, "role": "replica", "state": "streaming", "lag": 0,
        "maximum_lag_on_failover": 1048576, "synchronous_mode": "off",
    } | kw  # fmt: skip
    return PatroniSays("cluster", member, **facts)


def test_patroni_objects_to_nofailover_lag_and_a_non_sync_member() -> None:
    """Patroni's view names each thing that would stop Patroni promoting the member, and nothing else."""
    assert _said("a").objections == ()
    assert _said("a", nofailover=True).objections == ("tagged nofailover in Patroni",)
    zero = _said("a", nofailover=True, failover_priority=0)
    assert zero.objections == ("tagged failover_priority 0 in Patroni",)
    lagging = _said("a", lag=5000, maximum_lag_on_failover=4096)
    assert lagging.objections == ("lags 5000 bytes in Patroni, over maximum_lag_on_failover 4096",)
    assert _said("a", lag=None, maximum_lag_on_failover=0).objections == ()
    replica = _said("a", synchronous_mode="on", sync_standbys=("b",))
    assert replica.objections == ("not a sync standby with synchronous_mode on (Patroni's: b)",)
    # synchronous_mode with no sync standby yet: Patroni takes any healthy member.
    assert _said("a", synchronous_mode="on").objections == ()
    assert (
        _said("a", synchronous_mode="on", sync_standby=True, sync_standbys=("a",)).objections == ()
    )
    assert _said("a", listed=False).objections == ("Patroni (cluster) lists no member 'a'",)
    assert PatroniSays("cluster", "a", problem="no member answered").objections == ()


def test_patroni_view_is_in_every_reason_and_row_but_not_in_the_order() -> None:
    """The winner is drctl's even when Patroni objects; each reason ends with Patroni's verdict; the table holds it."""
    a = _c("a", 1000, patroni=_said("a", nofailover=True))
    b = _c("b", 900, patroni=_said("b"))
    unheard = _c("c", 800, patroni=PatroniSays("cluster", "c", problem="timed out"))
    plain = _c("d", 700)
    ranking = _rank(a, b, unheard, plain)
    reasons = {c.name: c.reason for c in ranking.candidates}
    assert ranking.winner is not None and ranking.winner.name == "a"
    assert ranking.winner.patroni_objections == ("tagged nofailover in Patroni",)
    assert reasons["a"] == (
        "received the most WAL (100 bytes more than b); Patroni would refuse it: "
        "tagged nofailover in Patroni"
    )
    assert reasons["b"].endswith("; Patroni has no objection")
    assert reasons["c"].endswith("; Patroni (cluster) did not answer: judged on drctl's facts")
    assert "Patroni" not in reasons["d"]
    row = ranking.candidates[0].as_json()["patroni"]
    assert isinstance(row, dict) and row["nofailover"] is True
    assert row["objections"] == ["tagged nofailover in Patroni"]
    assert row["maximum_lag_on_failover"] == 1048576
    assert ranking.candidates[-1].as_json()["patroni"] is None


def test_each_managed_candidate_gets_its_members_view_by_application_name() -> None:
    """A managed candidate reads its member (application_name) from /cluster and the cluster's settings from /config; others get nothing."""
    view = ClusterView.from_json({"members": [
        {"name": "pg1", "role": "leader", "state": "running"},
        {"name": "pg2", "role": "sync_standby", "state": "streaming", "lag": 7,
         "tags": {"failover_priority": 3}},
    ]}, "http://x")  # fmt: skip
    heard: Future[tuple[ClusterView, ConfigView] | str] = Future()
    heard.set_result((view, ConfigView(64, "on", True)))
    silent: Future[tuple[ClusterView, ConfigView] | str] = Future()
    silent.set_result("no Patroni member answered GET /cluster")
    asked = {"cluster": heard, "gone": silent}
    managers = {"b": "cluster", "c": "cluster", "d": "gone"}

    b = _with_patroni(
        _c("b", 1), CandidateInputs(target="b", application_name="pg2"), managers, asked
    )
    assert b.patroni == PatroniSays(
        "cluster", "pg2", listed=True, role="sync_standby", state="streaming", lag=7,
        failover_priority=3, sync_standby=True, maximum_lag_on_failover=64,
        synchronous_mode="on", synchronous_mode_strict=True, sync_standbys=("pg2",),
    )  # fmt: skip
    assert b.patroni_objections == ()
    c = _with_patroni(_c("c", 1), CandidateInputs(target="c"), managers, asked)
    assert c.patroni_objections == ("Patroni (cluster) lists no member 'c'",)
    d = _with_patroni(_c("d", 1), CandidateInputs(target="d"), managers, asked)
    assert d.patroni is not None and d.patroni.problem == "no Patroni member answered GET /cluster"
    assert _with_patroni(_c("a", 1), CandidateInputs(target="a"), managers, asked).patroni is None
