"""Clients and commands for the MongoDB steps, with every pymongo error translated once.

A target's ``uri`` names the replica set (a seed list and ``replicaSet``); steps that act
on one member connect to it directly by its name in the replica-set config
(``host:port``), with the URI's credentials and options. Every client has a server
selection, connect and socket timeout bounded by the step's remaining time (and by the
URI's own, when it sets smaller ones), so a member that does not answer fails the step
instead of hanging drctl. pymongo's exceptions become these, here, keeping the cause::

    StepError
    ├── Unreachable          (drctl.errors) no suitable member answered within the selection timeout
    ├── ConnectionDropped    the connection closed or timed out mid-command (a step-down
    │                        closes its own connection on servers before 4.2)
    ├── NotPrimary           the command needs the primary and the member is not it
    ├── CommandFailed        the server answered ``ok: 0`` (``code``, ``code_name``)
    └── WriteConcernFailed   the write was applied but not acknowledged as asked
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

from drctl.errors import StepError, Unreachable, first_line
from drctl.steps.base import StepContext

#: Upper bound on server selection when neither the URI nor the step says less: a member
#: that has not answered in 5 s on a healthy network is down or cut off.
SELECTION_CAP = 5.0

NOT_PRIMARY_CODES = frozenset({10107, 13435, 11602, 189})


class ConnectionDropped(StepError):
    """Raised when a connection closes or times out while a command is in flight."""


class NotPrimary(StepError):
    """Raised when a command that needs the primary reaches a member that is not primary."""


class CommandFailed(StepError):
    """Raised when the server answers a command with ``ok: 0``."""

    def __init__(self, message: str, *, code: int | None, code_name: str) -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name


class WriteConcernFailed(StepError):
    """Raised when a write is applied but its write concern is not satisfied (e.g. wtimeout)."""


def brief(exc: BaseException) -> str:
    """An exception's first line without pymongo's topology dump."""
    return first_line(exc).split(", Timeout:", 1)[0].split(" (configured timeouts:", 1)[0]


def _uri_option_seconds(uri: str, name: str) -> float | None:
    """A ``...MS`` option given in the URI, in seconds (keys are case-insensitive)."""
    query = uri.partition("?")[2]
    for key, value in parse_qsl(query):
        if key.lower() == name.lower():
            try:
                return float(value) / 1000.0
            except ValueError:
                return None
    return None


def timeouts(uri: str, budget: float) -> dict[str, Any]:
    """Client timeout options (ms): the step's budget, capped by what the URI asks for."""

    def capped(name: str, default_cap: float) -> int:
        given = _uri_option_seconds(uri, name)
        limit = min(budget, default_cap if not given else min(given, default_cap))
        return max(100, int(limit * 1000))

    return {
        "serverSelectionTimeoutMS": capped("serverSelectionTimeoutMS", SELECTION_CAP),
        "connectTimeoutMS": capped("connectTimeoutMS", SELECTION_CAP),
        "socketTimeoutMS": capped("socketTimeoutMS", budget),
    }


