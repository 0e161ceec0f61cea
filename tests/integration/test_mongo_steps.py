"""Each MongoDB step type over the wire, against a replica set played by mockupdb.

pymongo talks to ``MockReplicaSet`` (tests/integration/mongo_fixtures.py) exactly as it
would to mongod: handshakes, server selection, direct connections to members, write
and read concerns. The steps are called directly with a real-clock context, like the
PostgreSQL provider's tests. These tests never skip: mockupdb is a test dependency.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from bson import json_util
from pydantic import ValidationError

from drctl.errors import StepError
from drctl.providers.mongo.elect import Elect, ElectInputs
from drctl.providers.mongo.freeze import Freeze, FreezeInputs
from drctl.providers.mongo.probe import ProbeInputs, WriteProbe
from drctl.providers.mongo.reconfig import MemberChange, Reconfig, ReconfigInputs
from drctl.providers.mongo.session import member_uri, timeouts
from drctl.providers.mongo.status import ReplicaSetStatus, StatusInputs
from drctl.providers.mongo.step_down import StepDown, StepDownInputs, step_down
from drctl.steps.base import Role, StepInputs
from tests.integration.mongo_fixtures import (
    MockReplicaSet,
    RealContext,
    mock_rs,  # noqa: F401
    mock_rs5,  # noqa: F401
    mockup_servers,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _ctx(inputs: StepInputs, rs: MockReplicaSet, **kw: Any) -> RealContext:
    hosts = kw.pop("hosts", None)
    return RealContext(inputs, target=rs.target(hosts), timeout=kw.pop("timeout", 20.0), **kw)


def _command(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The parts of a received command document a test pins (lsid and $db vary)."""
    return {k: doc[k] for k in keys if k in doc}


# -- mongo.rs_status ----------------------------------------------------------------------


