"""``patroni.switchover`` and ``patroni.failover``: Patroni moves the leader; drctl proves it."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from drctl.errors import StepError, Unreachable
from drctl.providers.patroni.api import ClusterView
from drctl.providers.patroni.base import EVERY, PatroniContext, PatroniStep, api, refusal
from drctl.steps.base import Role, StepInputs, published


class SwitchoverInputs(StepInputs):
    leader: str | None = Field(
        default=None,
        description="The member expected to lead now; the step refuses if another does. Default: whoever leads.",
    )
    candidate: str | None = Field(
        default=None, description="The member to promote; none lets Patroni choose the healthiest."
    )
    scheduled_at: str | None = Field(
        default=None,
        description="ISO 8601 time with its zone (2026-12-02T03:00:00+00:00): Patroni switches over then; the step waits for it.",
    )
    wait_seconds: float = Field(
        default=60.0, gt=0, le=3600,
        description="After the leader moved, how long the old leader gets to stream from the new one.",
    )  # fmt: skip

    @field_validator("scheduled_at")
    @classmethod
    def _when(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time") from None
        if at.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone: add +00:00 (or Z)")
        return value


class FailoverInputs(StepInputs):
    candidate: str = Field(
        description="The member to promote (Patroni requires one for a failover)."
    )
    wait_seconds: float = Field(
        default=60.0, gt=0, le=3600,
        description="After the candidate leads, how long the other running members get to stream from it.",
    )  # fmt: skip


def _moved(
    ctx: PatroniContext, old: str | None, candidate: str | None, before_tl: int | None
) -> ClusterView | None:
    view = api(ctx).cluster()
    leader = view.leader
    if leader is None or leader.state != "running" or leader.name == old:
        return None
    # The member's timeline in the DCS is refreshed once per HA loop after the promote.
    if before_tl is not None and (leader.timeline is None or leader.timeline <= before_tl):
        return None
    if candidate is not None and leader.name != candidate:
        raise StepError(
            f"Patroni promoted {leader.name}, not the candidate {candidate}. Members: {view.lines()}"
        )
    return view


def _followers_stream(view: ClusterView, old: str | None) -> tuple[bool, str]:
    """Whether the running non-leaders, and ``old`` whatever its state, stream on the new
    leader's timeline (with the reasons when not)."""
    leader = view.leader
    assert leader is not None
    waiting = []
    for m in view.members:
        if m.is_leader:
            continue
        if m.name != old and m.state not in ("streaming", "running"):
            continue  # a member down before the switch is not this step's to prove
        if m.state != "streaming" or (m.timeline is not None and m.timeline != leader.timeline):
            waiting.append(m.line())
    return not waiting, "; ".join(waiting)


def prove(ctx: PatroniContext, old: str | None, candidate: str | None, before_tl: int | None,
          within: float, *, old_streams: bool = True) -> ClusterView:  # fmt: skip
    """Wait for: the candidate leads, the timeline moved, the others stream from it
    (the old leader ``old`` too, when ``old_streams``)."""
    moved = ctx.poll(lambda: _moved(ctx, old, candidate, before_tl), every=EVERY, within=within,
                     retry_on=(Unreachable,))  # fmt: skip
    if moved.value is None:
        view = api(ctx).cluster()
        raise StepError(
            f"no new leader on a timeline past {before_tl} (the old leader: {old}) within "
            f"{moved.waited:.1f}s. Members: {view.lines()}"
        )
    new = moved.value.leader
    assert new is not None
    last: list[str] = []

    def streaming() -> ClusterView | None:
        view = api(ctx).cluster()
        done, why = _followers_stream(view, old if old_streams else None)
        last.append(why)
        return view if done else None

    polled = ctx.poll(streaming, every=EVERY, within=within, retry_on=(Unreachable,))
    if polled.value is None:
        raise StepError(
            f"{new.name} leads on timeline {new.timeline}, but after {polled.waited:.1f}s these do "
            f"not stream from it: {last[-1] if last else 'unknown'}"
        )
    return polled.value


def _done(ctx: PatroniContext, old: str, before_tl: int | None, candidate: str | None,
          old_streams: bool) -> bool | None:  # fmt: skip
    view = api(ctx).cluster()
    leader = view.leader
    if leader is None or leader.state != "running" or leader.name == old:
        return None
    if candidate is not None and leader.name != candidate:
        return False  # another member leads: waiting will not make it the candidate
    if before_tl is not None and (leader.timeline is None or leader.timeline <= before_tl):
        return None
    return True if _followers_stream(view, old if old_streams else None)[0] else None


