"""``mongo.elect``: make a chosen member primary, the planned way."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, model_validator

from drctl.errors import StepError
from drctl.providers.mongo.base import MongoContext, MongoStep
from drctl.providers.mongo.session import (
    CommandFailed,
    admin,
    connect,
    electable_in_config,
    get_config,
    member_hello,
    members_by_host,
    next_config,
    reconfig,
    try_member_hello,
    wait_for_primary,
)
from drctl.providers.mongo.status import read_status
from drctl.providers.mongo.step_down import step_down
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepInputs, published

#: At most this many primaries are stepped down while waiting (another member may win
#: the election after the first step-down; the raised priority then takes over).
MAX_STEP_DOWNS = 3
POLL = 0.2
NOT_SECONDARY = 95


class ElectInputs(StepInputs):
    member: str = Field(
        description="The member to make primary (host:port as in the replica-set config)."
    )
    priority: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Its priority from now on; default: one more than the highest other "
        "priority, so it stays primary.",
    )
    step_down_seconds: int = Field(
        default=60,
        ge=1,
        le=86400,
        description="How long a stepped-down primary may not stand for election.",
    )
    catch_up_seconds: int = Field(
        default=10,
        ge=0,
        le=3600,
        description="How long the member may take to catch up before the primary steps down.",
    )
    wait: Duration = Field(default=60.0, description="How long to wait for the member to win.")

    @model_validator(mode="after")
    def _periods(self) -> Self:
        if self.step_down_seconds <= self.catch_up_seconds:
            raise ValueError("step_down_seconds must be longer than catch_up_seconds")
        return self


def _priority(member: dict[str, Any]) -> float:
    return float(member.get("priority", 1))


Ctx = MongoContext[ElectInputs]


class Elect(MongoStep[ElectInputs]):
    """Make a chosen member primary: raise its priority, step the primary down, wait.

    1. Reconfigures (on the primary, without force) the member's priority to
       ``priority``, or to one more than the highest other priority, so that it wins
       and stays primary; the previous priorities are recorded first, for ``undo``.
    2. Lifts any freeze on the member, then steps the current primary down
       (``replSetStepDown`` with ``secondaryCatchUpPeriodSecs``: the server waits for
       the member to catch up, so no acknowledged write is lost), and again if another
       member wins the election instead (at most 3 step-downs).
    3. Waits until the member says it is primary.

    ``verify``: ``hello`` on the member says ``isWritablePrimary``. ``undo`` puts the
    recorded priorities back (the previous primary may then take over again). Fails
    when the member is an arbiter, hidden, delayed or has no vote.
    """

    name = "mongo.elect"
    outputs = published(
        {
            "primary": "The member that is primary after.",
            "stepped_down": "The member stepped down for it (null if none).",
        }
    )
    Inputs = ElectInputs
    roles = frozenset({Role.PROMOTE, Role.MUTATING})

    def describe(self, inputs: ElectInputs, target: str | None) -> str:
        priority = (
            f"priority {inputs.priority:g}"
            if inputs.priority is not None
            else "the highest priority"
        )
        return f"make {inputs.member} primary of {target} ({priority}; wait up to {inputs.wait:g}s)"

    @staticmethod
    def _uri(ctx: Ctx) -> str:
        return ctx.target.uri

    @staticmethod
    def _wanted(inputs: ElectInputs, members: dict[str, dict[str, Any]]) -> float | None:
        """The member's new priority, or None when it needs no change."""
        current = _priority(members[inputs.member])
        if inputs.priority is not None:
            return inputs.priority if inputs.priority != current else None
        others = max((_priority(m) for h, m in members.items() if h != inputs.member), default=0)
        return None if current > others else min(1000.0, others + 1)

    @staticmethod
    def _electable(inputs: ElectInputs, members: dict[str, dict[str, Any]]) -> None:
        if inputs.member not in members:
            raise StepError(
                f"{inputs.member} is not in the replica-set config ({', '.join(members)})"
            )
        why = electable_in_config(members[inputs.member])
        if why:
            raise StepError(f"{inputs.member} cannot become primary: {why}")

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        uri = self._uri(ctx)
        with connect(uri, ctx, what="replica set") as client:
            members = members_by_host(get_config(client))
        self._electable(inputs, members)
        me = read_status(uri, ctx).member(inputs.member)
        if not me.healthy:
            raise StepError(f"{inputs.member} does not answer ({me.state})")
        wanted = self._wanted(inputs, members)
        raise_note = f"; priority → {wanted:g}" if wanted is not None else ""
        if me.state == "PRIMARY":
            return f"do nothing: {inputs.member} is primary already{raise_note}"
        return f"make {inputs.member} ({me.state}, {me.lag_seconds or 0:g}s behind) primary{raise_note}"

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        uri = self._uri(ctx)
        started = ctx.monotonic()
        primary = wait_for_primary(uri, ctx, inputs.wait)
        with connect(uri, ctx, what=primary, member=primary) as client:
            config = get_config(client)
            members = members_by_host(config)
            self._electable(inputs, members)
            wanted = self._wanted(inputs, members)
            ctx.record("previous_priorities", {h: _priority(m) for h, m in members.items()})
            if wanted is not None:
                changed = [
                    {**m, "priority": wanted} if h == inputs.member else m
                    for h, m in members.items()
                ]
                reconfig(client, next_config(config, changed))
                ctx.log(
                    f"{inputs.member} priority {_priority(members[inputs.member]):g} → {wanted:g}"
                )
        stepped: list[str] = []
        hello: dict[str, Any] | None = member_hello(uri, ctx, inputs.member)
        if not hello or not hello.get("isWritablePrimary"):
            try:
                with connect(uri, ctx, what=inputs.member, member=inputs.member) as client:
                    admin(client, {"replSetFreeze": 0})  # a frozen member would never stand
            except CommandFailed as exc:
                if exc.code != NOT_SECONDARY:  # it won an election meanwhile
                    raise
        current: str | None = None

        def elected() -> bool | None:
            nonlocal hello, current
            if hello is not None and hello.get("isWritablePrimary"):
                return True
            current = str(hello["primary"]) if hello and hello.get("primary") else None
            if current and current != inputs.member and current not in stepped:
                if len(stepped) >= MAX_STEP_DOWNS:
                    raise StepError(
                        f"{current} won the election after {len(stepped)} step-downs; "
                        f"{inputs.member} did not"
                    )
                ctx.log(
                    step_down(uri, ctx, current, inputs.step_down_seconds, inputs.catch_up_seconds)
                )
                stepped.append(current)
            hello = try_member_hello(uri, ctx, inputs.member, cap=2.0)
            return True if hello is not None and hello.get("isWritablePrimary") else None

        left = inputs.wait - (ctx.monotonic() - started)
        if not ctx.poll(elected, every=POLL, within=left).done:
            raise StepError(
                f"{inputs.member} did not become primary within {inputs.wait:g}s "
                f"(primary now: {current or 'none'})"
            )
        ctx.output("primary", inputs.member)
        ctx.output("stepped_down", stepped)
        ctx.log(f"{inputs.member} is primary")

    def verify(self, ctx: Ctx) -> bool:
        inputs = ctx.inputs
        reply = try_member_hello(self._uri(ctx), ctx, inputs.member)
        return bool(reply and reply.get("isWritablePrimary"))

    def undo(self, ctx: Ctx) -> None:
        """Put the recorded priorities back (reconfig on the primary)."""
        previous = ctx.recorded.get("previous_priorities")
        if not previous:
            return
        uri = self._uri(ctx)
        primary = wait_for_primary(uri, ctx, 30.0)
        with connect(uri, ctx, what=primary, member=primary) as client:
            config = get_config(client)
            members = members_by_host(config)
            restored = [
                {**m, "priority": float(previous[h])} if h in previous else m
                for h, m in members.items()
            ]
            if all(
                _priority(a) == _priority(b)
                for a, b in zip(restored, members.values(), strict=True)
            ):
                return
            reconfig(client, next_config(config, restored))
        ctx.log("priorities restored: " + ", ".join(f"{h} {p:g}" for h, p in previous.items()))
