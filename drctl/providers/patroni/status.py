"""``patroni.status``: the cluster as Patroni sees it, published, and asserted on request."""

from __future__ import annotations

from pydantic import Field

from drctl.errors import StepError
from drctl.providers.patroni.base import PatroniContext, PatroniStep, Views, views
from drctl.steps.base import Role, StepInputs, published


class StatusInputs(StepInputs):
    require_leader: bool = Field(
        default=True, description="Fail when the cluster has no running leader."
    )
    leader: str | None = Field(default=None, description="Fail unless this member leads.")
    max_lag_bytes: int | None = Field(
        default=None, ge=0,
        description="Fail when a replica is further behind (or its lag is unknown); makes the step a lag check.",
    )  # fmt: skip
    min_streaming: int | None = Field(
        default=None, ge=0, description="Fail unless at least this many replicas stream."
    )
    paused: bool | None = Field(
        default=None,
        description="Fail unless every member's own view is paused (true) or not (false).",
    )
    no_pending_restart: bool = Field(
        default=False, description="Fail when a member is pending restart."
    )


Ctx = PatroniContext[StatusInputs]


def problems(inputs: StatusInputs, seen: Views) -> list[str]:
    """What the cluster does not meet of what ``inputs`` asks; empty when it meets it all."""
    cluster = seen.cluster
    out: list[str] = []
    leader = cluster.leader
    if (inputs.require_leader or inputs.leader) and (leader is None or leader.state != "running"):
        out.append("no running leader")
    if inputs.leader and leader is not None and leader.name != inputs.leader:
        out.append(f"{leader.name} leads, not {inputs.leader}")
    replicas = [m for m in cluster.members if not m.is_leader]
    if inputs.max_lag_bytes is not None:
        for m in replicas:
            if m.lag is None or m.lag > inputs.max_lag_bytes:
                lag = "unknown" if m.lag is None else f"{m.lag} bytes"
                out.append(f"{m.name} lags {lag} (limit {inputs.max_lag_bytes})")
    streaming = [m for m in replicas if m.state == "streaming"]
    if inputs.min_streaming is not None and len(streaming) < inputs.min_streaming:
        out.append(f"{len(streaming)} replicas stream, fewer than {inputs.min_streaming}")
    if inputs.paused is not None:
        off = seen.pause_seen(inputs.paused)
        if off:
            want = "paused" if inputs.paused else "not paused"
            out.append(f"not {want} in the view of {', '.join(off)}")
    if inputs.no_pending_restart:
        out.extend(f"{m.name} is pending restart" for m in cluster.members if m.pending_restart)
    return out


class PatroniStatus(PatroniStep[StatusInputs]):
    """Read the cluster from Patroni: members, leader, roles, lag, timeline, tags, pause.

    Asks ``GET /cluster`` of the first listed member that answers (the cluster's member
    list comes from Patroni's DCS, so members not listed are found too), then each
    member's own ``GET /patroni``. Publishes ``leader``, ``members`` (name, role, state,
    lag, timeline, tags, pending_restart, api_url), ``paused``, ``timeline`` and
    ``pending_restart`` (the members that are). Fails, naming every member's state, when
    the cluster does not meet what is asked: a running leader (``require_leader``, on by
    default), a given ``leader``, replicas within ``max_lag_bytes`` (which makes the step
    a lag check for lint DR002), ``min_streaming`` replicas, ``paused``, no member
    pending restart. Read-only.
    """

    name = "patroni.status"
    outputs = published(
        {
            "leader": "The leader's member name.",
            "members": "Every member: name, role, state, lag, timeline, tags.",
            "paused": "Whether the cluster is paused (maintenance mode).",
            "pending_restart": "Members whose settings wait for a restart.",
            "timeline": "The cluster's timeline.",
        }
    )
    Inputs = StatusInputs

    def step_roles(self, inputs: StatusInputs) -> frozenset[Role]:
        if inputs.max_lag_bytes is not None:
            return frozenset({Role.VERIFY, Role.LAG_CHECK})
        return frozenset({Role.VERIFY})

    def describe(self, inputs: StatusInputs, target: str | None) -> str:
        asks = []
        if inputs.leader:
            asks.append(f"{inputs.leader} leads")
        elif inputs.require_leader:
            asks.append("a leader runs")
        if inputs.max_lag_bytes is not None:
            asks.append(f"lag ≤ {inputs.max_lag_bytes} bytes")
        if inputs.min_streaming is not None:
            asks.append(f"≥ {inputs.min_streaming} streaming")
        if inputs.paused is not None:
            asks.append("paused" if inputs.paused else "not paused")
        if inputs.no_pending_restart:
            asks.append("no pending restart")
        return f"read Patroni cluster {target}" + (f" and check {', '.join(asks)}" if asks else "")

    def _read(self, ctx: Ctx) -> tuple[Views, list[str]]:
        seen = views(ctx)
        return seen, problems(ctx.inputs, seen)

    def check(self, ctx: Ctx) -> str | None:
        seen, found = self._read(ctx)
        state = seen.cluster.lines()
        return f"{'; '.join(found)} now ({state})" if found else f"holds now ({state})"

    def apply(self, ctx: Ctx) -> None:
        seen, found = self._read(ctx)
        cluster = seen.cluster
        leader = cluster.leader
        ctx.output("leader", leader.name if leader else None)
        ctx.output("members", [m.as_output() for m in cluster.members])
        ctx.output("paused", not seen.pause_seen(True))
        ctx.output("timeline", leader.timeline if leader else None)
        ctx.output("pending_restart", [m.name for m in cluster.members if m.pending_restart])
        ctx.log(cluster.lines() + ("; paused" if cluster.paused else ""))
        if found:
            raise StepError(f"Patroni cluster: {'; '.join(found)}. Members: {cluster.lines()}")

    def verify(self, ctx: Ctx) -> bool:
        return not self._read(ctx)[1]
