"""``route53.upsert`` and ``route53.delete``: change one Route 53 record set, wait for INSYNC.

A record set is named by (name, type, set identifier) as in Route 53 itself. Each step
reads it, journals it as it was (``ctx.record`` before anything is sent), sends one
ChangeResourceRecordSets, waits for GetChange to say ``INSYNC`` (Route 53 has then
pushed the change to all its authoritative servers) within ``insync_timeout``, and
reads the record set back. ``undo`` puts the journaled record set back field for field
(TTL, values or alias, weight, failover, latency region, health check, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from drctl.errors import StepError
from drctl.providers.aws.hosted_zone import (
    ROUTING,
    HostedZone,
    absolute,
    change_line,
    holds,
    same,
    show,
)
from drctl.providers.aws.session import Aws, import_client
from drctl.runbook.model import Duration
from drctl.runbook.targets import Route53Target
from drctl.steps.base import Role, StepContext, StepInputs, StepType, published, short

#: ``ctx.record`` keys: the record set as it was before the change (None: absent), and
#: the id of the change this step sent (what verify waits on after a resume).
PREVIOUS = "previous"
CHANGE_ID = "change_id"
DEFAULT_TTL = 300

RecordType = Literal[
    "A", "AAAA", "CAA", "CNAME", "DS", "HTTPS", "MX", "NAPTR", "NS", "PTR", "SPF", "SRV",
    "SSHFP", "SVCB", "TLSA", "TXT",
]  # fmt: skip


class AliasInputs(StepInputs):
    hosted_zone_id: str = Field(
        description="The alias target's hosted zone: a load balancer's canonical zone id, "
        "or this zone's id for another record in it."
    )
    dns_name: str = Field(description="The alias target's DNS name.")
    evaluate_target_health: bool = Field(
        default=False, description="Answer only while the alias target is healthy."
    )


class RecordSetInputs(StepInputs):
    name: str = Field(
        description="Absolute record name, e.g. db.example.com. (a final dot is added)."
    )
    type: RecordType = Field(default="A", description="Record type: A, AAAA, CNAME, TXT, ...")
    set_identifier: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Names one record set of a weighted, failover or latency group.",
    )
    insync_timeout: Duration = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="How long to wait for Route 53 to report the change INSYNC.",
    )
    poll_interval: Duration = Field(
        default=5.0, gt=0, le=60, description="Seconds between GetChange polls."
    )

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class UpsertInputs(RecordSetInputs):
    values: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The records (one may be given as a string); default: keep the record "
        "set's values.",
    )
    ttl: int | None = Field(
        default=None,
        ge=0,
        le=2_147_483_647,
        description=f"TTL in seconds; default: keep the old one ({DEFAULT_TTL} for a new record set).",
    )
    alias: AliasInputs | None = Field(
        default=None, description="An alias record instead of values (no TTL)."
    )
    weight: int | None = Field(default=None, ge=0, le=255, description="Weighted routing.")
    failover: Literal["PRIMARY", "SECONDARY"] | None = Field(
        default=None, description="Failover routing."
    )
    region: str | None = Field(default=None, description="Latency routing: the AWS region.")
    health_check_id: str | None = Field(default=None, description="Route 53 health check id.")

    @field_validator("values", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str | int | float):
            return [str(value)]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UpsertInputs:
        if self.values is not None and self.alias is not None:
            raise ValueError("give values or alias, not both")
        if self.alias is not None and self.ttl is not None:
            raise ValueError("an alias record has no TTL (it answers with its target's)")
        routing = [k for k in ("weight", "failover", "region") if getattr(self, k) is not None]
        if len(routing) > 1:
            raise ValueError(f"one routing policy per record set, not {' and '.join(routing)}")
        if routing and self.set_identifier is None:
            raise ValueError(f"{routing[0]} routing needs a set_identifier")
        if self.type == "CNAME" and self.values is not None and len(self.values) > 1:
            raise ValueError("a CNAME record set holds one value")
        return self


class DeleteInputs(RecordSetInputs):
    pass


# -- the step types --------------------------------------------------------------------------


RS = TypeVar("RS", bound=RecordSetInputs)


class Route53Step(StepType[RS, Route53Target], Generic[RS]):
    """Base of the ``route53.*`` step types: the target's zone, the record set's key,
    preflight, the INSYNC wait; boto3 warmed up."""

    roles = frozenset({Role.TRAFFIC, Role.MUTATING})
    target_types = frozenset({"route53"})
    target_required = True

    def warm_up(self) -> None:
        import_client()

    def zone(self, ctx: StepContext[RS, Route53Target]) -> HostedZone:
        """The step's hosted zone, with a client for this phase (a subclass may hand another)."""
        return HostedZone(Aws.open("route53", ctx.target, ctx), ctx.target.hosted_zone_id)

    @staticmethod
    def _key(ctx: StepContext[RS, Route53Target]) -> tuple[str, str, str | None]:
        inputs = ctx.inputs
        return absolute(inputs.name), inputs.type, inputs.set_identifier

    @staticmethod
    def _head(name: str, rtype: str, set_id: str | None) -> str:
        return f"{name} {rtype}" + (f" [{set_id}]" if set_id else "")

    def _preflight(
        self, ctx: StepContext[RS, Route53Target], zone: HostedZone
    ) -> dict[str, Any] | None:
        """The zone exists and holds the name; returns the current record set (read-only)."""
        name, rtype, set_id = self._key(ctx)
        zone_name = zone.name()
        if name != zone_name and not name.endswith("." + zone_name):
            raise StepError(f"{name} is not in hosted zone {zone_name} ({zone.id})")
        here = zone.record_sets(name)
        others = sorted({r["Type"] for r in here} - {rtype})
        if others and (rtype == "CNAME" or "CNAME" in others):
            raise StepError(
                f"{name} has {', '.join(others)} record sets: a CNAME cannot share a name"
            )
        return next(
            (r for r in here if r["Type"] == rtype and r.get("SetIdentifier") == set_id), None
        )

    def _send(
        self,
        ctx: StepContext[RS, Route53Target],
        zone: HostedZone,
        action: str,
        rrs: Mapping[str, Any],
    ) -> str:
        inputs = ctx.inputs
        change_id = zone.change(ctx, action, rrs)
        ctx.record(CHANGE_ID, change_id)
        zone.wait_insync(ctx, change_id, inputs.insync_timeout, inputs.poll_interval)
        return change_id

    def _insync(self, ctx: StepContext[RS, Route53Target], zone: HostedZone) -> bool:
        """The change this step sent (if any) is INSYNC, waiting for it within the limits."""
        inputs = ctx.inputs
        if ctx.recorded.get(CHANGE_ID):
            zone.wait_insync(
                ctx, str(ctx.recorded[CHANGE_ID]), inputs.insync_timeout, inputs.poll_interval
            )
        return True

    def _restore(
        self,
        ctx: StepContext[RS, Route53Target],
        zone: HostedZone,
        ours: Mapping[str, Any] | None,
        previous: Any,
    ) -> None:
        """Put ``previous`` back, but only over what this step left (``ours``)."""
        name, rtype, set_id = self._key(ctx)
        head = self._head(name, rtype, set_id)
        current = zone.record_set(name, rtype, set_id)
        if same(current, previous):
            ctx.log(f"{head} is {show(previous)} already: nothing to undo")
            return
        if (ours is None) != (current is None) or (
            ours is not None and current is not None and not holds(current, ours)
        ):
            raise StepError(
                f"{head} is now {show(current)}, not what this step left: it changed since; "
                f"not undone (it was {show(previous)})"
            )
        if previous is None:
            assert current is not None
            self._send(ctx, zone, "DELETE", current)
        else:
            self._send(ctx, zone, "UPSERT" if current is not None else "CREATE", previous)
        ctx.log(f"{head} {change_line(current, previous)}: restored")