def test_rs_status_publishes_members_optimes_and_lag(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """On a healthy set the status step names the primary, measures each member's lag and sees a majority."""
    a, b, c = mock_rs.hosts
    mock_rs.set_lag(c, 4)
    ctx = _ctx(StatusInputs(max_lag_seconds=10), mock_rs)
    assert "primary " + a in (ReplicaSetStatus().check(ctx) or "")
    ReplicaSetStatus().apply(ctx)
    out = ctx.outputs
    assert out["primary"] == a
    assert out["reporter"] == a
    assert out["majority_reachable"] is True
    assert (out["votes_total"], out["votes_reachable"]) == (3, 3)
    assert out["reference"] == "primary"
    assert (out["lag_member"], out["lag_seconds"]) == (c, 4.0)
    by_name = {m["name"]: m for m in out["members"]}
    assert [by_name[h]["state"] for h in (a, b, c)] == ["PRIMARY", "SECONDARY", "SECONDARY"]
    assert by_name[b]["lag_seconds"] == 0.0
    assert by_name[c]["optime"]["ts"] == by_name[a]["optime"]["ts"] - 4
    assert by_name[a]["optime_date"].endswith("Z")
    assert ReplicaSetStatus().verify(ctx)

    chosen = _ctx(StatusInputs(member=b, max_lag_seconds=1), mock_rs)
    ReplicaSetStatus().apply(chosen)
    assert (chosen.outputs["lag_member"], chosen.outputs["lag_seconds"]) == (b, 0.0)


def test_rs_status_fails_beyond_max_lag(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A secondary further behind than max_lag_seconds fails the step and verify, after publishing the figures."""
    _a, b, c = mock_rs.hosts
    mock_rs.set_lag(b, 30)
    ctx = _ctx(StatusInputs(max_lag_seconds=5), mock_rs)
    with pytest.raises(StepError, match=rf"{b} is 30s behind the primary \(limit 5s\)"):
        ReplicaSetStatus().apply(ctx)
    assert ctx.outputs["lag_seconds"] == 30.0
    assert not ReplicaSetStatus().verify(ctx)
    ReplicaSetStatus().apply(_ctx(StatusInputs(member=c, max_lag_seconds=5), mock_rs))
    with pytest.raises(StepError, match="is not a member of replica set rs0"):
        ReplicaSetStatus().apply(_ctx(StatusInputs(member="nowhere:1"), mock_rs))


def test_rs_status_without_a_majority(mock_rs5: MockReplicaSet) -> None:  # noqa: F811
    """With the primary's region down no majority answers: the step fails unless told not to, and measures against the freshest survivor."""
    a, b, c, d, e = mock_rs5.hosts
    mock_rs5.set_lag(e, 7)
    mock_rs5.down(a, b, c)
    assert mock_rs5.primary is None
    with pytest.raises(StepError, match="only 2 of 5 votes answer: no majority"):
        ReplicaSetStatus().apply(_ctx(StatusInputs(), mock_rs5, hosts=[d, e]))
    ctx = _ctx(StatusInputs(require_majority=False, member=e), mock_rs5, hosts=[d, e])
    ReplicaSetStatus().apply(ctx)
    out = ctx.outputs
    assert out["primary"] is None
    assert out["majority_reachable"] is False
    assert out["reference"] == "freshest member"
    assert out["freshest"] == d
    assert (out["lag_member"], out["lag_seconds"]) == (e, 7.0)
    lost = [m for m in out["members"] if m["name"] in (a, b, c)]
    assert {(m["healthy"], m["lag_seconds"], m["optime"]) for m in lost} == {(False, None, None)}
    with pytest.raises(StepError, match=f"{a} is .* does not answer"):
        ReplicaSetStatus().apply(
            _ctx(StatusInputs(require_majority=False, member=a), mock_rs5, hosts=[d, e])
        )


def test_rs_status_connection_dropped_mid_command(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """Connections the servers close during replSetGetStatus fail the step with a clear reason."""
    mock_rs.drop_next("replSetGetStatus", 3)
    with pytest.raises(StepError, match="connection lost"):
        ReplicaSetStatus().apply(_ctx(StatusInputs(), mock_rs))


# -- mongo.step_down ----------------------------------------------------------------------


def test_step_down_sends_catch_up_period_and_verifies(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """step_down sends replSetStepDown with secondaryCatchUpPeriodSecs to the primary, which stops being writable; undo unfreezes it."""
    a, b, c = mock_rs.hosts
    ctx = _ctx(StepDownInputs(step_down_seconds=30, catch_up_seconds=5), mock_rs)
    assert (StepDown().check(ctx) or "").startswith(f"step down {a}; electable: {b}, {c}")
    StepDown().apply(ctx)
    [(host, doc)] = mock_rs.sent("replSetStepDown")
    assert host == a
    assert _command(doc, "replSetStepDown", "secondaryCatchUpPeriodSecs", "force") == {
        "replSetStepDown": 30,
        "secondaryCatchUpPeriodSecs": 5,
    }
    assert ctx.recorded == {"old_primary": a}
    assert ctx.outputs == {"old_primary": a}
    assert StepDown().verify(ctx)
    assert mock_rs.wait_for_primary() in (b, c)
    assert mock_rs.frozen(a)
    StepDown().undo(ctx)
    assert _command(mock_rs.sent("replSetFreeze")[-1][1], "replSetFreeze") == {"replSetFreeze": 0}
    assert not mock_rs.frozen(a)


def test_step_down_dropped_connection_is_expected(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A server that closes the step-down's connection (as before 4.2) still passes: verify decides."""
    a, _b, _c = mock_rs.hosts
    mock_rs.step_down_drops_connection = True
    ctx = _ctx(StepDownInputs(), mock_rs)
    StepDown().apply(ctx)
    assert "closed the connection while stepping down (expected)" in ctx.lines[-1]
    assert StepDown().verify(ctx)
    assert mock_rs.primary != a


def test_step_down_dropped_before_it_took_effect_fails_verify(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A connection dropped before the server acted leaves the primary writable, and verify says so."""
    a, _b, _c = mock_rs.hosts
    mock_rs.drop_next("replSetStepDown")
    ctx = _ctx(StepDownInputs(), mock_rs, timeout=8.0)
    StepDown().apply(ctx)
    assert mock_rs.primary == a
    assert not StepDown().verify(ctx)


def test_step_down_refused_without_an_electable_secondary(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """With every secondary too far behind to catch up (or frozen), the server refuses and the step fails."""
    a, b, c = mock_rs.hosts
    mock_rs.set_lag(b, 60)
    mock_rs.set_lag(c, 60)
    ctx = _ctx(StepDownInputs(catch_up_seconds=10), mock_rs)
    with pytest.raises(
        StepError,
        match=r"refused to step down: no electable secondary caught up within 10s .*ExceededTimeLimit \(262\)",
    ):
        StepDown().apply(ctx)
    assert ctx.recorded == {"old_primary": a}
    assert mock_rs.primary == a
    assert not StepDown().verify(ctx)

    mock_rs.set_lag(b, 0)
    Freeze().apply(_ctx(FreezeInputs(members=[b]), mock_rs))
    with pytest.raises(StepError, match="no electable secondary"):
        StepDown().apply(_ctx(StepDownInputs(catch_up_seconds=10), mock_rs))


def test_step_down_check_fails_when_nothing_can_be_elected(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """check refuses a step-down when no secondary that answers could be elected (down or priority 0)."""
    _a, b, c = mock_rs.hosts
    mock_rs.down(b)
    mock_rs.set_priority(c, 0)
    with pytest.raises(StepError, match="no secondary that answers can be elected"):
        StepDown().check(_ctx(StepDownInputs(), mock_rs))


def test_step_down_of_a_member_that_is_not_primary_does_nothing(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """Naming a member that is already a secondary sends no command and verifies at once."""
    _a, b, _c = mock_rs.hosts
    ctx = _ctx(StepDownInputs(member=b), mock_rs)
    assert StepDown().check(ctx) == f"do nothing: {b} is not primary"
    StepDown().apply(ctx)
    assert mock_rs.sent("replSetStepDown") == []
    assert StepDown().verify(ctx)


def test_step_down_reply_not_primary_is_no_failure(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A member that answers replSetStepDown with NotWritablePrimary was no longer primary: reported, not failed."""
    _a, b, _c = mock_rs.hosts
    line = step_down(mock_rs.uri(), _ctx(StepDownInputs(), mock_rs), b, 60, 10)
    assert line == f"{b} was no longer primary when asked to step down"
    [(host, _doc)] = mock_rs.sent("replSetStepDown")
    assert host == b


def test_step_down_inputs_need_a_longer_step_down_than_catch_up() -> None:
    """A step-down period not longer than the catch-up period is an input error (the server refuses it)."""
    with pytest.raises(ValidationError, match="step_down_seconds must be longer"):
        StepDownInputs(step_down_seconds=10, catch_up_seconds=10)


# -- mongo.freeze -------------------------------------------------------------------------


def test_freeze_verify_and_undo(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """freeze sends replSetFreeze to each member and records it; verify holds until a restart; undo unfreezes."""
    _a, b, c = mock_rs.hosts
    ctx = _ctx(FreezeInputs(members=[b, c], seconds=90), mock_rs)
    Freeze().apply(ctx)
    assert [(h, _command(d, "replSetFreeze")) for h, d in mock_rs.sent("replSetFreeze")] == [
        (b, {"replSetFreeze": 90}),
        (c, {"replSetFreeze": 90}),
    ]
    assert set(ctx.recorded["frozen"]) == {b, c}
    assert set(ctx.outputs["frozen_until"]) == {b, c}
    assert mock_rs.frozen(b) and mock_rs.frozen(c)
    assert Freeze().verify(ctx)

    mock_rs.restart(c)
    later = _ctx(
        FreezeInputs(members=[b, c], seconds=90), mock_rs, recorded=copy.deepcopy(ctx.recorded)
    )
    later.recorded["frozen"][c]["at"] -= 30  # acknowledged 30 s before a restart
    assert not Freeze().verify(later)
    assert not Freeze().verify(_ctx(FreezeInputs(members=[b, c]), mock_rs))  # nothing recorded

    Freeze().undo(ctx)
    assert [_command(d, "replSetFreeze") for _h, d in mock_rs.sent("replSetFreeze")[-2:]] == [
        {"replSetFreeze": 0},
        {"replSetFreeze": 0},
    ]
    assert not mock_rs.frozen(b)


def test_freeze_refuses_the_primary(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A primary cannot be frozen: apply fails before sending anything; a dry run only warns."""
    a, _b, _c = mock_rs.hosts
    with pytest.raises(StepError, match=f"{a} is primary"):
        Freeze().apply(_ctx(FreezeInputs(members=[a]), mock_rs))
    assert mock_rs.sent("replSetFreeze") == []
    note = Freeze().check(_ctx(FreezeInputs(members=[a]), mock_rs, dry_run=True))
    assert note == f"{a} is primary now: it must have stepped down by then"


def test_freeze_unreachable_member_fails(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A member that does not answer fails the step within the URI's selection timeout."""
    _a, _b, c = mock_rs.hosts
    mock_rs.down(c)
    with pytest.raises(StepError, match=f"{c}: no answer"):
        Freeze().apply(_ctx(FreezeInputs(members=[c]), mock_rs))


# -- mongo.elect --------------------------------------------------------------------------


def test_elect_raises_priority_steps_down_and_waits(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """elect reconfigures the member's priority above the rest, steps the primary down and waits until the member is primary."""
    a, _b, c = mock_rs.hosts
    mock_rs.set_lag(c, 3)
    ctx = _ctx(ElectInputs(member=c, catch_up_seconds=5, step_down_seconds=30), mock_rs)
    assert Elect().check(ctx) == f"make {c} (SECONDARY, 3s behind) primary; priority → 2"
    Elect().apply(ctx)
    assert mock_rs.primary == c
    assert mock_rs.config_member(c)["priority"] == 2.0  # type: ignore[index]
    [(host, doc)] = mock_rs.sent("replSetReconfig")
    assert (
        host == a
        and doc["replSetReconfig"]["version"] == 2
        and "term" not in doc["replSetReconfig"]
    )
    [(host, doc)] = mock_rs.sent("replSetStepDown")
    assert host == a
    assert _command(doc, "replSetStepDown", "secondaryCatchUpPeriodSecs") == {
        "replSetStepDown": 30,
        "secondaryCatchUpPeriodSecs": 5,
    }
    assert ctx.recorded["previous_priorities"] == dict.fromkeys(mock_rs.hosts, 1.0)
    assert ctx.outputs == {"primary": c, "stepped_down": [a]}
    assert Elect().verify(ctx)

    Elect().undo(ctx)
    assert mock_rs.config_member(c)["priority"] == 1.0  # type: ignore[index]


def test_elect_steps_down_whoever_wins_instead(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """When another member wins the election after the first step-down, elect steps that one down too."""
    a, b, c = mock_rs.hosts
    mock_rs.set_priority(b, 5)  # b would win the election a step-down starts
    ctx = _ctx(ElectInputs(member=c, priority=3), mock_rs)
    Elect().apply(ctx)
    assert mock_rs.primary == c
    assert [h for h, _ in mock_rs.sent("replSetStepDown")][:1] == [a]
    assert Elect().verify(ctx)


def test_elect_member_that_is_already_primary(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A member that is primary already keeps it: its priority is raised, nothing is stepped down."""
    a, _b, _c = mock_rs.hosts
    ctx = _ctx(ElectInputs(member=a), mock_rs)
    assert Elect().check(ctx) == f"do nothing: {a} is primary already; priority → 2"
    Elect().apply(ctx)
    assert mock_rs.sent("replSetStepDown") == []
    assert ctx.outputs["stepped_down"] == []
    assert Elect().verify(ctx)


def test_elect_refuses_members_that_cannot_win(mock_rs5: MockReplicaSet) -> None:  # noqa: F811
    """A member not in the config, without a vote, or hidden cannot be elected: the step fails before changing anything."""
    _a, b, c, d, _e = mock_rs5.hosts
    Reconfig().apply(
        _ctx(ReconfigInputs(members=[MemberChange(host=b, votes=0, priority=0)]), mock_rs5)
    )
    Reconfig().apply(
        _ctx(ReconfigInputs(members=[MemberChange(host=c, hidden=True, priority=0)]), mock_rs5)
    )
    before = len(mock_rs5.sent("replSetReconfig"))
    for member, reason in (
        (b, "no vote"),
        (c, "hidden"),
        ("nowhere:1", "not in the replica-set config"),
    ):
        with pytest.raises(StepError, match=reason):
            Elect().apply(_ctx(ElectInputs(member=member), mock_rs5))
        with pytest.raises(StepError, match=reason):
            Elect().check(_ctx(ElectInputs(member=member), mock_rs5))
    assert len(mock_rs5.sent("replSetReconfig")) == before
    assert not Elect().verify(_ctx(ElectInputs(member=d), mock_rs5))


def test_elect_fails_when_the_member_cannot_catch_up(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A member too far behind to catch up makes the primary refuse to step down, and elect fails saying so."""
    a, b, c = mock_rs.hosts
    mock_rs.set_lag(b, 60)
    mock_rs.set_lag(c, 60)
    with pytest.raises(StepError, match="refused to step down"):
        Elect().apply(_ctx(ElectInputs(member=c, catch_up_seconds=5), mock_rs))
    assert mock_rs.primary == a


# -- mongo.reconfig -----------------------------------------------------------------------


def test_reconfig_on_the_primary_records_then_changes(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A plain reconfig records the previous config, sends version + 1 to the primary, verifies, and undo puts it back."""
    a, _b, c = mock_rs.hosts
    inputs = ReconfigInputs(members=[MemberChange(host=c, priority=0, votes=0)])
    ctx = _ctx(inputs, mock_rs)
    assert Reconfig().check(ctx) == f"have {a} take config version 2: {c} priority 0 votes 0"
    Reconfig().apply(ctx)
    previous = json_util.loads(ctx.recorded["previous_config"])
    assert previous["version"] == 1
    assert {m["host"]: m["votes"] for m in previous["members"]}[c] == 1
    [(host, doc)] = mock_rs.sent("replSetReconfig")
    assert host == a and "force" not in doc
    assert doc["replSetReconfig"]["version"] == 2
    assert mock_rs.config_member(c) == {**mock_rs.config_member(c), "priority": 0.0, "votes": 0}  # type: ignore[dict-item]
    assert ctx.outputs == {"receiver": a, "version": 2}
    assert Reconfig().verify(ctx)
    assert Reconfig().check(ctx) == f"do nothing: already in effect on {a} (config version 2)"

    Reconfig().undo(ctx)
    assert mock_rs.config_member(c)["votes"] == 1  # type: ignore[index]
    assert mock_rs.config["version"] == 3
    assert not Reconfig().verify(ctx)


def test_reconfig_server_rejections_are_reported(mock_rs5: MockReplicaSet) -> None:  # noqa: F811
    """The server's own rules come back as the step's error: two voters changed at once, a member the config lacks."""
    _a, _b, _c, d, e = mock_rs5.hosts
    two = ReconfigInputs(members=[MemberChange(host=h, priority=0, votes=0) for h in (d, e)])
    with pytest.raises(
        StepError,
        match=r"NewReplicaSetConfigurationIncompatible \(103\): Non force replica set reconfig",
    ):
        Reconfig().apply(_ctx(two, mock_rs5))
    with pytest.raises(StepError, match="nowhere:1 is not in the replica-set config"):
        Reconfig().apply(
            _ctx(ReconfigInputs(members=[MemberChange(host="nowhere:1", priority=2)]), mock_rs5)
        )


def test_reconfig_without_force_needs_a_primary(mock_rs5: MockReplicaSet) -> None:  # noqa: F811
    """Without a majority there is no primary to take a plain reconfig: the step fails after its bounded wait."""
    a, b, c, d, e = mock_rs5.hosts
    mock_rs5.down(a, b, c)
    ctx = _ctx(ReconfigInputs(remove=[a, b, c]), mock_rs5, hosts=[d, e], timeout=3.0)
    with pytest.raises(StepError, match="no primary"):
        Reconfig().apply(ctx)
    assert mock_rs5.sent("replSetReconfig") == []


def test_forced_reconfig_after_losing_a_region(mock_rs5: MockReplicaSet) -> None:  # noqa: F811
    """A forced reconfig on a survivor removes the lost region's members; the survivors elect a primary and take majority writes."""
    a, b, c, d, e = mock_rs5.hosts
    mock_rs5.down(a, b, c)
    inputs = ReconfigInputs(remove=[a, b, c], force=True, accept_data_loss=True)
    ctx = _ctx(inputs, mock_rs5, hosts=[d, e])
    assert (Reconfig().check(ctx) or "").startswith(f"have {d} take config version 2")
    Reconfig().apply(ctx)
    [(host, doc)] = mock_rs5.sent("replSetReconfig")
    assert host == d and doc["force"] is True
    assert [m["host"] for m in doc["replSetReconfig"]["members"]] == [d, e]
    assert ctx.recorded["receiver"] == d
    assert Reconfig().verify(ctx)
    assert mock_rs5.wait_for_primary() in (d, e)
    probe = _ctx(ProbeInputs(deadline=5.0), mock_rs5, hosts=[d, e])
    WriteProbe().apply(probe)
    assert probe.outputs["attempts"] >= 1
    assert not Reconfig().undoable(inputs)


def test_forced_reconfig_is_refused_while_a_primary_answers(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """force on a set whose primary still answers is refused: a majority is there to reconfigure normally."""
    a, _b, c = mock_rs.hosts
    inputs = ReconfigInputs(remove=[c], force=True, accept_data_loss=True, via=a)
    with pytest.raises(StepError, match=f"refusing a forced reconfig: {a} is primary"):
        Reconfig().apply(_ctx(inputs, mock_rs))
    assert mock_rs.sent("replSetReconfig") == []


def test_reconfig_inputs_guard_force_and_member_settings() -> None:
    """force needs accept_data_loss; votes 0 and hidden need priority 0; changes must exist and not repeat."""
    with pytest.raises(ValidationError, match="needs accept_data_loss: true"):
        ReconfigInputs(remove=["a:1"], force=True)
    with pytest.raises(ValidationError, match="votes: 0 needs priority: 0"):
        MemberChange(host="a:1", votes=0)
    with pytest.raises(ValidationError, match="hidden member needs priority: 0"):
        MemberChange(host="a:1", hidden=True, priority=1)
    with pytest.raises(ValidationError, match="nothing to change"):
        ReconfigInputs()
    with pytest.raises(ValidationError, match="named more than once: a:1"):
        ReconfigInputs(members=[MemberChange(host="a:1", priority=2)], remove=["a:1"])
    with pytest.raises(ValidationError, match="via is for a forced reconfig"):
        ReconfigInputs(remove=["a:1"], via="b:1")
    forced = ReconfigInputs(remove=["a:1"], force=True, accept_data_loss=True)
    assert Reconfig().step_roles(forced) == {Role.MUTATING, Role.PROMOTE}
    assert Reconfig().step_roles(ReconfigInputs(remove=["a:1"])) == {Role.MUTATING}


# -- mongo.write_probe --------------------------------------------------------------------


def test_write_probe_uses_majority_concerns(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """The probe inserts with w: majority, j: true and a wtimeout, and reads back with read concern majority."""
    a, _b, _c = mock_rs.hosts
    ctx = _ctx(ProbeInputs(wtimeout=2.5), mock_rs)
    WriteProbe().apply(ctx)
    [(host, insert)] = mock_rs.sent("insert")
    assert host == a
    assert insert["writeConcern"] == {"w": "majority", "j": True, "wtimeout": 2500}
    assert insert["documents"][0]["run_id"] == "test-run"
    [(_host, find)] = mock_rs.sent("find")
    assert find["readConcern"] == {"level": "majority"}
    assert find["filter"] == {"_id": insert["documents"][0]["_id"]}
    assert ctx.outputs["attempts"] == 1 and ctx.outputs["primary"] == a
    assert ctx.outputs["latency_ms"] >= 0


def test_write_probe_write_concern_timeout(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A write concern that times out is retried until the deadline, then fails naming the server's error."""
    mock_rs.write_concern_timeout = True
    ctx = _ctx(ProbeInputs(deadline=1.0, interval=0.2), mock_rs)
    with pytest.raises(
        StepError,
        match=r"no majority-acknowledged write after \d+ tries .*waiting for replication timed out",
    ):
        WriteProbe().apply(ctx)
    assert 2 <= len(mock_rs.sent("insert")) <= 7


def test_write_probe_without_a_primary(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """With no majority there is no primary: the probe fails after its deadline without hanging."""
    a, b, c = mock_rs.hosts
    mock_rs.down(a, b)
    with pytest.raises(StepError, match="no answer"):
        WriteProbe().apply(_ctx(ProbeInputs(deadline=1.0, interval=0.5), mock_rs, hosts=[c]))


def test_write_probe_read_back_missing(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """An acknowledged write that majority reads do not return fails the probe."""
    mock_rs.lose_writes = True
    with pytest.raises(
        StepError, match="read back with read concern majority differs or is missing"
    ):
        WriteProbe().apply(_ctx(ProbeInputs(deadline=0.5, interval=0.2), mock_rs))


def test_write_probe_survives_a_dropped_connection(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A connection dropped in the middle of the insert is retried and the probe still succeeds."""
    mock_rs.drop_next("insert")
    ctx = _ctx(ProbeInputs(deadline=5.0, interval=0.2), mock_rs)
    WriteProbe().apply(ctx)
    assert len(mock_rs.sent("insert")) == 2


def test_write_probe_not_primary_reply(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """A member that answers NotWritablePrimary to the insert (a step-down raced it) is retried until the deadline."""
    a, _b, _c = mock_rs.hosts
    inputs = ProbeInputs(deadline=0.6, interval=0.2)
    ctx = RealContext(
        inputs, target={"type": "mongo", "uri": f"mongodb://{a}/?directConnection=true"}, timeout=10
    )
    mock_rs.member(a).state = "SECONDARY"
    mock_rs.member(a).frozen_until = 1e12
    with pytest.raises(StepError, match="not primary"):
        WriteProbe().apply(ctx)


# -- check is read-only -------------------------------------------------------------------

MUTATING_COMMANDS = ("replSetStepDown", "replSetFreeze", "replSetReconfig", "insert")


def test_every_check_is_read_only(mock_rs5: MockReplicaSet) -> None:  # noqa: F811
    """The checks of all six step types send no command that changes the set, forced reconfig included."""
    a, b, c, d, e = mock_rs5.hosts
    checks: list[tuple[Any, StepInputs]] = [
        (ReplicaSetStatus(), StatusInputs(member=b, max_lag_seconds=5)),
        (StepDown(), StepDownInputs()),
        (Freeze(), FreezeInputs(members=[b, c])),
        (Elect(), ElectInputs(member=c)),
        (Reconfig(), ReconfigInputs(members=[MemberChange(host=e, priority=0.5)])),
    ]
    for step_type, inputs in checks:
        assert step_type.check(_ctx(inputs, mock_rs5))
    assert WriteProbe().check(_ctx(ProbeInputs(), mock_rs5)) is None
    mock_rs5.down(a, b, c)
    forced = ReconfigInputs(remove=[a, b, c], force=True, accept_data_loss=True)
    assert "take config version" in (Reconfig().check(_ctx(forced, mock_rs5, hosts=[d, e])) or "")
    assert all(mock_rs5.sent(name) == [] for name in MUTATING_COMMANDS)
    assert mock_rs5.config["version"] == 1


# -- session ------------------------------------------------------------------------------


def test_member_uri_keeps_credentials_and_options() -> None:
    """A member's URI keeps the set URI's credentials, database and options, pointed at one host."""
    uri = "mongodb://us%40r:p%3Aw@h1:27017,h2:27017/app?replicaSet=rs0&authSource=admin&tls=false"
    assert member_uri(uri, "h2:27017") == (
        "mongodb://us%40r:p%3Aw@h2:27017/app?replicaSet=rs0&authSource=admin&tls=false"
    )
    assert member_uri("mongodb://h1,h2", "[::1]:27018") == "mongodb://[::1]:27018/"
    with pytest.raises(StepError, match="not a mongodb:// or mongodb\\+srv:// URI"):
        member_uri("postgres://h1", "h1:1")


def test_member_uri_from_an_srv_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SRV URI becomes a direct mongodb:// one with TLS and the TXT record's authSource and replicaSet."""
    from pymongo import uri_parser

    txt = {"options": {"authSource": "admin", "replicaSet": "atlas-abc"}}
    monkeypatch.setattr(uri_parser, "parse_uri", lambda uri: txt)
    uri = "mongodb+srv://u:p@cluster0.example.net/app?retryWrites=true&srvMaxHosts=2"
    assert member_uri(uri, "shard-00-01.example.net:27017") == (
        "mongodb://u:p@shard-00-01.example.net:27017/app"
        "?retryWrites=true&tls=true&authSource=admin&replicaSet=atlas-abc"
    )


def test_timeouts_are_bounded_by_the_step_and_the_uri() -> None:
    """Every client timeout is at most the step's budget, and the URI's smaller ones win."""
    assert timeouts("mongodb://h/", 30.0) == {
        "serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000, "socketTimeoutMS": 30000,
    }  # fmt: skip
    assert timeouts("mongodb://h/?serverSelectionTimeoutMS=800&socketTimeoutMS=2000", 30.0) == {
        "serverSelectionTimeoutMS": 800, "connectTimeoutMS": 5000, "socketTimeoutMS": 2000,
    }  # fmt: skip
    assert timeouts("mongodb://h/", 1.5)["socketTimeoutMS"] == 1500
