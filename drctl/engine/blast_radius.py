"""Where the state store stands against what a run acts on: warnings said once per run.

Two mistakes that cost a failover its lock or its journal when it is needed most:

- a mutating run on a local SQLite store: its lock holds only on this machine, so an
  operator on another machine (or in another directory) can run the same failover at once;
- a state store on a host the runbook fences or promotes: losing that host loses the
  journal and the lock with it (DESIGN.md: the store must never sit on such a system).

Hosts and ports are compared as written (``localhost`` and the loopback addresses taken
as one), with no DNS look-up: the run must not wait on a resolver to warn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from drctl.compiler.plan import Plan
from drctl.runbook.targets import MongoTarget, PostgresTarget, SshTarget, TargetModel
from drctl.steps.base import Role

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}
_KEY_VALUE = re.compile(r"\b(host|hostaddr|port)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


@dataclass(frozen=True)
class Endpoint:
    """A host, and the port on it (None: the whole host, as for an SSH target)."""

    host: str
    port: int | None

    def same_host(self, other: Endpoint) -> bool:
        a, b = self.host.lower().strip("[]"), other.host.lower().strip("[]")
        return a == b or (a in _LOOPBACK and b in _LOOPBACK)

    def overlaps(self, other: Endpoint) -> bool:
        """The same host, and the same port unless either stands for the whole host."""
        if not self.same_host(other):
            return False
        return self.port is None or other.port is None or self.port == other.port

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def _port(text: str | None, default: int) -> int | None:
    if not text:
        return default
    return int(text) if text.isdigit() else None


def dsn_endpoints(dsn: str, default_port: int) -> tuple[Endpoint, ...]:
    """The hosts and ports a libpq DSN or a ``scheme://`` URL names (unix sockets left out)."""
    if "://" in dsn:
        try:
            netloc = urlsplit(dsn).netloc.rpartition("@")[2]
        except ValueError:
            return ()
        found = []
        for member in netloc.split(","):
            if member.startswith("["):
                host, _, rest = member[1:].partition("]")
                port = rest.removeprefix(":")
            else:
                host, _, port = member.partition(":")
            if host and not host.startswith("%2F"):
                found.append(Endpoint(host, _port(port, default_port)))
        return tuple(found)
    pairs: dict[str, str] = {}
    for key, value in _KEY_VALUE.findall(dsn):
        pairs.setdefault(key, value.strip("'"))
    hosts = (pairs.get("hostaddr") or pairs.get("host") or "").split(",")
    ports = (pairs.get("port") or "").split(",")
    out = []
    for i, host in enumerate(hosts):
        if host and not host.startswith("/"):
            port = ports[i] if i < len(ports) else ports[-1]
            out.append(Endpoint(host, _port(port, default_port)))
    return tuple(out)


def target_endpoints(target: TargetModel) -> tuple[Endpoint, ...]:
    """Where a target lives, as far as its fields say."""
    if isinstance(target, PostgresTarget):
        return dsn_endpoints(target.dsn, 5432)
    if isinstance(target, MongoTarget):
        return dsn_endpoints(target.uri, 27017)
    if isinstance(target, SshTarget):
        return (Endpoint(target.host, None),)  # the whole machine
    return ()


def acted_on(plan: Plan) -> list[str]:
    """Names of the targets the plan fences or promotes (a promote's old_primary too)."""
    names: dict[str, None] = {}
    for step in (*plan.steps, *plan.fallbacks):
        roles = set(step.roles)
        if not roles & {Role.FENCE.value, Role.PROMOTE.value}:
            continue
        for name in (step.target, step.fenced_target):
            if name is not None:
                names[str(name)] = None
        # A promote's input naming another target (old_primary) is what it replaces.
        for value in step.inputs.values():
            if isinstance(value, str) and value in plan.targets:
                names[value] = None
    return list(names)


def store_warnings(
    plan: Plan,
    store_endpoints: Iterable[Endpoint],
    machine_local: bool,
    location: str,
    target: Callable[[str], TargetModel | None],
) -> list[str]:
    """What to say once before a mutating run's first step (``target``: a name's model)."""
    out = []
    if machine_local and any(s.mutates for s in (*plan.steps, *plan.fallbacks)):
        out.append(
            f"warning: the state store {location} is a local SQLite file: the run lock "
            "protects only this machine (and this file) — another operator elsewhere can "
            "run the same failover at once. Use a shared store (--state postgresql://… or "
            "etcd://…) outside the systems this runbook fails over."
        )
    stores = tuple(store_endpoints)
    for name in acted_on(plan):
        model = target(name)
        if model is None:
            continue
        hit = [(s, t) for s in stores for t in target_endpoints(model) if s.overlaps(t)]
        if hit:
            s, t = hit[0]
            out.append(
                f"warning: the state store ({s}) is on {t}, where target {name} lives, which "
                "this runbook fences or promotes: the store is inside the blast radius — if "
                "that host is lost, the journal and the lock go with it. Keep the store on "
                "systems the runbook does not touch."
            )
    return out