UpsertContext = StepContext[UpsertInputs, Route53Target]
DeleteContext = StepContext[DeleteInputs, Route53Target]


class Upsert(Route53Step[UpsertInputs]):
    """Create or replace one Route 53 record set (UPSERT), wait for INSYNC, and read it back.

    Fields the step does not give are kept from the record set as it is, so
    ``{name: app.example.com., type: CNAME, set_identifier: east, weight: 0}`` only
    drains a weighted record. ``check`` reads the zone and the record set and shows
    ``db.example. CNAME old.example. → new.example. (TTL 30)``; it fails when the zone
    does not exist, the name is outside it, a CNAME would share its name, or the
    credentials may not read them (a missing change permission shows at ``apply``, which
    AWS then refuses whole). ``apply`` records the old record set, sends one UPSERT
    (nothing when it is already as asked), and waits for ``INSYNC``. ``verify`` reads it
    back (every field the step gives) and waits for the recorded change to be INSYNC.
    ``undo`` restores the recorded record set exactly — weighted, failover and alias
    records included — or deletes the one the step created; it refuses if the record set
    changed since. Publishes ``name``, ``type``, ``values``, ``ttl``, ``previous_values``,
    ``previous_ttl`` and ``change_id``.
    """

    name = "route53.upsert"
    outputs = published(
        {
            "name": "The record set's name.",
            "type": "Its type.",
            "values": "Its values after.",
            "ttl": "Its TTL after.",
            "previous_values": "Its values before.",
            "previous_ttl": "Its TTL before.",
            "change_id": "The Route 53 change id (null when nothing was sent).",
        }
    )
    Inputs = UpsertInputs
    wait_fields = ("insync_timeout",)

    def describe(self, inputs: UpsertInputs, target: str | None) -> str:
        head = self._head(absolute(inputs.name), inputs.type, inputs.set_identifier)
        if inputs.alias is not None:
            to = f"alias {inputs.alias.dns_name}"
        elif inputs.values is not None:
            to = short(", ".join(inputs.values), 60)
        else:
            to = "(values kept)"
        attrs = [
            f"{label} {value}"
            for label, value in (
                ("TTL", inputs.ttl), ("weight", inputs.weight), ("failover", inputs.failover),
                ("region", inputs.region), ("health check", inputs.health_check_id),
            )
            if value is not None
        ]  # fmt: skip
        return (
            f"set {head} → {to}"
            + (f" ({', '.join(attrs)})" if attrs else "")
            + (f" in {target} (Route 53)")
        )

    @staticmethod
    def _wanted(inputs: UpsertInputs) -> dict[str, Any]:
        """The fields the step gives, as a Route 53 record set."""
        rrs: dict[str, Any] = {"Name": absolute(inputs.name), "Type": inputs.type}
        if inputs.set_identifier is not None:
            rrs["SetIdentifier"] = inputs.set_identifier
        if inputs.values is not None:
            rrs["ResourceRecords"] = [{"Value": v} for v in inputs.values]
        if inputs.ttl is not None:
            rrs["TTL"] = inputs.ttl
        if inputs.alias is not None:
            rrs["AliasTarget"] = {
                "HostedZoneId": inputs.alias.hosted_zone_id,
                "DNSName": inputs.alias.dns_name,
                "EvaluateTargetHealth": inputs.alias.evaluate_target_health,
            }
        for key, field in (
            ("Weight", "weight"), ("Failover", "failover"), ("Region", "region"),
            ("HealthCheckId", "health_check_id"),
        ):  # fmt: skip
            if getattr(inputs, field) is not None:
                rrs[key] = getattr(inputs, field)
        return rrs

    def _desired(self, ctx: UpsertContext, current: Mapping[str, Any] | None) -> dict[str, Any]:
        """The record set after the change: the current one with the step's fields over it."""
        inputs = ctx.inputs
        wanted = self._wanted(inputs)
        rrs = dict(current) if current is not None else {}
        if "AliasTarget" in wanted:
            rrs.pop("ResourceRecords", None)
            rrs.pop("TTL", None)
        if "ResourceRecords" in wanted:
            rrs.pop("AliasTarget", None)
        if ROUTING.keys() & wanted.keys():
            for key in ROUTING:
                rrs.pop(key, None)
        rrs.update(wanted)
        if "ResourceRecords" in rrs:
            rrs.setdefault("TTL", DEFAULT_TTL)
        elif "AliasTarget" not in rrs:
            raise StepError(
                f"{self._head(*self._key(ctx))} does not exist, and the step gives no values "
                "or alias to create it with"
            )
        return rrs

    def check(self, ctx: UpsertContext) -> str | None:
        zone = self.zone(ctx)
        current = self._preflight(ctx, zone)
        return f"{self._head(*self._key(ctx))} {change_line(current, self._desired(ctx, current))}"

    def apply(self, ctx: UpsertContext) -> None:
        name, rtype, set_id = self._key(ctx)
        head = self._head(name, rtype, set_id)
        zone = self.zone(ctx)
        current = zone.record_set(name, rtype, set_id)
        desired = self._desired(ctx, current)
        for key, rrs in (("", desired), ("previous_", current)):
            ctx.output(f"{key}values", [r["Value"] for r in (rrs or {}).get("ResourceRecords", [])])
            ctx.output(f"{key}ttl", (rrs or {}).get("TTL", 0))
        ctx.output("name", name)
        ctx.output("type", rtype)
        ctx.output("change_id", None)
        if same(current, desired):
            # Not recorded: an earlier attempt that made the change recorded the real old one.
            ctx.log(f"{head} is {show(current)} already: nothing sent")
            return
        ctx.record(PREVIOUS, current)
        change_id = self._send(ctx, zone, "UPSERT", desired)
        ctx.output("change_id", change_id)
        cached = f"; resolvers may serve the old answer for up to {current['TTL']}s" if (
            current and "TTL" in current
        ) else ""  # fmt: skip
        ctx.log(f"{head} {change_line(current, desired)}; change {change_id} INSYNC{cached}")

    def verify(self, ctx: UpsertContext) -> bool:
        """Route 53 holds every field the step gives, and the change it sent is INSYNC."""
        inputs = ctx.inputs
        zone = self.zone(ctx)
        if not holds(zone.record_set(*self._key(ctx)), self._wanted(inputs)):
            return False
        return self._insync(ctx, zone)

    def undo(self, ctx: UpsertContext) -> None:
        if PREVIOUS not in ctx.recorded:
            ctx.log("this step sent no change: nothing to undo")
            return
        inputs = ctx.inputs
        self._restore(ctx, self.zone(ctx), self._wanted(inputs), ctx.recorded[PREVIOUS])


