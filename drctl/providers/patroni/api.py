"""Patroni's REST API, with every HTTP, TLS and JSON error translated once, here.

``PatroniApi`` talks to the members of a ``patroni`` target (standard library only:
urllib and ssl, loaded when a step runs). A member that does not answer (refused,
timed out, no route, TLS handshake failed) raises ``Unreachable``; an answer that is not
what Patroni sends raises ``StepError``. What comes back is a class
(``ClusterView``, ``MemberView``, ``NodeView``, ``ConfigView``), rebuilt from Patroni's JSON by its own
``from_json``; nothing else of drctl sees that JSON. The basic-auth password is only
ever put in a request header, never in a message.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drctl.errors import StepError, Unreachable, first_line
from drctl.runbook.targets import PatroniTarget

if TYPE_CHECKING:
    import ssl

#: Patroni's answers are small; anything bigger is not Patroni.
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """One HTTP answer from a member: its status and body (JSON parsed when it is JSON)."""

    url: str
    status: int
    text: str
    json: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class MemberView:
    """One member as the cluster (``GET /cluster``) sees it."""

    name: str
    #: ``leader``, ``replica``, ``sync_standby``, ``quorum_standby`` or ``standby_leader``.
    role: str
    #: ``running``, ``streaming``, ``stopped``, ``starting``, ``crashed``…
    state: str
    api_url: str | None
    host: str | None
    port: int | None
    timeline: int | None
    #: Bytes behind the leader; None when unknown (the leader itself, or not reported).
    lag: int | None
    tags: dict[str, Any]
    pending_restart: bool

    @property
    def is_leader(self) -> bool:
        return self.role in ("leader", "standby_leader")

    @property
    def nofailover(self) -> bool:
        """Patroni's rule: the ``nofailover`` tag if set, else ``failover_priority`` <= 0."""
        tag = self.tags.get("nofailover")
        if tag is not None:
            return _truthy(tag)
        return self.failover_priority is not None and self.failover_priority <= 0

    @property
    def failover_priority(self) -> int | None:
        """The ``failover_priority`` tag, when the member has one."""
        value = self.tags.get("failover_priority")
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else None

    @property
    def sync_standby(self) -> bool:
        """Patroni's synchronous (or quorum) standby: it may take over without losing WAL."""
        return self.role in ("sync_standby", "quorum_standby")

    @property
    def base_url(self) -> str | None:
        """The member's REST API root (Patroni gives ``…/patroni``)."""
        if not self.api_url:
            return None
        url = self.api_url.rstrip("/")
        return url[: -len("/patroni")] if url.endswith("/patroni") else url

    @classmethod
    def from_json(cls, data: Any) -> MemberView:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise StepError(f"Patroni's /cluster lists a member that is not one: {data!r:.200}")
        lag = data.get("lag")
        port = data.get("port")
        timeline = data.get("timeline")
        tags = data.get("tags")
        return cls(
            name=data["name"],
            role=str(data.get("role", "")),
            state=str(data.get("state", "")),
            api_url=str(data["api_url"]) if data.get("api_url") else None,
            host=str(data["host"]) if data.get("host") else None,
            port=port if isinstance(port, int) else None,
            timeline=timeline if isinstance(timeline, int) else None,
            lag=lag if isinstance(lag, int) else None,
            tags=dict(tags) if isinstance(tags, dict) else {},
            pending_restart=bool(data.get("pending_restart")),
        )

    def line(self) -> str:
        """The member in one line, for refusals and logs."""
        parts = [f"{self.name} {self.role} {self.state or '?'}"]
        if self.timeline is not None:
            parts.append(f"TL {self.timeline}")
        if not self.is_leader:
            parts.append(f"lag {self.lag if self.lag is not None else 'unknown'}")
        flags = [k for k in ("noloadbalance", "nosync") if self.tags.get(k)]
        if self.nofailover:
            flags.insert(0, "nofailover")
        if flags:
            parts.append("tags " + ",".join(flags))
        if self.pending_restart:
            parts.append("pending restart")
        return " ".join(parts)

    def as_output(self) -> dict[str, Any]:
        return {
            "name": self.name, "role": self.role, "state": self.state, "api_url": self.base_url,
            "host": self.host, "port": self.port, "timeline": self.timeline, "lag": self.lag,
            "tags": self.tags, "pending_restart": self.pending_restart,
        }  # fmt: skip