def _verify(ctx: PatroniContext, candidate: str | None, within: float, *,
            old_streams: bool = True) -> bool:  # fmt: skip
    """On resume too: the recorded leader no longer leads, the candidate does on a newer
    timeline, and the others stream from it. Once Patroni has been asked, the change
    may still be under way (drctl was killed mid-switchover), so it is waited for."""
    old = ctx.recorded.get("leader_before")
    if old is None:
        return False  # apply never asked Patroni: nothing happened
    before = ctx.recorded.get("timeline_before")
    before_tl = int(before) if before is not None else None
    # Patroni was asked, or may have been (killed with the request in flight).
    polled = ctx.poll(lambda: _done(ctx, str(old), before_tl, candidate, old_streams),
                      every=EVERY, within=within, retry_on=(Unreachable,))  # fmt: skip
    return polled.value is True


class Switchover(PatroniStep[SwitchoverInputs]):
    """Ask Patroni to switch the leader over to a healthy replica, and prove it did.

    ``POST /switchover`` with the current ``leader`` (checked against Patroni's view; by
    default whoever leads), the ``candidate`` (none: Patroni picks) and, optionally,
    ``scheduled_at``. Patroni demotes the leader before it promotes the candidate, so
    the step fences the old primary itself (lint DR001 counts it as a fence and a
    promote); put a lag check (``patroni.status`` with ``max_lag_bytes``) before it
    for DR002. Patroni's refusals (HTTP 412 "no good candidates", "candidate name does
    not match with sync_standby", …) fail the step with its text and every member's
    role, state, lag and tags. ``verify`` (after apply and on resume): the candidate
    (or some other member) leads, on a newer timeline than before, and the old leader
    streams from it — waited for up to ``wait_seconds``.
    """

    name = "patroni.switchover"
    outputs = published(
        {
            "leader": "The leader's member name.",
            "members": "Every member: name, role, state, lag, timeline, tags.",
            "timeline": "The cluster's timeline.",
        }
    )
    Inputs = SwitchoverInputs
    roles = frozenset({Role.PROMOTE, Role.FENCE, Role.MUTATING})

    def describe(self, inputs: SwitchoverInputs, target: str | None) -> str:
        to = inputs.candidate or "the replica Patroni chooses"
        frm = f" from {inputs.leader}" if inputs.leader else ""
        at = f" at {inputs.scheduled_at}" if inputs.scheduled_at else ""
        return f"switch Patroni cluster {target} over{frm} to {to}{at}, then verify"

    def _preflight(self, ctx: PatroniContext[SwitchoverInputs]) -> ClusterView:
        inputs = ctx.inputs
        view = api(ctx).cluster()
        leader = view.leader
        if leader is None:
            raise StepError(
                f"no leader to switch over from (use patroni.failover). Members: {view.lines()}"
            )
        if inputs.leader and leader.name != inputs.leader:
            raise StepError(
                f"{leader.name} leads, not {inputs.leader}: the runbook expected another "
                f"cluster state. Members: {view.lines()}"
            )
        if inputs.candidate and view.member(inputs.candidate) is None:
            raise StepError(f"no member {inputs.candidate!r}. Members: {view.lines()}")
        if inputs.candidate == leader.name:
            raise StepError(f"{leader.name} leads already: it cannot be the candidate")
        return view

    def check(self, ctx: PatroniContext[SwitchoverInputs]) -> str | None:
        view = self._preflight(ctx)
        assert view.leader is not None
        return f"switch over from {view.leader.name} ({view.lines()})"

    def apply(self, ctx: PatroniContext[SwitchoverInputs]) -> None:
        inputs = ctx.inputs
        view = self._preflight(ctx)
        leader = view.leader
        assert leader is not None
        ctx.record("leader_before", leader.name)
        ctx.record("timeline_before", leader.timeline)
        body: dict[str, str] = {"leader": leader.name}
        if inputs.candidate:
            body["candidate"] = inputs.candidate
        if inputs.scheduled_at:
            body["scheduled_at"] = inputs.scheduled_at
        # Asked of the leader itself (as patronictl does): its HA loop is woken at once;
        # through the member that answered if the leader's REST API does not.
        try:
            answer = api(ctx).request(leader.base_url or view.source, "POST", "/switchover", body)
        except Unreachable as exc:
            ctx.log(f"the leader's REST API does not answer ({exc.message}): asking {view.source}")
            answer = api(ctx).request(view.source, "POST", "/switchover", body)
        ctx.record("patroni_answer", answer.status)
        if answer.status == 202:
            ctx.log(f"Patroni scheduled the switchover: {answer.text.strip()}")
        elif answer.status != 200:
            raise refusal("switchover", answer.status, answer.text, api(ctx).cluster())
        else:
            ctx.log(f"Patroni: {answer.text.strip()}")
        within = (
            max(inputs.wait_seconds, ctx.remaining())
            if inputs.scheduled_at
            else inputs.wait_seconds
        )
        done = prove(ctx, leader.name, inputs.candidate, leader.timeline, within)
        new = done.leader
        assert new is not None
        ctx.output("leader", new.name)
        ctx.output("timeline", new.timeline)
        ctx.output("members", [m.as_output() for m in done.members])

    def verify(self, ctx: PatroniContext[SwitchoverInputs]) -> bool:
        return _verify(ctx, ctx.inputs.candidate, ctx.inputs.wait_seconds)


