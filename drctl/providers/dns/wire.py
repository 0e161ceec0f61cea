"""DNS on the wire for the RFC 2136 and resolve steps: queries, TSIG-signed updates, errors.

Every exchange has a timeout bounded by the step's remaining time, and dnspython's
exceptions become StepError here, once, keeping the cause::

    StepError
    ├── Unreachable         (drctl.errors) no answer within the timeout, or the connection was refused
    └── KeyRefused          the server does not accept the TSIG key: unknown name, wrong
                            secret or algorithm, clock skew; or its answer fails our check

Authoritative reads and updates go over TCP (one exchange, no retransmitted update,
a refused connection is known at once); resolver queries go over UDP with a TCP
fallback, as a stub resolver would ask. Records are compared as sets of canonical
presentation strings (``dns.rdata`` parsed, then printed), so ``2001:db8:0::1`` equals
``2001:db8::1`` and journaled values are plain JSON. The TSIG secret lives only in a
``Server``'s field, which no repr, string or message shows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from drctl.errors import StepError, Unreachable
from drctl.runbook.targets import Rfc2136Target
from drctl.steps.base import StepContext

#: TTL for a new RRset when the step gives none and there is no old RRset to keep it from.
DEFAULT_TTL = 300
#: Types that are not RRsets one may replace with an UPDATE.
UNSUPPORTED_TYPES = frozenset({"SOA", "ANY", "AXFR", "IXFR", "OPT", "TSIG", "TKEY"})


class KeyRefused(StepError):
    """Raised when a server rejects the TSIG key, or its signed answer does not verify."""


def import_client() -> None:
    """Import dnspython's message, query, update and TSIG modules ahead of the first exchange."""
    import dns.message
    import dns.query
    import dns.rdata
    import dns.tsig
    import dns.update  # noqa: F401


# -- servers, names, values ----------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """Where to send DNS messages, and the TSIG key to sign them with (if any)."""

    host: str
    port: int = 53
    key_name: str | None = None
    algorithm: str = "hmac-sha256"
    secret: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def of_target(cls, target: Rfc2136Target, what: str = "target") -> Server:
        """The server of an ``rfc2136`` target (secrets already resolved)."""
        key_name, secret = target.tsig_key_name, target.tsig_secret
        if bool(key_name) != bool(secret):
            raise StepError(f"{what}: give both tsig_key_name and tsig_secret, or neither")
        return cls(
            host=target.server, port=target.port, key_name=key_name or None,
            algorithm=target.tsig_algorithm, secret=secret or None,
        )  # fmt: skip

    @classmethod
    def parse(cls, text: str, default_port: int = 53) -> Server | None:
        """``127.0.0.1``, ``127.0.0.1:5353``, ``::1`` or ``[::1]:5353``; None if not an address."""
        host, port = text.strip(), default_port
        if host.startswith("["):
            inside, _, rest = host[1:].partition("]")
            host = inside
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
            elif rest:
                return None
        elif host.count(":") == 1:
            host, _, tail = host.partition(":")
            if not tail.isdigit():
                return None
            port = int(tail)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        return cls(host=host, port=port) if 0 < port < 65536 else None


def zone_name(zone: str) -> str:
    return zone if zone.endswith(".") else zone + "."


def absolute_name(name: str, zone: str | None) -> str:
    """The absolute owner name of ``name`` in ``zone``, or a StepError if it is outside.

    ``db`` → ``db.<zone>``; ``@`` → the apex; ``db.example.com.`` as written; a name
    without the final dot that already ends in the zone's name (``db.example.com``
    in ``example.com.``) is taken as absolute rather than doubled. Without a zone a
    name is always absolute.
    """
    import dns.exception
    import dns.name

    try:
        if zone is None:
            return dns.name.from_text(name.strip()).to_text()
        origin = dns.name.from_text(zone_name(zone))
        text = name.strip()
        if text in ("@", ""):
            return origin.to_text()
        if not text.endswith("."):
            written_absolute = dns.name.from_text(text + ".").is_subdomain(origin)
            text = text + "." if written_absolute else f"{text}.{origin.to_text()}"
        absolute = dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise StepError(f"invalid DNS name {name!r}: {exc}") from exc
    if not absolute.is_subdomain(origin):
        raise StepError(f"{absolute.to_text()} is not in zone {origin.to_text()}")
    return absolute.to_text()


