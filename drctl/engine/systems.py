"""Which systems a run acts on: the identities its default lock key is made of.

Two runbooks that change the same PostgreSQL server, DNS zone or AWS region must not
run at once, whatever their names: the default lock is one key per system a plan's
mutating steps act on, named by what identifies that system (``postgres:HOST:PORT/DB``,
``dns:SERVER:PORT/ZONE``, ``route53:ZONE_ID``…), never by a secret. Identities are read
from the targets with their secret references resolved (a DSN from ``${env:…}``), so
two runbooks naming one server through different variables still meet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from drctl.compiler.plan import Plan
from drctl.engine.lock import SEPARATOR
from drctl.engine.secrets import Secrets
from drctl.runbook.targets import (
    AwsTarget,
    HttpTarget,
    MongoTarget,
    PostgresTarget,
    Rfc2136Target,
    Route53Target,
    SshTarget,
    TargetModel,
)

_PAIR = re.compile(r"([A-Za-z_][\w.-]*)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


def run_lock_key(plan: Plan, secrets: Secrets) -> str:
    """The key a run of ``plan`` locks: ``settings.lock``, else the systems it changes,
    else the runbook's name."""
    if plan.settings.lock:
        return plan.settings.lock
    targets = {name: secrets.target(name, t) for name, t in plan.targets.items()}
    return system_lock_key(plan, targets) or plan.name


def system_lock_key(plan: Plan, targets: Mapping[str, TargetModel]) -> str | None:
    """The default lock key: the sorted identities of the systems the plan changes.

    None when its mutating steps name no target with an identity (only local commands):
    the runbook's name is the key then, as before.
    """
    names: set[str] = set()
    for step in (*plan.steps, *plan.fallbacks):
        if not step.mutates:
            continue
        if step.target is not None:
            names.add(step.target.name)
        if step.rollback is not None and step.rollback.target is not None:
            names.add(step.rollback.target.name)
    found = {identity(targets[n]) for n in names if n in targets}
    keys = sorted(k for k in found if k)
    return SEPARATOR.join(keys) if keys else None


def identity(target: TargetModel) -> str | None:
    """What names the system behind ``target``, with nothing secret in it."""
    if isinstance(target, PostgresTarget):
        host, port, db = _postgres(target.dsn)
        return f"postgres:{host or target.host or 'localhost'}:{port or '5432'}/{db or ''}"
    if isinstance(target, MongoTarget):
        parts = urlsplit(target.uri)
        hosts = ",".join(sorted(parts.netloc.rpartition("@")[2].split(",")))
        return f"mongo:{hosts}"
    if isinstance(target, SshTarget):
        return f"ssh:{target.host}:{target.port}"
    if isinstance(target, Rfc2136Target):
        return f"dns:{target.server}:{target.port}/{target.zone.rstrip('.').lower()}."
    if isinstance(target, Route53Target):
        return f"route53:{target.hosted_zone_id}"
    if isinstance(target, AwsTarget):
        where = target.endpoint_url or target.profile or "default"
        return f"aws:{where}:{target.region}"
    if isinstance(target, HttpTarget):
        parts = urlsplit(target.base_url)
        return f"http:{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return None


def _postgres(dsn: str) -> tuple[str, str, str]:
    """Host, port and database of a libpq DSN (URI or ``key=value``); "" for each not given."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        try:
            port = str(parts.port or "")
        except ValueError:  # several hosts, or no number: the text after the last colon
            port = parts.netloc.rpartition(":")[2]
        query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
        return (
            unquote(query.get("host", parts.hostname or "")),
            query.get("port", port),
            unquote(query.get("dbname", parts.path.lstrip("/"))),
        )
    fields = {m[1].lower(): m[2].strip("'") for m in _PAIR.finditer(dsn)}
    return (
        fields.get("host", fields.get("hostaddr", "")),
        fields.get("port", ""),
        fields.get("dbname", ""),
    )
