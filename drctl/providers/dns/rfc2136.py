"""``rfc2136.update`` and ``rfc2136.delete``: TSIG-signed dynamic updates of one RRset."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import Field, field_validator

from drctl.errors import StepError
from drctl.providers.dns.wire import (
    DEFAULT_TTL,
    UNSUPPORTED_TYPES,
    RRset,
    Server,
    absolute_name,
    canonical_values,
    import_client,
    may_update,
    read_rrset,
    replace,
    show,
    zone_name,
    zone_serial,
)
from drctl.runbook.targets import Rfc2136Target
from drctl.steps.base import Role, StepContext, StepInputs, StepType, published, short

#: The ``ctx.record`` key holding the RRset as it was before the change (None: absent).
PREVIOUS = "previous"


class RecordInputs(StepInputs):
    name: str = Field(
        description="Owner name: relative to the target's zone (`db`, `@` for the apex), or "
        "absolute with a final dot (`db.example.com.`). A name that already ends in the "
        "zone's name (`db.example.com` in `example.com.`) is taken as absolute."
    )
    type: str = Field(
        default="A",
        pattern=r"^[A-Z][A-Z0-9-]*$",
        description="Record type: A, AAAA, CNAME, TXT, MX, SRV, …",
    )

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().upper()
            if value in UNSUPPORTED_TYPES:
                raise ValueError(f"records of type {value} cannot be changed with these steps")
        return value


class UpdateInputs(RecordInputs):
    values: list[str] = Field(
        min_length=1,
        description="The new records, in zone-file form (`127.0.0.3`, `standby.example.com.`); "
        "a single value may be given as a string. Names inside values without a final dot "
        "are relative to the zone; a TXT value not in quotes is one string.",
    )
    ttl: int | None = Field(
        default=None,
        ge=0,
        le=2_147_483_647,
        description=f"TTL in seconds; default: keep the old RRset's TTL ({DEFAULT_TTL} for a new one).",
    )

    @field_validator("values", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str | int | float):
            return [str(value)]
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) else v for v in value]
        return value


class DeleteInputs(RecordInputs):
    pass


RI = TypeVar("RI", bound=RecordInputs)


class Rfc2136Step(StepType[RI, Rfc2136Target], Generic[RI]):
    """Base of the ``rfc2136.*`` step types: the target's server and zone, the absolute
    name, the current RRset; dnspython warmed up."""

    roles = frozenset({Role.TRAFFIC, Role.MUTATING})
    target_types = frozenset({"rfc2136"})
    target_required = True

    def warm_up(self) -> None:
        import_client()

    @staticmethod
    def _where(ctx: StepContext[RI, Rfc2136Target]) -> tuple[Server, str, str, str]:
        """(server, zone, absolute name, type) of this step."""
        inputs = ctx.inputs
        target = ctx.target
        server = Server.of_target(target, ctx.step_id)
        zone = zone_name(target.zone)
        if zone == ".":
            raise StepError(f"{ctx.step_id}: the rfc2136 target has no zone")
        return server, zone, absolute_name(inputs.name, zone), inputs.type

    @staticmethod
    def _preflight(ctx: StepContext[Any, Rfc2136Target], server: Server, zone: str) -> None:
        """The zone is served by the server, and the key may update it (nothing changes)."""
        zone_serial(ctx, server, zone)
        may_update(ctx, server, zone)

    @staticmethod
    def _previous(ctx: StepContext[Any, Rfc2136Target]) -> RRset | None:
        if PREVIOUS not in ctx.recorded:
            raise StepError(
                f"{ctx.step_id}: nothing was recorded before the change, so there is no old "
                "RRset to restore"
            )
        return RRset.from_record(ctx.recorded[PREVIOUS])

    @staticmethod
    def _restore(
        ctx: StepContext[Any, Rfc2136Target],
        server: Server,
        zone: str,
        name: str,
        rdtype: str,
        *,
        ours: RRset | None,
        previous: RRset | None,
    ) -> None:
        """Put ``previous`` back, but only over what this step set (values of ``ours``)."""
        current = read_rrset(ctx, server, zone, name, rdtype)
        if current == previous:
            ctx.log(f"{name} {rdtype} is {show(previous)} already: nothing to undo")
            return
        same = (current is None) == (ours is None) and (
            current is None or ours is None or current.values == ours.values
        )
        if not same:
            raise StepError(
                f"{name} {rdtype} is now {show(current)}, not what this step set "
                f"({show(ours, with_ttl=False)}): it changed since; not undone"
            )
        replace(ctx, server, zone, name, rdtype, expect=current, new=previous)
        ctx.log(f"{name} {rdtype} {show(current)} → {show(previous)} (restored)")


UpdateContext = StepContext[UpdateInputs, Rfc2136Target]
DeleteContext = StepContext[DeleteInputs, Rfc2136Target]


class Update(Rfc2136Step[UpdateInputs]):
    """Replace one RRset with a TSIG-signed RFC 2136 dynamic update (dnspython).

    ``check`` reads the RRset from the zone's authoritative server and shows
    ``set db.example. A 127.0.0.2 → 127.0.0.3 (TTL 30)``; it fails when the server does not
    serve the zone, refuses the TSIG key, or refuses the key an update (proved with an
    UPDATE holding only a prerequisite, which changes nothing). ``apply`` records the old
    RRset, then sends one update whose prerequisite is that old RRset, so a change made
    by someone else meanwhile is refused rather than overwritten; nothing is sent when
    the RRset is already as asked. ``verify`` asks the authoritative server (values, and
    the TTL when one is given). ``undo`` puts the recorded old RRset back (deletes the
    RRset if there was none), refusing if the RRset no longer holds what this step set.
    Publishes ``name``, ``type``, ``values``, ``ttl``, ``previous_values`` and
    ``previous_ttl`` (how long resolvers may still serve the old answer).
    """

    name = "rfc2136.update"
    outputs = published(
        {
            "name": "The record's name.",
            "type": "The record's type.",
            "values": "Its values after.",
            "ttl": "Its TTL after.",
            "previous_values": "Its values before.",
            "previous_ttl": "Its TTL before.",
        }
    )
    Inputs = UpdateInputs

    def describe(self, inputs: UpdateInputs, target: str | None) -> str:
        ttl = "TTL unchanged" if inputs.ttl is None else f"TTL {inputs.ttl}"
        return (
            f"set {inputs.name} {inputs.type} → {short(', '.join(inputs.values), 60)} ({ttl}) "
            f"on {target} (RFC 2136)"
        )

    def _desired(self, ctx: UpdateContext, zone: str, current: RRset | None) -> RRset:
        inputs = ctx.inputs
        ttl = inputs.ttl
        if ttl is None:
            ttl = current.ttl if current is not None else DEFAULT_TTL
        return RRset(ttl, canonical_values(inputs.type, inputs.values, zone))

    def check(self, ctx: UpdateContext) -> str | None:
        server, zone, name, rdtype = self._where(ctx)
        self._desired(ctx, zone, None)  # bad values fail before any I/O
        self._preflight(ctx, server, zone)
        current = read_rrset(ctx, server, zone, name, rdtype)
        desired = self._desired(ctx, zone, current)
        verb = "leave" if current == desired else "set"
        return f"{verb} {name} {rdtype} {_change(current, desired)}"

    def apply(self, ctx: UpdateContext) -> None:
        server, zone, name, rdtype = self._where(ctx)
        current = read_rrset(ctx, server, zone, name, rdtype)
        desired = self._desired(ctx, zone, current)
        ctx.record(PREVIOUS, None if current is None else current.as_record())
        ctx.output("name", name)
        ctx.output("type", rdtype)
        ctx.output("values", list(desired.values))
        ctx.output("ttl", desired.ttl)
        ctx.output("previous_values", list(current.values) if current else [])
        ctx.output("previous_ttl", current.ttl if current else 0)
        if current == desired:
            ctx.log(f"{name} {rdtype} is {show(current)} already: nothing sent")
            return
        replace(ctx, server, zone, name, rdtype, expect=current, new=desired)
        cached = f"; resolvers may serve the old answer for up to {current.ttl}s" if current else ""
        ctx.log(f"{name} {rdtype} {_change(current, desired)}{cached}")

    def verify(self, ctx: UpdateContext) -> bool:
        """The authoritative server holds the values (and the TTL, when the step gives one)."""
        inputs = ctx.inputs
        server, zone, name, rdtype = self._where(ctx)
        current = read_rrset(ctx, server, zone, name, rdtype)
        if current is None:
            return False
        wanted = canonical_values(rdtype, inputs.values, zone)
        return current.values == wanted and (inputs.ttl is None or current.ttl == inputs.ttl)

    def undo(self, ctx: UpdateContext) -> None:
        server, zone, name, rdtype = self._where(ctx)
        previous = self._previous(ctx)
        ours = self._desired(ctx, zone, previous)
        self._restore(ctx, server, zone, name, rdtype, ours=ours, previous=previous)


class Delete(Rfc2136Step[DeleteInputs]):
    """Delete one RRset with a TSIG-signed RFC 2136 dynamic update (dnspython).

    ``check`` shows what would go (``delete db.example. A 127.0.0.2 (TTL 30)``) and
    fails like ``rfc2136.update``'s. ``apply`` records the RRset, then deletes it with
    that RRset as the update's prerequisite; nothing is sent when it is absent already.
    ``verify`` asks the authoritative server that the RRset is gone. ``undo`` recreates
    the recorded RRset, refusing if someone created one meanwhile.
    """

    name = "rfc2136.delete"
    outputs = published(
        {
            "name": "The record's name.",
            "type": "The record's type.",
            "previous_values": "Its values before.",
            "previous_ttl": "Its TTL before.",
        }
    )
    Inputs = DeleteInputs

    def describe(self, inputs: DeleteInputs, target: str | None) -> str:
        return f"delete {inputs.name} {inputs.type} on {target} (RFC 2136)"

    def check(self, ctx: DeleteContext) -> str | None:
        server, zone, name, rdtype = self._where(ctx)
        self._preflight(ctx, server, zone)
        current = read_rrset(ctx, server, zone, name, rdtype)
        if current is None:
            return f"leave {name} {rdtype}: it does not exist"
        return f"delete {name} {rdtype} {current.show()}"

    def apply(self, ctx: DeleteContext) -> None:
        server, zone, name, rdtype = self._where(ctx)
        current = read_rrset(ctx, server, zone, name, rdtype)
        ctx.record(PREVIOUS, None if current is None else current.as_record())
        ctx.output("name", name)
        ctx.output("type", rdtype)
        ctx.output("previous_values", list(current.values) if current else [])
        ctx.output("previous_ttl", current.ttl if current else 0)
        if current is None:
            ctx.log(f"{name} {rdtype} does not exist: nothing sent")
            return
        replace(ctx, server, zone, name, rdtype, expect=current, new=None)
        ctx.log(
            f"deleted {name} {rdtype} {current.show()}; resolvers may serve the old answer "
            f"for up to {current.ttl}s"
        )

    def verify(self, ctx: DeleteContext) -> bool:
        """The authoritative server has no such RRset."""
        server, zone, name, rdtype = self._where(ctx)
        return read_rrset(ctx, server, zone, name, rdtype) is None

    def undo(self, ctx: DeleteContext) -> None:
        server, zone, name, rdtype = self._where(ctx)
        previous = self._previous(ctx)
        self._restore(ctx, server, zone, name, rdtype, ours=None, previous=previous)


def _change(current: RRset | None, desired: RRset) -> str:
    """``127.0.0.2 → 127.0.0.3 (TTL 30)``, ``… (TTL 300 → 30)``, or ``… : already in place``."""
    if current == desired:
        return f"{desired.show()}: already in place"
    if current is None:
        return f"(none) → {desired.show()}"
    if current.values == desired.values:
        return f"{current.show(False)} (TTL {current.ttl} → {desired.ttl})"
    ttl = (
        f"TTL {desired.ttl}" if current.ttl == desired.ttl else f"TTL {current.ttl} → {desired.ttl}"
    )
    return f"{current.show(False)} → {desired.show(False)} ({ttl})"
