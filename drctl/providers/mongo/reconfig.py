"""``mongo.reconfig``: change the replica set's members, votes or priorities.

A forced reconfig (``force: true``) is what lets the members left after a regional
disaster form a majority of their own; it may roll back writes the lost majority
acknowledged, so it is allowed only with ``accept_data_loss: true`` and is linted as a
promote (DR001, forced) that may lose data (DR002).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from drctl.errors import StepError
from drctl.providers.mongo.base import MongoContext, MongoStep
from drctl.providers.mongo.session import (
    connect,
    get_config,
    members_by_host,
    next_config,
    reconfig,
    set_hello,
    try_member_hello,
    wait_for_primary,
)
from drctl.runbook.model import no_items
from drctl.steps.base import Role, StepInputs, published


class MemberChange(StepInputs):
    """One member's new settings (or a member to add)."""

    host: str = Field(description="host:port as in the replica-set config.")
    priority: float | None = Field(default=None, ge=0, le=1000, description="New priority.")
    votes: Literal[0, 1] | None = Field(default=None, description="New number of votes.")
    hidden: bool | None = Field(default=None, description="Hide it from clients.")
    add: bool = Field(default=False, description="Add it: it is not in the config yet.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.votes == 0 and self.priority != 0:
            raise ValueError(f"{self.host}: a member with votes: 0 needs priority: 0")
        if self.hidden and self.priority != 0:
            raise ValueError(f"{self.host}: a hidden member needs priority: 0")
        if not self.add and self.priority is None and self.votes is None and self.hidden is None:
            raise ValueError(
                f"{self.host}: nothing to change (give priority, votes or hidden, or add: true)"
            )
        return self

    def settings(self) -> dict[str, Any]:
        given = {"priority": self.priority, "votes": self.votes, "hidden": self.hidden}
        return {k: v for k, v in given.items() if v is not None}


class ReconfigInputs(StepInputs):
    members: list[MemberChange] = Field(
        default_factory=no_items, description="Members to change or add."
    )
    remove: list[str] = Field(
        default_factory=no_items, description="Members (host:port) to take out of the config."
    )
    force: bool = Field(
        default=False,
        description="Force the config on a member although no majority answers (a regional "
        "disaster); needs accept_data_loss: true (lints DR001, DR002).",
    )
    accept_data_loss: bool = Field(
        default=False,
        description="Acknowledge that a forced reconfig may roll back acknowledged writes.",
    )
    via: str | None = Field(
        default=None,
        description="Forced only: the member (host:port) that takes the forced config; default: "
        "the first member of the new config that answers.",
    )

    @model_validator(mode="after")
    def _safe(self) -> Self:
        if not self.members and not self.remove:
            raise ValueError("nothing to change: give members or remove")
        hosts = [m.host for m in self.members] + list(self.remove)
        twice = sorted({h for h in hosts if hosts.count(h) > 1})
        if twice:
            raise ValueError(f"named more than once: {', '.join(twice)}")
        if self.force and not self.accept_data_loss:
            raise ValueError(
                "force: true may roll back writes a lost majority acknowledged; it needs "
                "accept_data_loss: true"
            )
        if self.via is not None and not self.force:
            raise ValueError("via is for a forced reconfig; without force the primary takes it")
        return self


def desired_members(config: Mapping[str, Any], inputs: ReconfigInputs) -> list[dict[str, Any]]:
    """The member list after the change; a StepError for a member the config does not have."""
    current = members_by_host(config)
    changes = {c.host: c for c in inputs.members}
    for host, change in changes.items():
        if host not in current and not change.add:
            raise StepError(
                f"{host} is not in the replica-set config ({', '.join(current)}); "
                "set add: true to add it"
            )
    out = []
    for host, member in current.items():
        if host in inputs.remove:
            continue
        found = changes.get(host)
        out.append({**member, **found.settings()} if found else member)
    next_id = max((int(m.get("_id", 0)) for m in current.values()), default=-1) + 1
    for host, change in changes.items():
        if host not in current:
            out.append(
                {"_id": next_id, "host": host, "priority": 1.0, "votes": 1, **change.settings()}
            )
            next_id += 1
    return out


def in_effect(config: Mapping[str, Any], inputs: ReconfigInputs) -> bool:
    """Whether ``config`` already has every change asked for."""
    current = members_by_host(config)
    if any(host in current for host in inputs.remove):
        return False
    for change in inputs.members:
        member = current.get(change.host)
        if member is None:
            return False
        defaults = {"priority": 1.0, "votes": 1, "hidden": False}
        for key, value in change.settings().items():
            if member.get(key, defaults[key]) != value:
                return False
    return True


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_changes(inputs: ReconfigInputs) -> str:
    parts = []
    for change in inputs.members:
        settings = " ".join(f"{k} {_text(v)}" for k, v in change.settings().items())
        parts.append(
            f"{'add ' if change.add else ''}{change.host}{' ' + settings if settings else ''}"
        )
    if inputs.remove:
        parts.append("remove " + ", ".join(inputs.remove))
    return "; ".join(parts)


Ctx = MongoContext[ReconfigInputs]


class Reconfig(MongoStep[ReconfigInputs]):
    """Change members, votes or priorities with ``replSetReconfig``; forced only with consent.

    Without ``force`` the primary takes the new config (version + 1) and the server
    waits for a majority to install it; since MongoDB 4.4 it allows at most one voting
    member added or removed per reconfig. With ``force: true`` (needs
    ``accept_data_loss: true``; lints DR001 and DR002) the config goes to ``via``, or
    to the first member of the new config that answers — the way the members left after
    losing a region form a majority again — and it is refused while a primary answers.
    The previous config is recorded before anything changes. ``verify``: the config the
    primary (or, forced, the receiving member) holds has every change. ``undo``
    re-applies the recorded config; a forced reconfig is not undone (that would force
    back a config whose majority is gone).
    """

    name = "mongo.reconfig"
    outputs = published(
        {
            "version": "The config version after.",
            "receiver": "The member that took the new config.",
        }
    )
    Inputs = ReconfigInputs
    roles = frozenset({Role.MUTATING})

    def step_roles(self, inputs: ReconfigInputs) -> frozenset[Role]:
        return frozenset({Role.MUTATING, Role.PROMOTE}) if inputs.force else self.roles

    def undoable(self, inputs: ReconfigInputs) -> bool:
        return not inputs.force

    def describe(self, inputs: ReconfigInputs, target: str | None) -> str:
        how = (
            f"FORCED on {inputs.via or 'a surviving member'}, accepting data loss"
            if inputs.force
            else "on the primary"
        )
        return f"reconfigure {target} ({how}): {describe_changes(inputs)}"

    @staticmethod
    def _uri(ctx: Ctx) -> str:
        return ctx.target.uri

    def _receiver(self, ctx: Ctx) -> str:
        """The member that takes the new config: the primary, or (forced) a survivor."""
        inputs = ctx.inputs
        uri = self._uri(ctx)
        if not inputs.force:
            return wait_for_primary(uri, ctx, min(30.0, ctx.remaining()))
        if inputs.via:
            return inputs.via
        with connect(uri, ctx, what="replica set") as client:
            config = get_config(client)
        for member in desired_members(config, inputs):
            reply = try_member_hello(uri, ctx, str(member["host"]), cap=2.0)
            if reply is not None and reply.get("setName") == config.get("_id"):
                return str(member["host"])
        raise StepError("no member of the new config answers: nowhere to force it")

    def _refuse_force_with_primary(self, ctx: Ctx) -> None:
        """A forced reconfig is for a set without a majority: refuse it while a primary answers."""
        uri = self._uri(ctx)
        reply = set_hello(uri, ctx, cap=3.0)
        named = reply.get("me") if reply.get("isWritablePrimary") else reply.get("primary")
        if not named:
            return
        primary = try_member_hello(uri, ctx, str(named), cap=2.0)
        if primary is not None and primary.get("isWritablePrimary"):
            raise StepError(
                f"refusing a forced reconfig: {named} is primary and answers, so a majority is "
                "there; reconfigure without force"
            )

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        receiver = self._receiver(ctx)
        with connect(self._uri(ctx), ctx, what=receiver, member=receiver) as client:
            config = get_config(client)
        desired_members(config, inputs)
        if in_effect(config, inputs):
            return f"do nothing: already in effect on {receiver} (config version {config.get('version')})"
        if inputs.force:
            self._refuse_force_with_primary(ctx)
        return f"have {receiver} take config version {int(config.get('version', 0)) + 1}: {describe_changes(inputs)}"

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        from bson import json_util

        uri = self._uri(ctx)
        receiver = self._receiver(ctx)
        ctx.output("receiver", receiver)
        with connect(uri, ctx, what=receiver, member=receiver, cap=60.0) as client:
            config = get_config(client)
            if in_effect(config, inputs):
                ctx.record("receiver", receiver)
                ctx.log(f"already in effect (config version {config.get('version')})")
                ctx.output("version", config.get("version"))
                return
            if inputs.force:
                self._refuse_force_with_primary(ctx)
            new = next_config(config, desired_members(config, inputs))
            ctx.record(
                "previous_config",
                json_util.dumps(config, json_options=json_util.CANONICAL_JSON_OPTIONS),
            )
            ctx.record("receiver", receiver)
            reconfig(client, new, force=inputs.force)
            after = get_config(client)
        ctx.output("version", after.get("version"))
        ctx.log(
            f"{receiver} took config version {after.get('version')}"
            f"{' (forced)' if inputs.force else ''}: {describe_changes(inputs)}"
        )

    def verify(self, ctx: Ctx) -> bool:
        inputs = ctx.inputs
        uri = self._uri(ctx)
        if inputs.force:
            receiver = str(ctx.recorded.get("receiver") or inputs.via or self._receiver(ctx))
            with connect(uri, ctx, what=receiver, member=receiver) as client:
                return in_effect(get_config(client), inputs)
        with connect(uri, ctx, what="replica set") as client:
            return in_effect(get_config(client), inputs)

    def undo(self, ctx: Ctx) -> None:
        """Re-apply the recorded previous config (members and settings) on the primary."""
        from bson import json_util

        text = ctx.recorded.get("previous_config")
        if not text:
            return
        previous = json_util.loads(str(text))
        uri = self._uri(ctx)
        primary = wait_for_primary(uri, ctx, min(30.0, ctx.remaining()))
        with connect(uri, ctx, what=primary, member=primary, cap=60.0) as client:
            current = get_config(client)
            if members_by_host(current) == members_by_host(previous):
                return
            restored = next_config(
                {**previous, "version": current.get("version", 0)}, previous["members"]
            )
            reconfig(client, restored)
        ctx.log(f"previous config restored ({len(previous['members'])} members)")
