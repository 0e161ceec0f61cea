"""``mongo.rs_status``: members, states, optimes and lag of a replica set; whether a majority answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.mongo.base import MongoContext, MongoStep
from drctl.providers.mongo.session import (
    ConnectionDropped,
    admin,
    connect,
    get_config,
    set_hello,
)
from drctl.steps.base import Role, StepContext, StepInputs, published

PRIMARY, SECONDARY, ARBITER = 1, 2, 7


class StatusInputs(StepInputs):
    max_lag_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Fail when the measured member (or the worst healthy secondary) is further behind.",
    )
    member: str | None = Field(
        default=None,
        description="Measure this member (host:port as in the replica-set config), e.g. the one "
        "to elect; default: the worst healthy secondary.",
    )
    require_majority: bool = Field(
        default=True,
        description="Fail when the members that answer hold no majority of the votes "
        "(set false when a regional disaster took the majority).",
    )


@dataclass(frozen=True)
class MemberState:
    """One member as the answering member sees it; lag is None when it cannot be known."""

    name: str
    state: str
    healthy: bool
    votes: int
    priority: float
    optime: dict[str, int] | None
    optime_date: str | None
    lag_seconds: float | None

    def as_output(self) -> dict[str, object]:
        return {
            "name": self.name, "state": self.state, "healthy": self.healthy, "votes": self.votes,
            "priority": self.priority, "optime": self.optime, "optime_date": self.optime_date,
            "lag_seconds": self.lag_seconds,
        }  # fmt: skip


@dataclass(frozen=True)
class SetStatus:
    """A replica set's status from one member's point of view (``reporter``)."""

    set_name: str
    reporter: str
    primary: str | None
    members: tuple[MemberState, ...]
    votes_total: int
    votes_reachable: int
    #: What lag is measured against: the primary's optime, or (no primary) the freshest member's.
    reference: str
    freshest: str | None

    @property
    def majority_reachable(self) -> bool:
        return self.votes_reachable * 2 > self.votes_total

    def member(self, name: str) -> MemberState:
        for m in self.members:
            if m.name == name:
                return m
        names = ", ".join(m.name for m in self.members)
        raise StepError(f"{name} is not a member of replica set {self.set_name} ({names})")

    def measured(self, name: str | None) -> tuple[str | None, float]:
        """(member, lag) of the named member, or of the worst healthy secondary."""
        if name is not None:
            m = self.member(name)
            if m.lag_seconds is None:
                raise StepError(
                    f"{name} is {m.state} and does not answer {self.reporter}: its lag is unknown"
                )
            return name, m.lag_seconds
        secondaries = [
            m for m in self.members if m.state == "SECONDARY" and m.lag_seconds is not None
        ]
        if not secondaries:
            return None, 0.0
        worst = max(secondaries, key=lambda m: m.lag_seconds or 0.0)
        return worst.name, worst.lag_seconds or 0.0

    def as_outputs(self, name: str | None) -> dict[str, object]:
        lag_member, lag = self.measured(name)
        return {
            "set_name": self.set_name, "reporter": self.reporter, "primary": self.primary,
            "freshest": self.freshest, "majority_reachable": self.majority_reachable,
            "votes_total": self.votes_total, "votes_reachable": self.votes_reachable,
            "reference": self.reference, "lag_member": lag_member, "lag_seconds": lag,
            "members": [m.as_output() for m in self.members],
        }  # fmt: skip

    def summary(self, name: str | None) -> str:
        lag_member, lag = self.measured(name)
        lag_text = (
            f"{lag_member} is {lag:g}s behind the {self.reference}"
            if lag_member
            else "no secondary to measure"
        )
        return (
            f"{self.set_name}: primary {self.primary or 'none'}, {self.votes_reachable} of "
            f"{self.votes_total} votes answer; {lag_text} (as {self.reporter} sees it)"
        )


def _optime(doc: Any) -> tuple[int, int, int] | None:
    """``{ts: Timestamp(s, i), t: term}`` → (term, seconds, increment)."""
    if not isinstance(doc, Mapping) or doc.get("ts") is None:
        return None
    ts = doc["ts"]
    seconds, inc = (ts.time, ts.inc) if hasattr(ts, "time") else (0, 0)
    if seconds == 0:
        return None  # the server's "no optime known" (an unreachable member)
    return int(doc.get("t", -1)), int(seconds), int(inc)


def parse_status(status: Mapping[str, Any], config: Mapping[str, Any]) -> SetStatus:
    """Combine ``replSetGetStatus`` (health, states, optimes) with the config (votes, priorities)."""
    in_config = {str(m["host"]): m for m in config.get("members", [])}
    raw = [dict(m) for m in status.get("members", [])]
    reporter = next((str(m["name"]) for m in raw if m.get("self")), "?")
    healthy = {str(m["name"]) for m in raw if int(m.get("health", 1)) == 1}
    optimes: dict[str, tuple[int, int, int]] = {}
    dates: dict[str, datetime] = {}
    for m in raw:
        name = str(m["name"])
        op = _optime(m.get("optime"))
        if name in healthy and int(m.get("state", -1)) != ARBITER and op is not None:
            optimes[name] = op
            if isinstance(m.get("optimeDate"), datetime):
                dates[name] = m["optimeDate"]
    primary = next(
        (
            str(m["name"])
            for m in raw
            if int(m.get("state", -1)) == PRIMARY and m["name"] in healthy
        ),
        None,
    )
    freshest = max(optimes, key=lambda n: optimes[n]) if optimes else None
    ref_date: datetime | None
    if primary is not None and primary in dates:
        reference, ref_date = "primary", dates[primary]
    else:
        reference = "freshest member"
        ref_date = dates.get(freshest) if freshest else None
    members = []
    for m in raw:
        name = str(m["name"])
        cfg = in_config.get(name, {})
        date = dates.get(name)
        lag = (
            round(max(0.0, (ref_date - date).total_seconds()), 3)
            if ref_date is not None and date is not None
            else None
        )
        op = optimes.get(name)
        members.append(
            MemberState(
                name=name,
                state=str(m.get("stateStr") or m.get("state")),
                healthy=name in healthy,
                votes=int(cfg.get("votes", 1)),
                priority=float(cfg.get("priority", 1)),
                optime={"t": op[0], "ts": op[1], "inc": op[2]} if op else None,
                optime_date=date.isoformat() + "Z" if date else None,
                lag_seconds=lag,
            )
        )
    votes_total = sum(int(m.get("votes", 1)) for m in in_config.values())
    votes_reachable = sum(int(cfg.get("votes", 1)) for n, cfg in in_config.items() if n in healthy)
    return SetStatus(
        set_name=str(status.get("set") or config.get("_id") or "?"),
        reporter=reporter,
        primary=primary,
        members=tuple(members),
        votes_total=votes_total,
        votes_reachable=votes_reachable,
        reference=reference,
        freshest=freshest,
    )


def read_status(uri: str, ctx: StepContext) -> SetStatus:
    """Status and config, both from the primary — or, with none, from the member that answers."""
    reply = set_hello(uri, ctx)
    reporters = [str(h) for h in (reply.get("primary"), reply.get("me")) if h]
    last: StepError = StepError("no member answers")
    for reporter in dict.fromkeys(reporters):
        try:
            with connect(uri, ctx, what=reporter, member=reporter) as client:
                status = admin(client, "replSetGetStatus")
                config = get_config(client)
            return parse_status(status, config)
        except (Unreachable, ConnectionDropped) as exc:
            last = exc  # the named primary is cut off from us: ask the member that answered
    raise last


Ctx = MongoContext[StatusInputs]


class ReplicaSetStatus(MongoStep[StatusInputs]):
    """Read the replica set's members, states, optimes and lag; fail beyond the limits.

    Asks the primary (``replSetGetStatus`` and ``replSetGetConfig``), or a secondary when
    no primary answers. Lag is measured against the primary's optime, or — with no
    primary, as after losing a region — against the freshest member that answers.
    Fails when ``member`` (or the worst healthy secondary) is more than
    ``max_lag_seconds`` behind, and when the members that answer hold no majority of
    the votes unless ``require_majority: false``. Publishes ``primary``, ``freshest``,
    ``majority_reachable``, ``votes_total``, ``votes_reachable``, ``lag_member``,
    ``lag_seconds`` and ``members`` (name, state, healthy, votes, priority, optime,
    optime_date, lag_seconds) for later steps. Read-only.
    """

    name = "mongo.rs_status"
    outputs = published(
        {
            "set_name": "The replica set's name.",
            "reporter": "The member that answered.",
            "primary": "The primary (null if none).",
            "freshest": "The member with the newest optime.",
            "majority_reachable": "Whether a majority of votes answers.",
            "votes_total": "Votes in the config.",
            "votes_reachable": "Votes that answer.",
            "reference": "The optime lag is measured from.",
            "lag_member": "The member whose lag is published.",
            "lag_seconds": "Its lag behind the reference.",
            "members": "Every member: name, state, health, votes, priority, optime, lag.",
        }
    )
    Inputs = StatusInputs
    roles = frozenset({Role.LAG_CHECK})

    def describe(self, inputs: StatusInputs, target: str | None) -> str:
        who = inputs.member or "the worst secondary"
        limit = (
            f"; {who} at most {inputs.max_lag_seconds:g}s behind"
            if inputs.max_lag_seconds is not None
            else ""
        )
        majority = "; a majority must answer" if inputs.require_majority else ""
        return f"read replica-set status of {target}{limit}{majority}"

    def _read(self, ctx: Ctx) -> SetStatus:
        return read_status(ctx.target.uri, ctx)

    def _problems(self, status: SetStatus, inputs: StatusInputs) -> list[str]:
        problems = []
        if inputs.require_majority and not status.majority_reachable:
            problems.append(
                f"only {status.votes_reachable} of {status.votes_total} votes answer: no majority "
                "(set require_majority: false to go on without one)"
            )
        lag_member, lag = status.measured(inputs.member)
        if inputs.max_lag_seconds is not None and lag > inputs.max_lag_seconds:
            problems.append(
                f"{lag_member} is {lag:g}s behind the {status.reference} "
                f"(limit {inputs.max_lag_seconds:g}s)"
            )
        return problems

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        return self._read(ctx).summary(inputs.member)

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        status = self._read(ctx)
        for key, value in status.as_outputs(inputs.member).items():
            ctx.output(key, value)
        ctx.log(status.summary(inputs.member))
        problems = self._problems(status, inputs)
        if problems:
            raise StepError("; ".join(problems))

    def verify(self, ctx: Ctx) -> bool:
        """The limits hold now (what ``wait: until`` polls for)."""
        inputs = ctx.inputs
        return not self._problems(self._read(ctx), inputs)