def member_uri(uri: str, member: str) -> str:
    """The set's URI pointed at one member: same credentials, database and options.

    ``mongodb+srv`` URIs become ``mongodb://`` ones with what SRV implies (TLS) and what
    its TXT record gave (``authSource``, ``replicaSet``) written out.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("mongodb", "mongodb+srv"):
        raise StepError("the target's uri is not a mongodb:// or mongodb+srv:// URI")
    main, _, query = rest.partition("?")
    hosts_part, slash, database = main.partition("/")
    userinfo, at, _hosts = hosts_part.rpartition("@")
    text = f"mongodb://{userinfo}{at}{member}/{database if slash else ''}"
    if scheme == "mongodb":
        return text + (f"?{query}" if query else "")
    from urllib.parse import urlencode

    from pymongo import uri_parser

    options = uri_parser.parse_uri(uri)["options"]
    pairs = parse_qsl(query, keep_blank_values=True)
    given = {k.lower() for k, _ in pairs}
    pairs = [(k, v) for k, v in pairs if k.lower() not in ("srvservicename", "srvmaxhosts")]
    if "tls" not in given and "ssl" not in given:
        pairs.append(("tls", "true"))
    for key in ("authSource", "replicaSet"):
        if key.lower() not in given and options.get(key):
            pairs.append((key, str(options[key])))
    return f"{text}?{urlencode(pairs)}"


def _translate(exc: Exception, what: str) -> StepError:
    from pymongo import errors

    if isinstance(exc, errors.WriteConcernError):
        details = exc.details or {}
        return WriteConcernFailed(
            f"{what}: write concern not satisfied: {details.get('errmsg') or brief(exc)}"
        )
    if isinstance(exc, errors.NotPrimaryError):
        return NotPrimary(f"{what}: not primary: {brief(exc)}")
    if isinstance(exc, errors.ServerSelectionTimeoutError):
        return Unreachable(f"{what}: no answer: {brief(exc)}")
    if isinstance(exc, errors.OperationFailure):
        details = exc.details or {}
        code_name = str(details.get("codeName") or "")
        if exc.code in NOT_PRIMARY_CODES:
            return NotPrimary(f"{what}: not primary: {details.get('errmsg') or brief(exc)}")
        label = f"{code_name} ({exc.code})" if code_name else f"error {exc.code}"
        return CommandFailed(
            f"{what}: {label}: {details.get('errmsg') or brief(exc)}",
            code=exc.code,
            code_name=code_name,
        )
    if isinstance(exc, errors.ConnectionFailure):
        return ConnectionDropped(f"{what}: connection lost: {brief(exc)}")
    if isinstance(exc, errors.ConfigurationError):
        return StepError(f"{what}: invalid MongoDB URI or option: {brief(exc)}")
    return StepError(f"{what}: {brief(exc)}")


@contextmanager
def connect(
    uri: str,
    ctx: StepContext,
    *,
    what: str,
    member: str | None = None,
    cap: float = 10.0,
) -> Iterator[Any]:
    """A client for the replica set, or for one ``member`` (a direct connection).

    ``cap`` bounds every timeout (raise it for commands that wait on the server, such
    as a step-down's catch-up period). Errors inside the block are translated.
    """
    from pymongo import MongoClient, errors

    budget = max(0.5, min(ctx.remaining(), cap))
    try:
        options: dict[str, Any] = {"appname": "drctl", **timeouts(uri, budget)}
        if member:
            uri, options["directConnection"] = member_uri(uri, member), True
        client: Any = MongoClient(uri, **options)
    except (errors.PyMongoError, ValueError, TypeError) as exc:
        raise StepError(f"{what}: cannot use the target's URI: {brief(exc)}") from exc
    try:
        yield client
    except errors.PyMongoError as exc:
        raise _translate(exc, what) from exc
    finally:
        client.close()


def admin(client: Any, command: Mapping[str, Any] | str, *, any_member: bool = False) -> Any:
    """Run an admin command; ``any_member`` lets a secondary answer when there is no primary."""
    from pymongo import ReadPreference

    pref = ReadPreference.PRIMARY_PREFERRED if any_member else ReadPreference.PRIMARY
    return client.admin.command(command, read_preference=pref)


def hello(client: Any) -> dict[str, Any]:
    """``hello`` (``isMaster`` on servers without it), with ``isWritablePrimary`` always set."""
    from pymongo import errors

    try:
        reply = dict(admin(client, "hello", any_member=True))
    except errors.OperationFailure as exc:
        if exc.code != 59:  # CommandNotFound: a server older than 4.4.2
            raise
        reply = dict(admin(client, "isMaster", any_member=True))
        reply["isWritablePrimary"] = bool(reply.get("ismaster"))
    reply.setdefault("isWritablePrimary", False)
    return reply


def member_hello(uri: str, ctx: StepContext, member: str, *, cap: float = 5.0) -> dict[str, Any]:
    """``hello`` on one member, directly; raises Unreachable if it does not answer."""
    with connect(uri, ctx, what=member, member=member, cap=cap) as client:
        return hello(client)


def try_member_hello(
    uri: str, ctx: StepContext, member: str, *, cap: float = 5.0
) -> dict[str, Any] | None:
    """``hello`` on one member, or None when it does not answer or the connection drops."""
    try:
        return member_hello(uri, ctx, member, cap=cap)
    except (Unreachable, ConnectionDropped):
        return None


def set_hello(uri: str, ctx: StepContext, *, cap: float = 5.0) -> dict[str, Any]:
    """``hello`` from the primary, or from a secondary when no primary answers."""
    with connect(uri, ctx, what="replica set", cap=cap) as client:
        return hello(client)


def current_primary(uri: str, ctx: StepContext) -> str | None:
    """The member a reachable member names as primary now (None in an election or no majority)."""
    reply = set_hello(uri, ctx)
    if reply.get("isWritablePrimary"):
        return str(reply.get("me") or reply.get("primary") or "") or None
    primary = reply.get("primary")
    return str(primary) if primary else None


def wait_for_primary(uri: str, ctx: StepContext, seconds: float, *, interval: float = 0.2) -> str:
    """Poll until the set has a primary; bounded by ``seconds`` and the step's time."""
    polled = ctx.poll(
        lambda: current_primary(uri, ctx),
        every=interval,
        within=seconds,
        retry_on=(Unreachable, ConnectionDropped),
    )
    if polled.value:
        return polled.value
    last = polled.error.message if polled.error else "no member names a primary"
    raise StepError(
        f"the replica set has no primary after {polled.waited:.1f}s: {last}"
    ) from polled.error


def get_config(client: Any) -> dict[str, Any]:
    """The replica-set config document as the answering member has it."""
    return dict(admin(client, "replSetGetConfig", any_member=True)["config"])


def members_by_host(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(m["host"]): dict(m) for m in config.get("members", [])}


def electable_in_config(member: Mapping[str, Any]) -> str | None:
    """Why the config keeps this member from ever being primary, or None if it can be."""
    if member.get("arbiterOnly"):
        return "it is an arbiter"
    if int(member.get("votes", 1)) == 0:
        return "it has no vote (votes: 0)"
    if member.get("hidden"):
        return "it is hidden"
    delay = member.get("secondaryDelaySecs", member.get("slaveDelay", 0))
    if delay:
        return f"it is a delayed member ({delay}s)"
    return None


def next_config(config: Mapping[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
    """A copy of ``config`` with these members and the next version, for ``replSetReconfig``.

    ``term`` is left out: the server sets it (and ignores a given one on a forced reconfig).
    """
    out = {k: v for k, v in config.items() if k not in ("term", "members")}
    out["version"] = int(config.get("version", 0)) + 1
    out["members"] = members
    return out


def reconfig(client: Any, config: Mapping[str, Any], *, force: bool = False) -> None:
    """Send ``replSetReconfig`` (the server waits for a majority to take it, unless forced)."""
    command: dict[str, Any] = {"replSetReconfig": dict(config)}
    if force:
        command["force"] = True
    admin(client, command, any_member=force)