class Failover(PatroniStep[FailoverInputs]):
    """Ask Patroni to fail over to a named candidate (an unhealthy or paused cluster).

    ``POST /failover`` with the ``candidate``, which Patroni requires: it is the way to
    move the leader when there is no healthy leader to switch over from, or while the
    cluster is paused. A leader that still runs is demoted by Patroni first, and one
    that does not holds no leader lock any more, so the step counts as a fence and a
    promote for the lints. Refusals (HTTP 412 "no good candidates"…) fail the step
    with Patroni's text and every member's state. ``verify``: the candidate leads, on a
    newer timeline than before, and every member still running streams from it.
    """

    name = "patroni.failover"
    outputs = published(
        {
            "leader": "The leader's member name.",
            "members": "Every member: name, role, state, lag, timeline, tags.",
            "timeline": "The cluster's timeline.",
        }
    )
    Inputs = FailoverInputs
    roles = frozenset({Role.PROMOTE, Role.FENCE, Role.MUTATING})

    def describe(self, inputs: FailoverInputs, target: str | None) -> str:
        return f"fail Patroni cluster {target} over to {inputs.candidate}, then verify"

    def _preflight(self, ctx: PatroniContext[FailoverInputs]) -> ClusterView:
        view = api(ctx).cluster()
        candidate = view.member(ctx.inputs.candidate)
        if candidate is None:
            raise StepError(f"no member {ctx.inputs.candidate!r}. Members: {view.lines()}")
        if candidate.is_leader and candidate.state == "running":
            raise StepError(f"{candidate.name} leads already. Members: {view.lines()}")
        return view

    def check(self, ctx: PatroniContext[FailoverInputs]) -> str | None:
        view = self._preflight(ctx)
        return f"fail over to {ctx.inputs.candidate} ({view.lines()})"

    def apply(self, ctx: PatroniContext[FailoverInputs]) -> None:
        inputs = ctx.inputs
        view = self._preflight(ctx)
        leader = view.leader
        timelines = [m.timeline for m in view.members if m.timeline is not None]
        before_tl = leader.timeline if leader is not None else max(timelines, default=None)
        # Recorded even when no member leads: verify needs something that is not the new leader.
        ctx.record("leader_before", leader.name if leader else "")
        ctx.record("timeline_before", before_tl)
        answer = api(ctx).first("POST", "/failover", {"candidate": inputs.candidate})
        ctx.record("patroni_answer", answer.status)
        if answer.status != 200:
            raise refusal("failover", answer.status, answer.text, api(ctx).cluster())
        ctx.log(f"Patroni: {answer.text.strip()}")
        # The old leader may be down for good: only the members that run must follow.
        done = prove(ctx, leader.name if leader else None, inputs.candidate, before_tl,
                     inputs.wait_seconds, old_streams=False)  # fmt: skip
        ctx.output("leader", inputs.candidate)
        ctx.output("timeline", done.leader.timeline if done.leader else None)
        ctx.output("members", [m.as_output() for m in done.members])

    def verify(self, ctx: PatroniContext[FailoverInputs]) -> bool:
        return _verify(ctx, ctx.inputs.candidate, ctx.inputs.wait_seconds, old_streams=False)