def canonical_values(rdtype: str, values: Iterable[str], origin: str | None) -> tuple[str, ...]:
    """Values in presentation format, parsed and printed back, sorted and de-duplicated.

    Names inside values (CNAME, MX, SRV targets) are relative to ``origin`` unless they
    end with a dot. A TXT value not in quotes is one string, quoted here.
    """
    import dns.exception
    import dns.name
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    try:
        kind = dns.rdatatype.from_text(rdtype)
    except dns.rdatatype.UnknownRdatatype as exc:
        raise StepError(f"unknown record type {rdtype!r}") from exc
    base = dns.name.from_text(zone_name(origin)) if origin else dns.name.root
    out = set()
    for value in values:
        text = str(value).strip()
        if rdtype in ("TXT", "SPF") and not text.startswith('"'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        try:
            rdata = dns.rdata.from_text(
                dns.rdataclass.IN, kind, text, origin=base, relativize=False
            )
        except (dns.exception.DNSException, ValueError) as exc:
            raise StepError(f"invalid {rdtype} value {value!r}: {exc}") from exc
        out.add(rdata.to_text())
    return tuple(sorted(out))


@dataclass(frozen=True)
class RRset:
    """One RRset's TTL and values (canonical presentation strings, sorted)."""

    ttl: int
    values: tuple[str, ...]

    def show(self, with_ttl: bool = True) -> str:
        text = ", ".join(self.values)
        return f"{text} (TTL {self.ttl})" if with_ttl else text

    def as_record(self) -> dict[str, Any]:
        return {"ttl": self.ttl, "values": list(self.values)}

    @classmethod
    def from_record(cls, value: Any) -> RRset | None:
        if value is None:
            return None
        return cls(ttl=int(value["ttl"]), values=tuple(sorted(str(v) for v in value["values"])))


def show(rrset: RRset | None, with_ttl: bool = True) -> str:
    return "(none)" if rrset is None else rrset.show(with_ttl)


# -- exchanges -----------------------------------------------------------------------------


def _key(server: Server) -> Any:
    """The TSIG key of a server, or None; a bad secret is an error that does not show it."""
    if not server.key_name or not server.secret:
        return None
    import binascii

    import dns.exception
    import dns.tsig

    try:
        key = dns.tsig.Key(server.key_name, server.secret, server.algorithm)
    except (binascii.Error, ValueError) as exc:
        raise StepError(
            f"TSIG key {server.key_name!r}: the secret is not valid base64 ({type(exc).__name__})"
        ) from None
    except dns.exception.DNSException as exc:  # a malformed key or algorithm name
        raise StepError(f"TSIG key {server.key_name!r}: {exc}") from exc
    if key.algorithm not in dns.tsig.mac_sizes or key.algorithm == dns.tsig.GSS_TSIG:
        raise StepError(
            f"TSIG key {server.key_name!r}: algorithm {server.algorithm!r} is not supported "
            "(use hmac-sha256, hmac-sha384, hmac-sha512, …)"
        )
    return key


def _exchange(
    ctx: StepContext, server: Server, message: Any, *, what: str, tcp: bool, cap: float
) -> Any:
    """Send one message and return the response, every failure a StepError."""
    import dns.exception
    import dns.query
    import dns.tsig

    timeout = max(0.2, min(ctx.remaining(), cap))
    try:
        if tcp:
            return dns.query.tcp(message, server.host, timeout=timeout, port=server.port)
        response, _ = dns.query.udp_with_fallback(
            message, server.host, timeout=timeout, port=server.port
        )
        return response
    except dns.exception.Timeout as exc:
        raise Unreachable(f"{what}: no answer from {server} within {timeout:.1f}s") from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise Unreachable(f"{what}: cannot reach {server}: {reason}") from exc
    except dns.tsig.PeerBadKey as exc:
        raise KeyRefused(
            f"{what}: {server} does not know TSIG key {server.key_name!r} (BADKEY)"
        ) from exc
    except dns.tsig.PeerBadSignature as exc:
        raise KeyRefused(
            f"{what}: {server} refused the signature of TSIG key {server.key_name!r} (BADSIG): "
            f"wrong secret or algorithm ({server.algorithm})"
        ) from exc
    except dns.tsig.PeerBadTime as exc:
        raise KeyRefused(
            f"{what}: {server} refused the TSIG signature's time (BADTIME): clocks differ"
        ) from exc
    except (dns.tsig.BadSignature, dns.tsig.BadTime, dns.tsig.BadAlgorithm) as exc:
        raise KeyRefused(f"{what}: the answer from {server} fails TSIG: {exc}") from exc
    except dns.exception.DNSException as exc:
        raise StepError(f"{what}: bad answer from {server}: {exc}") from exc


def _query(server: Server, name: str, rdtype: str, *, recursion: bool) -> Any:
    import dns.flags
    import dns.message

    message = dns.message.make_query(name, rdtype)
    if not recursion:
        message.flags &= ~dns.flags.RD
    key = _key(server)
    if key is not None:
        message.use_tsig(key)
    return message


def _rcode(response: Any) -> str:
    import dns.rcode

    return str(dns.rcode.to_text(response.rcode()))


def _authoritative(response: Any, server: Server, zone: str, what: str) -> None:
    import dns.flags

    rcode = _rcode(response)
    if rcode not in ("NOERROR", "NXDOMAIN"):
        raise StepError(f"{what}: {server} does not serve zone {zone} ({rcode})")
    if not response.flags & dns.flags.AA:
        raise StepError(f"{what}: {server} is not authoritative for zone {zone}")


def zone_serial(ctx: StepContext, server: Server, zone: str) -> int:
    """The zone's SOA serial from ``server``, which must be authoritative for it."""
    import dns.rdatatype

    zone = zone_name(zone)
    what = f"zone {zone}"
    response = _exchange(
        ctx, server, _query(server, zone, "SOA", recursion=False), what=what, tcp=True, cap=5.0
    )
    _authoritative(response, server, zone, what)
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.name.to_text() == zone:
            return int(rrset[0].serial)
    raise StepError(f"{what}: {server} has no SOA for {zone}: it does not serve that zone")


def read_rrset(ctx: StepContext, server: Server, zone: str, name: str, rdtype: str) -> RRset | None:
    """The RRset ``name``/``rdtype`` as the zone's authoritative server has it now."""
    import dns.rdatatype

    what = f"{name} {rdtype}"
    response = _exchange(
        ctx, server, _query(server, name, rdtype, recursion=False), what=what, tcp=True, cap=5.0
    )
    _authoritative(response, server, zone_name(zone), what)
    kind = dns.rdatatype.from_text(rdtype)
    for rrset in response.answer:
        if rrset.rdtype == kind and rrset.name.to_text() == name:
            return RRset(rrset.ttl, tuple(sorted({rdata.to_text() for rdata in rrset})))
    return None


def _update_message(server: Server, zone: str) -> Any:
    import dns.update

    return dns.update.UpdateMessage(zone_name(zone), keyring=_key(server))


def _send_update(ctx: StepContext, server: Server, zone: str, message: Any, what: str) -> None:
    response = _exchange(ctx, server, message, what=what, tcp=True, cap=10.0)
    rcode = _rcode(response)
    if rcode == "NOERROR":
        return
    reasons = {
        "REFUSED": f"{server} refused the update (REFUSED): the key may not update zone "
        f"{zone}, or the server's checks rejected the records (its log says which)",
        "NOTAUTH": f"{server} is not authoritative for zone {zone} (or refused the key)",
        "NOTZONE": f"the name is not in zone {zone}",
        "NXRRSET": "the RRset changed since it was read (prerequisite failed); nothing was changed",
        "YXRRSET": "the RRset changed since it was read (prerequisite failed); nothing was changed",
        "NXDOMAIN": "the RRset changed since it was read (prerequisite failed); nothing was changed",
        "YXDOMAIN": "the RRset changed since it was read (prerequisite failed); nothing was changed",
    }
    raise StepError(f"{what}: {reasons.get(rcode, f'{server} answered {rcode}')}")


def may_update(ctx: StepContext, server: Server, zone: str) -> None:
    """Prove the key may update the zone with an UPDATE that changes nothing.

    Its only content is the prerequisite "the zone's SOA exists", so the server checks
    the signature and its update policy, then has nothing to apply: no new serial.
    """
    import dns.name
    import dns.rdatatype

    message = _update_message(server, zone)
    message.present(dns.name.from_text(zone_name(zone)), dns.rdatatype.SOA)
    _send_update(ctx, server, zone, message, f"update permission on zone {zone_name(zone)}")


def replace(
    ctx: StepContext,
    server: Server,
    zone: str,
    name: str,
    rdtype: str,
    *,
    expect: RRset | None,
    new: RRset | None,
) -> None:
    """Replace the RRset ``name``/``rdtype`` by ``new`` (None deletes it), atomically.

    The update carries a prerequisite that the RRset still holds ``expect``'s values
    (None: that it does not exist), so a change made by someone else since it was
    read is never overwritten: the server refuses the whole update instead.
    """
    import dns.name
    import dns.rdataclass
    import dns.rdataset
    import dns.rdatatype

    owner = dns.name.from_text(name)
    kind = dns.rdatatype.from_text(rdtype)
    message = _update_message(server, zone)
    if expect is None:
        message.absent(owner, kind)
    else:
        message.present(owner, dns.rdataset.from_text_list("IN", kind, 0, list(expect.values)))
    if new is None:
        message.delete(owner, kind)
    else:
        message.replace(owner, dns.rdataset.from_text_list("IN", kind, new.ttl, list(new.values)))
    _send_update(ctx, server, zone, message, f"{name} {rdtype}")


# -- resolving -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """What a server answered for a name: the final RRset's values, or none, and the TTL."""

    values: tuple[str, ...]
    #: Seconds the answer may still be cached: the TTL of the answer (the lowest along a
    #: CNAME chain), or the negative-caching TTL when the name or type does not exist.
    ttl: int
    status: str
    canonical_name: str

    def show(self) -> str:
        if not self.values:
            return (
                f"{'no such name' if self.status == 'NXDOMAIN' else 'no records'} (TTL {self.ttl})"
            )
        return f"{', '.join(self.values)} (TTL {self.ttl})"


def resolve(
    ctx: StepContext, server: Server, name: str, rdtype: str, *, cap: float = 5.0
) -> Resolution:
    """Ask ``server`` (recursion desired) for ``name``/``rdtype``, following CNAMEs in the answer.

    ``cap`` bounds the wait for the answer (and the step's remaining time does too).
    """
    import dns.exception

    what = f"resolve {name} {rdtype}"
    response = _exchange(
        ctx, server, _query(server, name, rdtype, recursion=True), what=what, tcp=False, cap=cap
    )
    status = _rcode(response)
    if status not in ("NOERROR", "NXDOMAIN"):
        raise StepError(f"{what}: {server} answered {status}")
    try:
        chain = response.resolve_chaining()
    except dns.exception.DNSException as exc:
        raise StepError(f"{what}: bad answer from {server}: {exc}") from exc
    values = tuple(sorted({r.to_text() for r in chain.answer})) if chain.answer else ()
    return Resolution(values, int(chain.minimum_ttl), status, chain.canonical_name.to_text())
