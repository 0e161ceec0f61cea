"""``dns.resolve``: resolve a name until it gives the expected answer, or a deadline passes."""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import Field, field_validator

from drctl.errors import StepError, StepTimeout
from drctl.providers.dns.wire import (
    Resolution,
    Server,
    absolute_name,
    canonical_values,
    import_client,
    resolve,
    zone_name,
)
from drctl.runbook.durations import format_duration
from drctl.runbook.model import Duration
from drctl.runbook.targets import Rfc2136Target
from drctl.steps.base import Role, StepContext, StepInputs, StepType, published, short


class ResolverAddress(StepInputs):
    ip: str = Field(description="The resolver's IP address.")
    port: int = Field(default=53, ge=1, le=65535)

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"not an IP address: {value!r}") from None


class ResolveInputs(StepInputs):
    name: str = Field(
        description="The name to resolve; absolute. Asking an rfc2136 target's server, a "
        "name without a final dot is relative to its zone (as in rfc2136.update)."
    )
    type: str = Field(
        default="A", pattern=r"^[A-Z][A-Z0-9-]*$", description="Record type: A, AAAA, CNAME, TXT, …"
    )
    expect: list[str] = Field(
        description="The expected values (a list, or one string), compared as a set with the "
        "final answer after CNAMEs; `[]` expects no records (the name or type does not exist)."
    )
    resolver: ResolverAddress | str | None = Field(
        default=None,
        description="Whom to ask: {ip, port}; an address string (`10.0.0.2`, `10.0.0.2:5353`, "
        "`[::1]:53`); or the name of an rfc2136 target, to ask its server (signed with its "
        "key). Default: the step's rfc2136 target if it has one, else the first nameserver "
        "in /etc/resolv.conf.",
    )
    deadline: Duration = Field(default=60.0, description="Keep asking this long.")
    interval: Duration = Field(default=2.0, description="Seconds between queries.")

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("expect", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str | int | float):
            return [str(value)]
        return value

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("interval must be more than 0")
        return value


Ctx = StepContext[ResolveInputs, Rfc2136Target | None]


