"""A Route 53 hosted zone through boto3: record sets read, compared, changed, and INSYNC.

Record sets are the plain dicts Route 53's API uses (``Name``, ``Type``, ``TTL``,
``ResourceRecords``, ``AliasTarget``, ``SetIdentifier``, ``Weight``, ...), so what is
journaled is exactly what Route 53 said and what ``undo`` sends back. ``canonical``
says when two of them are the same to Route 53 (value order, case and final dots in
names); ``change_line`` shows a change as ``old.example. → new.example. (TTL 60 → 30)``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from drctl.errors import StepError
from drctl.providers.aws.session import Aws, NotFound
from drctl.steps.base import StepContext, short

#: Bound on ListResourceRecordSets pages read for one name (300 record sets a page).
MAX_PAGES = 20
#: Types whose values end in a domain name, compared without case or a final dot.
_NAME_VALUED = frozenset({"CNAME", "NS", "PTR", "MX", "SRV"})
#: Routing-policy fields of a record set, with the words used for them in messages.
ROUTING = {"Weight": "weight", "Failover": "failover", "Region": "region"}
_SHOWN = {"TTL": "TTL", **ROUTING, "HealthCheckId": "health check"}


def absolute(name: str) -> str:
    """``DB.Example.com`` → ``db.example.com.``; Route 53's ``\\052`` escapes decoded."""
    name = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), name.strip()).lower()
    return name if name.endswith(".") else name + "."


def _value(rtype: str, value: str) -> str:
    value = " ".join(str(value).split())
    if rtype in _NAME_VALUED:
        return value.lower().rstrip(".")
    if rtype == "AAAA":
        try:
            return str(ipaddress.IPv6Address(value))
        except ValueError:
            return value
    return value


