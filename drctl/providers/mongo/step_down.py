"""``mongo.step_down``: make the primary stop taking writes with ``replSetStepDown``."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from drctl.errors import StepError
from drctl.providers.mongo.base import MongoContext, MongoStep
from drctl.providers.mongo.session import (
    CommandFailed,
    ConnectionDropped,
    NotPrimary,
    admin,
    connect,
    current_primary,
    electable_in_config,
    get_config,
    member_hello,
    members_by_host,
    try_member_hello,
)
from drctl.providers.mongo.status import parse_status
from drctl.steps.base import Role, StepContext, StepInputs, published

EXCEEDED_TIME_LIMIT = 262


class StepDownInputs(StepInputs):
    member: str | None = Field(
        default=None,
        description="The member expected to be primary (host:port as in the replica-set config): "
        "only it is stepped down, and nothing happens if it is no longer primary. Default: the "
        "member that is primary when the step starts.",
    )
    step_down_seconds: int = Field(
        default=60,
        ge=1,
        le=86400,
        description="How long the old primary may not stand for election (stepDownSecs).",
    )
    catch_up_seconds: int = Field(
        default=10,
        ge=0,
        le=3600,
        description="How long an electable secondary may take to catch up "
        "(secondaryCatchUpPeriodSecs); the step-down is refused if none has by then.",
    )
    force: bool = Field(
        default=False,
        description="Step down even when no electable secondary caught up (replSetStepDown's "
        "force): writes only the old primary has can be rolled back; needs "
        "accept_data_loss: true (lint DR002).",
    )
    accept_data_loss: bool = Field(
        default=False,
        description="Acknowledge that a forced step-down may roll back acknowledged writes.",
    )

    @model_validator(mode="after")
    def _periods(self) -> Self:
        if self.force and not self.accept_data_loss:
            raise ValueError(
                "force: true steps down with no secondary caught up, so writes only the old "
                "primary has may be rolled back; it needs accept_data_loss: true"
            )
        if self.accept_data_loss and not self.force:
            raise ValueError("accept_data_loss is for force: true; a plain step-down loses nothing")
        if self.step_down_seconds <= self.catch_up_seconds:
            raise ValueError(
                "step_down_seconds must be longer than catch_up_seconds (the server refuses "
                "a step-down period that ends before the catch-up period)"
            )
        return self


def step_down(
    uri: str, ctx: StepContext, name: str, seconds: int, catch_up: int, *, force: bool = False
) -> str:
    """``replSetStepDown`` on one member; a dropped connection is expected. One outcome line.

    Raises StepError when the member refuses because no electable secondary caught up
    (never with ``force``: the server then steps down after the catch-up period anyway).
    """
    command: dict[str, object] = {
        "replSetStepDown": seconds, "secondaryCatchUpPeriodSecs": catch_up,
    }  # fmt: skip
    if force:
        command["force"] = True
    try:
        with connect(uri, ctx, what=name, member=name, cap=catch_up + 15.0) as client:
            admin(client, command)
    except ConnectionDropped:
        return f"{name} closed the connection while stepping down (expected); verifying"
    except NotPrimary:
        return f"{name} was no longer primary when asked to step down"
    except CommandFailed as exc:
        if exc.code == EXCEEDED_TIME_LIMIT:
            raise StepError(
                f"{name} refused to step down: no electable secondary caught up within "
                f"{catch_up}s ({exc.message})"
            ) from exc
        raise
    return f"{name} stepped down"


Ctx = MongoContext[StepDownInputs]


class StepDown(MongoStep[StepDownInputs]):
    """Step the primary down with ``replSetStepDown``, so it stops taking writes.

    Sends ``{replSetStepDown: step_down_seconds, secondaryCatchUpPeriodSecs:
    catch_up_seconds}`` to the primary, directly. The server steps down only once an
    electable secondary has caught up, and refuses (the step fails) when none has
    within the catch-up period — it never loses acknowledged writes. A step-down
    closes connections (servers before 4.2 close the command's own): a dropped
    connection is expected, and ``verify`` decides the outcome — the old primary
    answers ``hello`` as not writable. ``check`` fails when no secondary is electable.
    ``undo`` lets the old primary stand for election again (``replSetFreeze: 0``).

    ``force: true`` (with ``accept_data_loss: true``; lint DR002) sends ``force`` too:
    the primary steps down after the catch-up period whether or not a secondary caught
    up, so writes only it has may be rolled back — for a primary that must stop taking
    writes now. Publishes ``old_primary``.
    """

    name = "mongo.step_down"
    outputs = published(
        {
            "old_primary": "The member that was primary.",
        }
    )
    Inputs = StepDownInputs
    wait_fields = ("catch_up_seconds",)
    roles = frozenset({Role.FENCE, Role.MUTATING})

    def describe(self, inputs: StepDownInputs, target: str | None) -> str:
        who = inputs.member or f"the primary of {target}"
        if inputs.force:
            return (
                f"force {who} to step down (even if no secondary caught up within "
                f"{inputs.catch_up_seconds}s; may roll back writes)"
            )
        return (
            f"step down {who} (secondaries may catch up for {inputs.catch_up_seconds}s; "
            f"not electable for {inputs.step_down_seconds}s)"
        )

    @staticmethod
    def _uri(ctx: Ctx) -> str:
        return ctx.target.uri

    def _primary(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        return inputs.member or current_primary(self._uri(ctx), ctx)

    def check(self, ctx: Ctx) -> str | None:
        uri = self._uri(ctx)
        name = self._primary(ctx)
        if name is None:
            return "do nothing: no member is primary now"
        if not member_hello(uri, ctx, name).get("isWritablePrimary"):
            return f"do nothing: {name} is not primary"
        with connect(uri, ctx, what=name, member=name) as client:
            config = get_config(client)
            status = parse_status(admin(client, "replSetGetStatus"), config)
        config_members = members_by_host(config)
        electable = [
            m.name
            for m in status.members
            if m.healthy
            and m.state == "SECONDARY"
            and m.priority > 0
            and electable_in_config(config_members.get(m.name, {})) is None
        ]
        if not electable and not ctx.inputs.force:
            raise StepError(
                f"{name} would refuse to step down: no secondary that answers can be elected"
            )
        return f"step down {name}; electable: {', '.join(electable)}"

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        uri = self._uri(ctx)
        name = self._primary(ctx)
        if name is None:
            raise StepError("no member is primary: nothing to step down (an election under way?)")
        ctx.output("old_primary", name)
        if not member_hello(uri, ctx, name).get("isWritablePrimary"):
            ctx.record("old_primary", name)
            ctx.log(f"{name} is not primary: nothing to step down")
            return
        ctx.record("old_primary", name)
        if inputs.force:
            ctx.log(f"forced: {name} steps down even if no secondary has caught up")
        seconds, catch_up = inputs.step_down_seconds, inputs.catch_up_seconds
        ctx.log(step_down(uri, ctx, name, seconds, catch_up, force=inputs.force))

    def verify(self, ctx: Ctx) -> bool:
        """The old primary answers ``hello`` and is no longer writable (polled up to 2 s)."""
        inputs = ctx.inputs
        name = ctx.recorded.get("old_primary") or inputs.member
        if not name:
            return False

        def stepped_down() -> bool | None:
            reply = try_member_hello(self._uri(ctx), ctx, str(name), cap=2.0)
            return True if reply is not None and not reply.get("isWritablePrimary") else None

        return ctx.poll(stepped_down, every=0.2, within=2.0).done

    def undo(self, ctx: Ctx) -> None:
        """Let the old primary stand for election again at once (``replSetFreeze: 0``)."""
        name = ctx.recorded.get("old_primary")
        if not name:
            return
        uri = self._uri(ctx)
        if member_hello(uri, ctx, str(name)).get("isWritablePrimary"):
            ctx.log(f"{name} is primary again: nothing to undo")
            return
        with connect(uri, ctx, what=str(name), member=str(name)) as client:
            admin(client, {"replSetFreeze": 0})
        ctx.log(f"{name} may stand for election again")