class Resolve(StepType[ResolveInputs, Rfc2136Target | None]):
    """Resolve a name until it gives the expected values; at the deadline, report the TTL to wait.

    Asks one server — a resolver by address, an rfc2136 target's authoritative
    server, or the system's first nameserver — with recursion desired, follows
    CNAMEs within the answer, and compares the final RRset's values with ``expect``
    as a set. ``verify`` asks once: whether the name resolves to the expected values
    now, so ``wait: until: {type: dns.resolve, ...}`` polls it. On timeout the error
    says what the name still resolves to and the TTL still to wait: how long that
    answer may yet be served from caches (``ttl_remaining``). Publishes ``values``,
    ``ttl``, ``polls`` and ``waited``.
    """

    name = "dns.resolve"
    outputs = published(
        {
            "values": "The answer's values.",
            "ttl": "The answer's TTL.",
            "ttl_remaining": "Seconds resolvers may still serve an older answer.",
            "polls": "Queries sent.",
            "waited": "Seconds waited for the expected answer.",
        }
    )
    Inputs = ResolveInputs
    wait_fields = ("deadline",)
    roles = frozenset({Role.VERIFY})
    target_types = frozenset({"rfc2136"})
    target_required = False

    def warm_up(self) -> None:
        import_client()

    def describe(self, inputs: ResolveInputs, target: str | None) -> str:
        if isinstance(inputs.resolver, ResolverAddress):
            via = f" via {inputs.resolver.ip}:{inputs.resolver.port}"
        elif inputs.resolver:
            via = f" via {inputs.resolver}"
        else:
            via = f" via {target}" if target else ""
        expect = short(", ".join(inputs.expect), 50) if inputs.expect else "nothing"
        return (
            f"resolve {inputs.name} {inputs.type}{via} until it is {expect} "
            f"(every {format_duration(inputs.interval)}, up to {format_duration(inputs.deadline)})"
        )

    # -- whom to ask, and what -----------------------------------------------------------

    @staticmethod
    def _server(ctx: Ctx) -> tuple[Server, str | None]:
        """The server to ask and the zone relative names belong to (None: absolute names)."""
        inputs = ctx.inputs
        resolver = inputs.resolver
        if isinstance(resolver, ResolverAddress):
            return Server(host=resolver.ip, port=resolver.port), None
        if isinstance(resolver, str):
            address = Server.parse(resolver)
            if address is not None:
                return address, None
            target = ctx.target_named(resolver, Rfc2136Target)
            return Server.of_target(target, f"resolver {resolver}"), zone_name(target.zone)
        if ctx.target is not None:
            return Server.of_target(ctx.target, ctx.step_id), zone_name(ctx.target.zone)
        return _system_resolver(), None

    def _ask(self, ctx: Ctx, cap: float = 5.0) -> tuple[Server, str, tuple[str, ...], Resolution]:
        inputs = ctx.inputs
        server, zone = self._server(ctx)
        name = absolute_name(inputs.name, zone) if zone else absolute_name(inputs.name, None)
        expected = canonical_values(inputs.type, inputs.expect, zone)
        return server, name, expected, resolve(ctx, server, name, inputs.type, cap=cap)

    # -- the contract ----------------------------------------------------------------------

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        server, name, expected, got = self._ask(ctx)
        head = f"resolve {name} {inputs.type}: now {got.show()} via {server}"
        if got.values == expected:
            return f"{head}, as expected"
        return f"{head}; expecting {_show(expected)}"

    def verify(self, ctx: Ctx) -> bool:
        """Whether the name resolves to the expected values now (one query)."""
        _, _, expected, got = self._ask(ctx)
        return got.values == expected

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        budget = min(inputs.deadline, ctx.remaining())
        started = ctx.monotonic()
        last: Resolution | None = None
        last_error = ""
        shown = ""
        name, via, expected = inputs.name, "", tuple(inputs.expect)

        def resolved() -> Resolution | None:
            nonlocal last, last_error, shown, name, via, expected
            # A query never outlasts the deadline: a silent server costs at most what is left.
            cap = max(0.2, min(5.0, budget - (ctx.monotonic() - started)))
            try:
                server, name, expected, last = self._ask(ctx, cap)
                via, last_error = str(server), ""
            except StepError as exc:
                last_error = exc.message
            if last is not None and not last_error and last.values == expected:
                return last
            now = last_error or f"{name} {inputs.type} → {last.show() if last else '?'} via {via}"
            if now != shown:
                ctx.log(f"{now}; waiting for {_show(expected)}")
                shown = now
            return None

        polled = ctx.poll(resolved, every=inputs.interval, within=budget)
        polls = polled.polls
        if polled.value is not None:
            waited = round(polled.waited, 3)
            ctx.output("values", list(polled.value.values))
            ctx.output("ttl", polled.value.ttl)
            ctx.output("polls", polls)
            ctx.output("waited", waited)
            ctx.log(
                f"{name} {inputs.type} → {polled.value.show()} after {polls} poll(s), {waited:g}s"
            )
            return
        waited = round(polled.waited, 1)
        if last is None:
            raise StepTimeout(
                f"{name} {inputs.type}: no answer after {polls} poll(s) in {waited:g}s: {last_error}"
            )
        ctx.output("values", list(last.values))
        ctx.output("ttl_remaining", last.ttl)
        also = f" (last poll: {last_error})" if last_error else ""
        raise StepTimeout(
            f"{name} {inputs.type} still resolves to {_show(last.values)}, not "
            f"{_show(expected)}, after {polls} poll(s) in {waited:g}s{also}; "
            f"that answer may be served for {last.ttl}s more (TTL still to wait)"
        )


def _show(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values) if values else "nothing"


def _system_resolver() -> Server:
    import dns.resolver

    try:
        nameservers = dns.resolver.Resolver(configure=True).nameservers
    except dns.resolver.NoResolverConfiguration as exc:
        raise StepError("no resolver given and none configured in /etc/resolv.conf") from exc
    if not nameservers:
        raise StepError("no resolver given and none configured in /etc/resolv.conf")
    return Server(host=str(nameservers[0]))