def canonical(rrs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A record set in a form where equal means equal to Route 53 (order, case, final dots)."""
    if rrs is None:
        return None
    rtype = str(rrs.get("Type", "")).upper()
    out = {k: v for k, v in rrs.items() if k not in ("Name", "ResourceRecords", "AliasTarget")}
    out["Name"] = absolute(str(rrs.get("Name", "")))
    if "ResourceRecords" in rrs:
        out["ResourceRecords"] = sorted(_value(rtype, r["Value"]) for r in rrs["ResourceRecords"])
    if "AliasTarget" in rrs:
        alias = rrs["AliasTarget"]
        out["AliasTarget"] = [
            str(alias["HostedZoneId"]).rsplit("/", 1)[-1],
            _value("CNAME", str(alias["DNSName"])),
            bool(alias.get("EvaluateTargetHealth", False)),
        ]
    return out


def same(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    return canonical(a) == canonical(b)


def holds(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether every field of ``wanted`` is in ``current`` with the same value."""
    have, want = canonical(current), canonical(wanted)
    return have is not None and want is not None and all(have.get(k) == v for k, v in want.items())


def _values(rrs: Mapping[str, Any]) -> str:
    if "AliasTarget" in rrs:
        alias = rrs["AliasTarget"]
        health = ", evaluate health" if alias.get("EvaluateTargetHealth") else ""
        return f"alias {alias['DNSName']} ({alias['HostedZoneId']}{health})"
    return short(", ".join(str(r["Value"]) for r in rrs.get("ResourceRecords", [])), 80)


def change_line(current: Mapping[str, Any] | None, desired: Mapping[str, Any] | None) -> str:
    """``old → new (TTL 30)``, ``new (TTL 300 → 30)``, ``(none) → new (...)`` or ``... : already in place``."""
    if same(current, desired):
        return (
            "(none): already in place" if current is None else f"{show(current)}: already in place"
        )
    if desired is None:
        return f"{show(current)} → (none)"
    if current is None:
        return f"(none) → {show(desired)}"
    attrs = []
    for key, label in _SHOWN.items():
        old, new = current.get(key), desired.get(key)
        if old == new and new is not None:
            attrs.append(f"{label} {new}")
        elif old != new:
            attrs.append(f"{label} {'-' if old is None else old} → {'-' if new is None else new}")
    old_values, new_values = _values(current), _values(desired)
    values = old_values if old_values == new_values else f"{old_values} → {new_values}"
    return f"{values} ({', '.join(attrs)})" if attrs else values


def show(rrs: Mapping[str, Any] | None) -> str:
    if rrs is None:
        return "(none)"
    attrs = [f"{label} {rrs[key]}" for key, label in _SHOWN.items() if rrs.get(key) is not None]
    return f"{_values(rrs)} ({', '.join(attrs)})" if attrs else _values(rrs)


# -- the hosted zone -----------------------------------------------------------------------


class HostedZone:
    """One hosted zone through one client: read record sets, send a change, wait for INSYNC."""

    def __init__(self, aws: Aws, zone_id: str) -> None:
        self.aws = aws
        self.id = zone_id.strip().rsplit("/", 1)[-1]

    def name(self) -> str:
        """The zone's name; a StepError if it does not exist or cannot be read."""
        try:
            zone = self.aws.call("get_hosted_zone", Id=self.id)
        except NotFound as exc:
            raise StepError(
                f"Route 53 hosted zone {self.id} does not exist (or these credentials cannot "
                f"see it): {exc.message}"
            ) from exc
        return absolute(str(zone["HostedZone"]["Name"]))

    def record_sets(self, name: str) -> list[dict[str, Any]]:
        """Every record set named ``name`` (all types and set identifiers), in Route 53's order."""
        found: list[dict[str, Any]] = []
        start: dict[str, str] = {"StartRecordName": name}
        for _ in range(MAX_PAGES):
            page = self.aws.call(
                "list_resource_record_sets", HostedZoneId=self.id, MaxItems="300", **start
            )
            found += [r for r in page["ResourceRecordSets"] if absolute(r["Name"]) == name]
            nexts = (
                ("StartRecordName", page.get("NextRecordName")),
                ("StartRecordType", page.get("NextRecordType")),
                ("StartRecordIdentifier", page.get("NextRecordIdentifier")),
            )
            following = {k: str(v) for k, v in nexts if v}
            if (
                not page.get("IsTruncated")
                or absolute(following.get("StartRecordName", ".")) != name
                or following == start  # no progress: do not read the same page again
            ):
                return found
            start = following
        raise StepError(f"{name} has more than {MAX_PAGES * 300} record sets; not reading on")

    def record_set(self, name: str, rtype: str, set_id: str | None) -> dict[str, Any] | None:
        for rrs in self.record_sets(name):
            if rrs["Type"] == rtype and rrs.get("SetIdentifier") == set_id:
                return rrs
        return None

    def change(self, ctx: StepContext, action: str, rrs: Mapping[str, Any]) -> str:
        """Send one change; returns its change id."""
        comment = f"drctl {ctx.runbook} run {ctx.run_id} step {ctx.step_id}"[:256]
        sent = self.aws.call(
            "change_resource_record_sets",
            HostedZoneId=self.id,
            ChangeBatch={
                "Comment": comment,
                "Changes": [{"Action": action, "ResourceRecordSet": dict(rrs)}],
            },
        )
        return str(sent["ChangeInfo"]["Id"]).rsplit("/", 1)[-1]

    def wait_insync(
        self, ctx: StepContext, change_id: str, timeout: float, interval: float
    ) -> None:
        """Poll GetChange until INSYNC; bounded by ``timeout``, the step's deadline and a count."""
        status = "unknown"

        def insync() -> bool | None:
            nonlocal status
            status = str(self.aws.call("get_change", Id=change_id)["ChangeInfo"]["Status"])
            return True if status == "INSYNC" else None

        polled = ctx.poll(insync, every=interval, within=timeout)
        if not polled.done:
            raise StepError(
                f"Route 53 change {change_id} is still {status} after {polled.waited:.0f}s (limit "
                f"{min(timeout, ctx.remaining() + polled.waited):g}s); it was sent, and resume will "
                "verify it"
            )
