"""``mongo.freeze``: keep members from standing for election with ``replSetFreeze``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.mongo.base import MongoContext, MongoStep
from drctl.providers.mongo.session import (
    ConnectionDropped,
    admin,
    connect,
    member_hello,
)
from drctl.steps.base import Role, StepContext, StepInputs, published


class FreezeInputs(StepInputs):
    members: list[str] = Field(
        min_length=1,
        description="Members (host:port as in the replica-set config) that must not become primary.",
    )
    seconds: int = Field(
        default=120,
        ge=2,
        le=86400,
        description="How long they may not stand for election: cover the rest of the failover.",
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _self_status(uri: str, ctx: StepContext, member: str) -> dict[str, Any]:
    """The member's own entry in its ``replSetGetStatus`` (state and uptime)."""
    with connect(uri, ctx, what=member, member=member, cap=5.0) as client:
        status = admin(client, "replSetGetStatus")
    for m in status.get("members", []):
        if m.get("self"):
            return dict(m)
    raise StepError(f"{member}: replSetGetStatus has no entry for the member itself")


Ctx = MongoContext[FreezeInputs]


class Freeze(MongoStep[FreezeInputs]):
    """Keep members from standing for election for a while (``replSetFreeze``).

    For members that must not become primary during a failover (say, the secondaries
    left in the old region). A primary cannot be frozen: step it down first. Each
    member's acknowledgement is recorded as it comes, so ``verify`` holds when every
    member acknowledged, the freeze has not run out, the member is not primary and has
    not restarted since (a restart ends a freeze). ``undo`` unfreezes them
    (``replSetFreeze: 0``). A freeze is not visible in the server's status, which is
    why ``verify`` relies on the recorded acknowledgements.
    """

    name = "mongo.freeze"
    outputs = published(
        {
            "frozen_until": "When the members may stand for election again.",
        }
    )
    Inputs = FreezeInputs
    roles = frozenset({Role.MUTATING})

    def describe(self, inputs: FreezeInputs, target: str | None) -> str:
        return f"freeze {', '.join(inputs.members)} for {inputs.seconds}s (no election)"

    @staticmethod
    def _uri(ctx: Ctx) -> str:
        return ctx.target.uri

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        notes = []
        for member in inputs.members:
            if member_hello(self._uri(ctx), ctx, member).get("isWritablePrimary"):
                if not ctx.dry_run:
                    raise StepError(f"{member} is primary: a primary cannot be frozen")
                notes.append(f"{member} is primary now: it must have stepped down by then")
        return "; ".join(notes) or self.describe(inputs, None)

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        uri = self._uri(ctx)
        frozen: dict[str, dict[str, float]] = {}
        for member in inputs.members:
            if member_hello(uri, ctx, member).get("isWritablePrimary"):
                raise StepError(
                    f"{member} is primary: a primary cannot be frozen (step it down first)"
                )
            at = time.time()
            with connect(uri, ctx, what=member, member=member) as client:
                admin(client, {"replSetFreeze": inputs.seconds})
            frozen[member] = {"at": at, "until": at + inputs.seconds}
            ctx.record("frozen", dict(frozen))
            ctx.log(f"{member} frozen until {_iso(at + inputs.seconds)}")
        ctx.output("frozen_until", {m: _iso(v["until"]) for m, v in frozen.items()})

    def verify(self, ctx: Ctx) -> bool:
        inputs = ctx.inputs
        frozen = ctx.recorded.get("frozen") or {}
        now = time.time()
        for member in inputs.members:
            entry = frozen.get(member)
            if not entry or float(entry["until"]) <= now:
                return False
            try:
                me = _self_status(self._uri(ctx), ctx, member)
            except (Unreachable, ConnectionDropped):
                return False
            restarted = float(me.get("uptime", 0)) + 2.0 < now - float(entry["at"])
            if me.get("stateStr") == "PRIMARY" or int(me.get("state", 0)) == 1 or restarted:
                return False
        return True

    def undo(self, ctx: Ctx) -> None:
        """Unfreeze every member the step froze (``replSetFreeze: 0``)."""
        inputs = ctx.inputs
        uri = self._uri(ctx)
        failed = []
        for member in (ctx.recorded.get("frozen") or {}) or inputs.members:
            try:
                if member_hello(uri, ctx, member).get("isWritablePrimary"):
                    continue  # a primary is not frozen
                with connect(uri, ctx, what=member, member=member) as client:
                    admin(client, {"replSetFreeze": 0})
                ctx.log(f"{member} unfrozen")
            except StepError as exc:
                failed.append(exc.message)
        if failed:
            raise StepError("; ".join(failed))