class Delete(Route53Step[DeleteInputs]):
    """Delete one Route 53 record set, wait for INSYNC, and check it is gone.

    ``check`` shows what would go (``db.example. CNAME old.example. (TTL 60) → (none)``)
    and fails like ``route53.upsert``'s. ``apply`` records the record set, then deletes
    exactly it (nothing is sent when it is absent already) and waits for ``INSYNC``.
    ``verify``: no such record set, and the change is INSYNC. ``undo`` recreates the
    recorded record set, refusing if one was created meanwhile. Publishes ``name``,
    ``type``, ``previous_values``, ``previous_ttl`` and ``change_id``.
    """

    name = "route53.delete"
    outputs = published(
        {
            "name": "The record set's name.",
            "type": "Its type.",
            "previous_values": "Its values before.",
            "previous_ttl": "Its TTL before.",
            "change_id": "The Route 53 change id (null when nothing was sent).",
        }
    )
    Inputs = DeleteInputs
    wait_fields = ("insync_timeout",)

    def describe(self, inputs: DeleteInputs, target: str | None) -> str:
        head = self._head(absolute(inputs.name), inputs.type, inputs.set_identifier)
        return f"delete {head} in {target} (Route 53)"

    def check(self, ctx: DeleteContext) -> str | None:
        current = self._preflight(ctx, self.zone(ctx))
        return f"{self._head(*self._key(ctx))} {change_line(current, None)}"

    def apply(self, ctx: DeleteContext) -> None:
        name, rtype, set_id = self._key(ctx)
        head = self._head(name, rtype, set_id)
        zone = self.zone(ctx)
        current = zone.record_set(name, rtype, set_id)
        ctx.output("name", name)
        ctx.output("type", rtype)
        ctx.output(
            "previous_values", [r["Value"] for r in (current or {}).get("ResourceRecords", [])]
        )
        ctx.output("previous_ttl", (current or {}).get("TTL", 0))
        ctx.output("change_id", None)
        if current is None:
            ctx.log(f"{head} does not exist: nothing sent")
            return
        ctx.record(PREVIOUS, current)
        change_id = self._send(ctx, zone, "DELETE", current)
        ctx.output("change_id", change_id)
        ctx.log(f"{head} {change_line(current, None)}; change {change_id} INSYNC")

    def verify(self, ctx: DeleteContext) -> bool:
        """Route 53 has no such record set, and the change the step sent is INSYNC."""
        zone = self.zone(ctx)
        return zone.record_set(*self._key(ctx)) is None and self._insync(ctx, zone)

    def undo(self, ctx: DeleteContext) -> None:
        if ctx.recorded.get(PREVIOUS) is None:
            ctx.log("this step deleted nothing: nothing to undo")
            return
        self._restore(ctx, self.zone(ctx), None, ctx.recorded[PREVIOUS])