@dataclass(frozen=True)
class ClusterView:
    """The cluster as one member's ``GET /cluster`` answered it."""

    scope: str | None
    members: tuple[MemberView, ...]
    paused: bool
    #: Where it came from (a member's REST API root).
    source: str

    @property
    def leader(self) -> MemberView | None:
        return next((m for m in self.members if m.is_leader), None)

    def member(self, name: str) -> MemberView | None:
        return next((m for m in self.members if m.name == name), None)

    def lines(self) -> str:
        """Every member in one line each, joined with '; ' (for refusals)."""
        return "; ".join(m.line() for m in self.members) or "no members"

    @classmethod
    def from_json(cls, data: Any, source: str) -> ClusterView:
        if not isinstance(data, dict) or not isinstance(data.get("members"), list):
            raise StepError(f"{source}/cluster: not Patroni's cluster view: {data!r:.200}")
        return cls(
            scope=str(data["scope"]) if data.get("scope") else None,
            members=tuple(MemberView.from_json(m) for m in data["members"]),
            paused=bool(data.get("pause")),
            source=source,
        )


def _truthy(value: Any) -> bool:
    # Patroni reads its boolean settings the YAML way: true/on/yes/1, whatever the case.
    if isinstance(value, str):
        return value.strip().lower() in ("true", "on", "yes", "1", "y")
    return bool(value)


#: Patroni's own default of ``maximum_lag_on_failover`` (1 MiB).
DEFAULT_MAXIMUM_LAG_ON_FAILOVER = 1048576


@dataclass(frozen=True)
class ConfigView:
    """The cluster's dynamic configuration (``GET /config``): what decides a failover."""

    #: Bytes a replica may lag and still be promoted by Patroni.
    maximum_lag_on_failover: int
    #: ``off``, ``on`` or ``quorum``.
    synchronous_mode: str
    synchronous_mode_strict: bool

    @property
    def synchronous(self) -> bool:
        return self.synchronous_mode != "off"

    @classmethod
    def from_json(cls, data: Any, source: str) -> ConfigView:
        if not isinstance(data, dict):
            raise StepError(f"{source}/config: not Patroni's configuration: {data!r:.200}")
        lag = data.get("maximum_lag_on_failover")
        if isinstance(lag, str) and lag.strip().isdigit():
            lag = int(lag)
        mode = data.get("synchronous_mode")
        if isinstance(mode, str) and mode.strip().lower() == "quorum":
            sync = "quorum"
        else:
            sync = "on" if mode is not None and _truthy(mode) else "off"
        return cls(
            maximum_lag_on_failover=lag
            if isinstance(lag, int) and not isinstance(lag, bool)
            else DEFAULT_MAXIMUM_LAG_ON_FAILOVER,
            synchronous_mode=sync,
            synchronous_mode_strict=_truthy(data.get("synchronous_mode_strict", False)),
        )


@dataclass(frozen=True)
class NodeView:
    """One member's view of itself (``GET /patroni``)."""

    name: str | None
    #: ``primary`` or ``replica`` (``standby_leader`` in a standby cluster).
    role: str
    state: str
    timeline: int | None
    #: The member's own idea of whether the cluster is paused.
    paused: bool
    pending_restart: bool
    replication_state: str | None
    #: When its postmaster started (Patroni's text), to tell a restart happened.
    started: str | None = None

    @classmethod
    def from_json(cls, data: Any, source: str) -> NodeView:
        if not isinstance(data, dict) or "state" not in data:
            raise StepError(f"{source}/patroni: not Patroni's member status: {data!r:.200}")
        patroni = data.get("patroni")
        name = patroni.get("name") if isinstance(patroni, dict) else None
        timeline = data.get("timeline")
        return cls(
            name=str(name) if name else None,
            role=str(data.get("role", "")),
            state=str(data.get("state", "")),
            timeline=timeline if isinstance(timeline, int) else None,
            paused=bool(data.get("pause")),
            pending_restart=bool(data.get("pending_restart")),
            replication_state=str(data["replication_state"])
            if data.get("replication_state")
            else None,
            started=str(data["postmaster_start_time"])
            if data.get("postmaster_start_time")
            else None,
        )


class PatroniApi:
    """The REST API of one Patroni cluster: its listed members, tried in turn."""

    def __init__(self, target: PatroniTarget, budget: float) -> None:
        self.target = target
        #: Seconds each request may take (the target's timeout, capped by the step's).
        self.budget = max(0.2, min(target.request_timeout, budget))

    @property
    def seeds(self) -> list[str]:
        return [m.rstrip("/") for m in self.target.members]

    def _context(self) -> ssl.SSLContext:
        import ssl

        target = self.target
        try:
            context = ssl.create_default_context(cafile=target.ca_file)
            if not target.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if target.cert_file:
                context.load_cert_chain(target.cert_file, target.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise StepError(f"patroni target's TLS files: {first_line(exc)}") from exc
        return context

    def request(self, base: str, method: str, path: str, body: Any = None) -> Answer:
        """One request to the member at ``base``; any HTTP status is an answer."""
        import ssl
        import urllib.error
        import urllib.request

        url = base.rstrip("/") + path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.target.username is not None and self.target.password is not None:
            token = f"{self.target.username}:{self.target.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        context = self._context() if url.startswith("https://") else None
        # Patroni holds a switchover request open until the new leader is known.
        timeout = self.budget if path not in ("/switchover", "/failover") else max(self.budget, 60)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                status, raw = int(resp.status), resp.read(MAX_BODY)
        except urllib.error.HTTPError as exc:
            status, raw = int(exc.code), exc.read(MAX_BODY)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise Unreachable(f"{method} {url}: timed out after {timeout:g}s") from exc
            if isinstance(reason, ssl.SSLError):
                raise Unreachable(f"{method} {url}: TLS: {first_line(reason)}") from exc
            raise Unreachable(f"{method} {url}: {reason}") from exc
        except TimeoutError as exc:
            raise Unreachable(f"{method} {url}: timed out after {timeout:g}s") from exc
        except (ConnectionError, ssl.SSLError) as exc:
            raise Unreachable(f"{method} {url}: {first_line(exc)}") from exc
        except (OSError, ValueError) as exc:
            raise StepError(f"{method} {url}: {first_line(exc)}") from exc
        text = raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        if status == 401:
            raise StepError(
                f"{method} {url}: Patroni refused the credentials (HTTP 401): set the target's "
                "username and password to its restapi.authentication"
            )
        if status == 403:
            raise StepError(f"{method} {url}: Patroni denied access (HTTP 403): {text.strip()}")
        return Answer(url, status, text, parsed)

    def first(self, method: str, path: str, body: Any = None) -> Answer:
        """The answer of the first listed member that answers; Unreachable if none does."""
        problems: list[str] = []
        for base in self.seeds:
            try:
                return self.request(base, method, path, body)
            except Unreachable as exc:
                problems.append(exc.message)
        raise Unreachable("no Patroni member answered: " + "; ".join(problems))

    def answered(self, path: str) -> tuple[str, Answer]:
        """``GET path`` from the first listed member that answers it with 200: its root and
        answer; Unreachable (naming every member's problem) if none does."""
        problems: list[str] = []
        for base in self.seeds:
            try:
                answer = self.request(base, "GET", path)
            except Unreachable as exc:
                problems.append(exc.message)
                continue
            if answer.status != 200:
                problems.append(f"{answer.url}: HTTP {answer.status} {answer.text.strip():.200}")
                continue
            return base, answer
        raise Unreachable(f"no Patroni member answered GET {path}: " + "; ".join(problems))

    def cluster(self) -> ClusterView:
        """``GET /cluster`` from the first listed member that answers."""
        base, answer = self.answered("/cluster")
        return ClusterView.from_json(answer.json, base)

    def config(self) -> ConfigView:
        """``GET /config`` (the cluster's dynamic configuration) from the first member that answers."""
        base, answer = self.answered("/config")
        return ConfigView.from_json(answer.json, base)

    def member_urls(self, view: ClusterView) -> dict[str, str]:
        """Every member's REST API root by name, from the cluster's own list (which Patroni
        keeps in the DCS), so members the target does not list are found too."""
        return {m.name: m.base_url for m in view.members if m.base_url is not None}

    def node(self, base: str) -> NodeView:
        """``GET /patroni`` of the member at ``base``: its own status."""
        answer = self.request(base, "GET", "/patroni")
        # /patroni answers 503 when PostgreSQL is not running, with the same JSON body.
        return NodeView.from_json(answer.json, base)
