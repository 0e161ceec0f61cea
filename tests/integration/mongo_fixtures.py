"""A MongoDB replica set played by MongoDB's wire-protocol test server (mockupdb).

``MockReplicaSet`` runs one ``MockupDB`` per member on loopback and answers, from one
shared state, every command pymongo and drctl's mongo steps send: the handshake
(``isMaster``/``ismaster`` and, after ``helloOk``, ``hello``, advertising wire version
21 — MongoDB 7.0 — since pymongo 4.20 needs at least 9), ``replSetGetStatus``,
``replSetGetConfig``, ``replSetStepDown``, ``replSetFreeze``, ``replSetReconfig``,
``insert``, ``find``, ``ping`` and ``endSessions``. Replies and errors follow the
shapes, codes and code names a real server documents (NotWritablePrimary 10107,
NotSecondary 95, ExceededTimeLimit 262, WriteConcernFailed 64, …). The handshake
leaves out ``topologyVersion`` on purpose: with it pymongo streams ``hello`` replies,
which mockupdb cannot send, and polls without it.

Elections happen by themselves, ``election_delay`` after the set has no primary, among
the members that may stand: up, in the config, priority > 0, a vote, not hidden, not
frozen or in a step-down period, and seeing a majority of the votes — highest priority
first. A primary that stops seeing a majority steps down.

Tests switch failures on: ``down(host)`` (the member hangs up every connection, as if
cut off), ``drop_next(command)`` (hang up in the middle of that command),
``set_lag(host, seconds)`` (a secondary behind by that much, unable to catch up within a
shorter catch-up period), ``write_concern_timeout``, ``lose_writes`` and
``step_down_drops_connection`` (servers before 4.2 closed the step-down's connection);
``on_next(command, action)`` runs ``action`` right after that command is next answered,
to time a failure to a step.

Each member keeps its own documents. An insert lands on the primary and on every
member that is up, in the config and not lagging; ``w: majority`` fails with a write
concern error unless those hold a majority of the votes. A lagging member catches up
when its lag is cleared, an elected member first takes what the members it sees have
(its catch-up period), and a member that comes back takes the primary's copy (rollback).
So a forced reconfig onto members that never received writes loses them, as it does.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import Int64, ObjectId, Timestamp
from mockupdb import MockupDB

from drctl.testing import FakeContext

SET_NAME = "rs0"
MAX_WIRE_VERSION = 21  # MongoDB 7.0
STATE_CODES = {"PRIMARY": 1, "SECONDARY": 2, "ARBITER": 7}
HANDSHAKE = {"hello", "ismaster"}


class RealContext(FakeContext):
    """FakeContext with a real clock: sleeps sleep and the deadline is wall time.

    The mock set's elections take real time, so a fake clock would give up at once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = time.monotonic() + self.timeout

    def remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        time.sleep(max(0.0, min(seconds, self.remaining())))


@dataclass
class Member:
    """One mock member's own state; its settings live in the set's config."""

    index: int
    server: MockupDB
    host: str
    state: str = "SECONDARY"
    up: bool = True
    lag: float = 0.0
    frozen_until: float = 0.0
    started: float = field(default_factory=time.time)


def _error(code: int, code_name: str, errmsg: str) -> dict[str, Any]:
    return {"ok": 0, "errmsg": errmsg, "code": code, "codeName": code_name}


def _date(seconds: float) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)


class MockReplicaSet:
    """A replica set played by running MockupDB servers, from a fresh state."""

    def __init__(self, servers: list[MockupDB], size: int, *, election_delay: float = 0.15) -> None:
        """Play a set of the first ``size`` servers (the others are spares, outside the config)."""
        self._lock = threading.RLock()
        self.election_delay = election_delay
        self.members = [
            Member(index, server, f"localhost:{server.port}")
            for index, server in enumerate(servers)
        ]
        self.config: dict[str, Any] = {
            "_id": SET_NAME,
            "version": 1,
            "protocolVersion": Int64(1),
            "writeConcernMajorityJournalDefault": True,
            "members": [self._member_config(m) for m in self.members[:size]],
            "settings": {
                "chainingAllowed": True,
                "heartbeatIntervalMillis": 2000,
                "heartbeatTimeoutSecs": 10,
                "electionTimeoutMillis": 10000,
                "catchUpTimeoutMillis": -1,
                "catchUpTakeoverDelayMillis": 30000,
                "getLastErrorModes": {},
                "getLastErrorDefaults": {"w": 1, "wtimeout": 0},
                "replicaSetId": ObjectId(),
            },
        }
        self.term = 1
        self.members[0].state = "PRIMARY"
        #: member host -> namespace -> _id -> document
        self.documents: dict[str, dict[str, dict[Any, dict[str, Any]]]] = {}
        self.triggers: dict[str, Callable[[], None]] = {}
        #: Inserts refused because their _id was taken (E11000), as a real server refuses them.
        self.duplicate_inserts = 0
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        #: (member, namespace, document) of every insert the set answered as written
        #: with no write concern error: what a client may count as acknowledged.
        self.acknowledged: list[tuple[str, str, dict[str, Any]]] = []
        self.drops: dict[str, int] = {}
        self.write_concern_timeout = False
        self.lose_writes = False
        self.step_down_drops_connection = False
        self._election: tuple[str, float] | None = None
        self._responders = [m.server.autoresponds(self._responder(m)) for m in self.members]

    # -- what tests use ----------------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        return [m.host for m in self.members]

    def uri(self, hosts: list[str] | None = None) -> str:
        """A replica-set URI with short selection and connect timeouts (fast failures)."""
        seeds = ",".join(hosts or [str(m["host"]) for m in self.config["members"]])
        return (
            f"mongodb://{seeds}/?replicaSet={SET_NAME}"
            "&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000"
        )

    def target(self, hosts: list[str] | None = None) -> dict[str, Any]:
        return {"type": "mongo", "uri": self.uri(hosts)}

    @property
    def primary(self) -> str | None:
        with self._lock:
            self._resolve()
            found = self._primary()
            return found.host if found else None

    def member(self, host: str) -> Member:
        return next(m for m in self.members if m.host == host)

    def config_member(self, host: str) -> dict[str, Any] | None:
        with self._lock:
            return next((dict(m) for m in self.config["members"] if m["host"] == host), None)

    def set_priority(self, host: str, priority: float) -> None:
        with self._lock:
            for m in self.config["members"]:
                if m["host"] == host:
                    m["priority"] = priority

    def set_lag(self, host: str, seconds: float) -> None:
        with self._lock:
            member = self.member(host)
            member.lag = seconds
            primary = self._primary()
            if seconds == 0 and primary is not None and primary is not member:
                self._copy(primary, member)

    def on_next(self, command: str, action: Callable[[], None]) -> None:
        """Run ``action`` (under the set's lock) right after ``command`` is next answered."""
        with self._lock:
            self.triggers[command] = action

    def holds(self, host: str, namespace: str) -> dict[Any, dict[str, Any]]:
        """A copy of the documents ``host`` has in ``namespace``."""
        with self._lock:
            return dict(self.documents.get(host, {}).get(namespace, {}))

    def down(self, *hosts: str) -> None:
        with self._lock:
            for host in hosts:
                self.member(host).up = False
            self._resolve()

    def up(self, *hosts: str) -> None:
        with self._lock:
            for host in hosts:
                member = self.member(host)
                member.up, member.started = True, time.time()
                if member.state == "PRIMARY":
                    member.state = "SECONDARY"
                primary = self._primary()
                if primary is not None and primary is not member:
                    self._copy(primary, member)  # writes only it had are rolled back

    def restart(self, host: str) -> None:
        """A process restart: uptime starts again and a freeze ends."""
        with self._lock:
            member = self.member(host)
            member.started, member.frozen_until = time.time(), 0.0
            if member.state == "PRIMARY":
                member.state = "SECONDARY"

    def frozen(self, host: str) -> bool:
        with self._lock:
            return self.member(host).frozen_until > time.time()

    def drop_next(self, command: str, count: int = 1) -> None:
        """Hang up the connection on the next ``count`` requests of ``command``."""
        with self._lock:
            self.drops[command] = count

    def sent(self, command: str) -> list[tuple[str, dict[str, Any]]]:
        """(member, command document) of every ``command`` received, oldest first."""
        with self._lock:
            return [(host, doc) for host, name, doc in self.received if name == command]

    def wait_for_primary(self, host: str | None = None, timeout: float = 5.0) -> str:
        """Wait until there is a primary (``host``, if given); for test set-up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            primary = self.primary
            if primary and (host is None or primary == host):
                return primary
            time.sleep(0.02)
        raise AssertionError(f"no primary {host or ''} within {timeout}s (now {self.primary})")

    def close(self) -> None:
        """Stop answering; the servers go on for the next test's set."""
        for responder in self._responders:
            responder.cancel()

    # -- state -------------------------------------------------------------------------

    @staticmethod
    def _member_config(member: Member) -> dict[str, Any]:
        return {
            "_id": member.index,
            "host": member.host,
            "arbiterOnly": False,
            "buildIndexes": True,
            "hidden": False,
            "priority": 1.0,
            "tags": {},
            "secondaryDelaySecs": Int64(0),
            "votes": 1,
        }

    def _cfg(self, host: str) -> dict[str, Any] | None:
        return next((m for m in self.config["members"] if m["host"] == host), None)

    def _primary(self) -> Member | None:
        return next((m for m in self.members if m.state == "PRIMARY"), None)

    def _votes(self) -> tuple[int, int]:
        """(votes of members that are up, all votes) in the current config."""
        total = sum(int(m.get("votes", 1)) for m in self.config["members"])
        up = sum(
            int(m.get("votes", 1)) for m in self.config["members"] if self.member(m["host"]).up
        )
        return up, total

    def _sees_majority(self, member: Member) -> bool:
        up, total = self._votes()
        return member.up and self._cfg(member.host) is not None and up * 2 > total

    def _can_stand(self, member: Member, now: float) -> bool:
        cfg = self._cfg(member.host)
        return (
            cfg is not None
            and member.up
            and member.state == "SECONDARY"
            and float(cfg.get("priority", 1)) > 0
            and int(cfg.get("votes", 1)) > 0
            and not cfg.get("hidden")
            and not cfg.get("arbiterOnly")
            and member.frozen_until <= now
            and self._sees_majority(member)
        )

    def _resolve(self) -> None:
        """Step down a primary that lost its majority; hold elections that are due."""
        now = time.time()
        primary = self._primary()
        if primary is not None and not self._sees_majority(primary):
            primary.state = "SECONDARY"
            primary = None
        if primary is not None:
            self._election = None
            return
        if self._election is not None:
            host, at = self._election
            if now < at:
                return
            self._election = None
            winner = self.member(host)
            if self._can_stand(winner, now):
                winner.state, winner.lag = "PRIMARY", 0.0
                self._catch_up(winner)
                self.term += 1
                return
        candidates = [m for m in self.members if self._can_stand(m, now)]
        if candidates:
            best = max(
                candidates,
                key=lambda m: (
                    float((self._cfg(m.host) or {}).get("priority", 1)),
                    -m.lag,
                    -m.index,
                ),
            )
            self._election = (best.host, now + self.election_delay)

    def _copy(self, source: Member, target: Member) -> None:
        self.documents[target.host] = copy.deepcopy(self.documents.get(source.host, {}))

    def _catch_up(self, winner: Member) -> None:
        """A new primary takes every document the members it sees have."""
        mine = self.documents.setdefault(winner.host, {})
        for other in self.members:
            if other is winner or not other.up or self._cfg(other.host) is None:
                continue
            for namespace, docs in self.documents.get(other.host, {}).items():
                for key, d in docs.items():
                    mine.setdefault(namespace, {}).setdefault(key, copy.deepcopy(d))

    # -- the wire ----------------------------------------------------------------------

    def _responder(self, member: Member) -> Callable[[Any], bool]:
        def respond(request: Any) -> bool:
            return self._handle(member, request)

        return respond

    @staticmethod
    def _hang_up(request: Any) -> bool:
        with contextlib.suppress(OSError):  # the client was gone already
            request.hangup()
        return True

    def _handle(self, member: Member, request: Any) -> bool:
        name = str(request.command_name or "")
        trigger: Callable[[], None] | None = None
        with self._lock:
            if not member.up:
                return self._hang_up(request)
            self._resolve()
            doc = dict(request.doc)
            if name.lower() not in HANDSHAKE:
                self.received.append((member.host, name, doc))
                trigger = self.triggers.pop(name, None)
                if self.drops.get(name, 0) > 0:
                    self.drops[name] -= 1
                    return self._hang_up(request)
            handler = self._handlers().get(name.lower())
            if handler is None:
                reply: dict[str, Any] | None = _error(
                    59, "CommandNotFound", f"no such command: '{name}'"
                )
            else:
                reply = handler(member, doc, request)
        if reply is None:
            return self._hang_up(request)
        answered = bool(request.reply(reply))
        if trigger is not None:
            with self._lock:
                trigger()
        return answered

    def _handlers(self) -> dict[str, Callable[[Member, dict[str, Any], Any], Any]]:
        return {
            "hello": self._hello,
            "ismaster": self._hello,
            "ping": lambda m, d, r: {"ok": 1},
            "endsessions": lambda m, d, r: {"ok": 1},
            "buildinfo": lambda m, d, r: {"version": "7.0.12", "versionArray": [7, 0, 12, 0]},
            "replsetgetstatus": self._status,
            "replsetgetconfig": self._get_config,
            "replsetstepdown": self._step_down,
            "replsetfreeze": self._freeze,
            "replsetreconfig": self._reconfig,
            "insert": self._insert,
            "find": self._find,
        }

    def _optime(self, member: Member, now: float) -> tuple[Timestamp, datetime]:
        seconds = int(now - (0 if member.state == "PRIMARY" else member.lag))
        return Timestamp(seconds, 1), _date(seconds)

    def _hello(self, member: Member, doc: dict[str, Any], request: Any) -> dict[str, Any]:
        now = time.time()
        legacy = "hello" not in doc
        base: dict[str, Any] = {
            "maxBsonObjectSize": 16777216,
            "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000,
            "localTime": datetime.now(UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
            "ok": 1,
        }
        if doc.get("helloOk"):
            base["helloOk"] = True
        writable = "ismaster" if legacy else "isWritablePrimary"
        cfg = self._cfg(member.host)
        if cfg is None:
            return {
                writable: False,
                "secondary": False,
                "info": "Does not have a valid replica set config",
                "isreplicaset": True,
                **base,
            }
        config = self.config["members"]
        ts, date = self._optime(member, now)
        reply: dict[str, Any] = {
            "hosts": [
                m["host"]
                for m in config
                if not m.get("hidden") and not m.get("arbiterOnly") and m.get("priority", 1) > 0
            ],
            "setName": SET_NAME,
            "setVersion": self.config["version"],
            writable: member.state == "PRIMARY",
            "secondary": member.state == "SECONDARY",
            "me": member.host,
            "lastWrite": {
                "opTime": {"ts": ts, "t": Int64(self.term)},
                "lastWriteDate": date,
                "majorityOpTime": {"ts": ts, "t": Int64(self.term)},
                "majorityWriteDate": date,
            },
            **base,
        }
        passives = [m["host"] for m in config if not m.get("hidden") and m.get("priority", 1) == 0]
        if passives:
            reply["passives"] = passives
        primary = self._primary()
        if primary is not None:
            reply["primary"] = primary.host
        if member.state == "PRIMARY":
            reply["electionId"] = ObjectId(f"7fffffff{self.term:016x}")
        return reply

    def _status(self, member: Member, doc: dict[str, Any], request: Any) -> dict[str, Any]:
        if self._cfg(member.host) is None:
            return _error(
                93,
                "InvalidReplicaSetConfig",
                "Our replica set config is invalid or we are not a member of it",
            )
        now = time.time()
        primary = self._primary()
        members = []
        for cfg in self.config["members"]:
            other = self.member(cfg["host"])
            entry: dict[str, Any] = {"_id": cfg["_id"], "name": other.host}
            if not other.up:
                entry.update(
                    health=0.0, state=8, stateStr="(not reachable/healthy)", uptime=0,
                    optime={"ts": Timestamp(0, 0), "t": Int64(-1)}, optimeDate=_date(0),
                    lastHeartbeatMessage=f"Error connecting to {other.host} :: caused by :: Connection refused",
                    configVersion=-1,
                )  # fmt: skip
                members.append(entry)
                continue
            ts, date = self._optime(other, now)
            optime = {"ts": ts, "t": Int64(self.term)}
            entry.update(
                health=1.0, state=STATE_CODES[other.state], stateStr=other.state,
                uptime=int(now - other.started), optime=optime, optimeDate=date,
                optimeDurable=optime, optimeDurableDate=date,
                syncSourceHost=primary.host if primary and other is not primary else "",
                infoMessage="", configVersion=self.config["version"], configTerm=self.term,
            )  # fmt: skip
            if other is member:
                entry["self"] = True
            else:
                entry.update(
                    lastHeartbeat=datetime.now(UTC), lastHeartbeatRecv=datetime.now(UTC),
                    pingMs=Int64(0), lastHeartbeatMessage="",
                )  # fmt: skip
            if other is primary:
                entry["electionTime"] = Timestamp(int(now) - 60, 1)
                entry["electionDate"] = _date(now - 60)
            members.append(entry)
        _up, total = self._votes()
        ts, date = self._optime(member, now)
        return {
            "set": SET_NAME,
            "date": datetime.now(UTC),
            "myState": STATE_CODES[member.state],
            "term": Int64(self.term),
            "syncSourceHost": primary.host if primary and member is not primary else "",
            "heartbeatIntervalMillis": Int64(2000),
            "majorityVoteCount": total // 2 + 1,
            "writeMajorityCount": total // 2 + 1,
            "votingMembersCount": total,
            "writableVotingMembersCount": total,
            "optimes": {
                "lastCommittedOpTime": {"ts": ts, "t": Int64(self.term)},
                "appliedOpTime": {"ts": ts, "t": Int64(self.term)},
                "durableOpTime": {"ts": ts, "t": Int64(self.term)},
                "lastAppliedWallTime": date,
                "lastDurableWallTime": date,
            },
            "members": members,
            "ok": 1,
        }

    def _get_config(self, member: Member, doc: dict[str, Any], request: Any) -> dict[str, Any]:
        return {"config": {**copy.deepcopy(self.config), "term": Int64(self.term)}, "ok": 1}

    def _step_down(
        self, member: Member, doc: dict[str, Any], request: Any
    ) -> dict[str, Any] | None:
        now = time.time()
        seconds = int(doc["replSetStepDown"])
        catch_up = int(doc.get("secondaryCatchUpPeriodSecs", 10))
        if member.state != "PRIMARY":
            return _error(10107, "NotWritablePrimary", "not primary so can't step down")
        if seconds <= catch_up:
            return _error(
                2, "BadValue", "stepdown period must be longer than secondaryCatchUpPeriodSecs"
            )
        caught_up = [
            m
            for m in self.members
            if m is not member and self._can_stand(m, now) and m.lag <= catch_up
        ]
        if not caught_up and not doc.get("force"):
            return _error(
                262,
                "ExceededTimeLimit",
                f"No electable secondaries caught up as of {datetime.now(UTC).isoformat()}. "
                "Please use the replSetStepDown command with the argument {force: true} to "
                "force node to step down.",
            )
        member.state, member.frozen_until = "SECONDARY", now + seconds
        self._election = None
        self._resolve()
        return None if self.step_down_drops_connection else {"ok": 1}

    def _freeze(self, member: Member, doc: dict[str, Any], request: Any) -> dict[str, Any]:
        seconds = int(doc["replSetFreeze"])
        if member.state == "PRIMARY":
            return _error(
                95,
                "NotSecondary",
                "Cannot freeze node when primary or running for election. state: Primary",
            )
        if seconds == 0:
            member.frozen_until = 0.0
            return {"info": "unfreezing", "ok": 1}
        member.frozen_until = max(member.frozen_until, time.time() + seconds)
        if seconds == 1:
            return {"warning": "you really want to freeze for only 1 second?", "ok": 1}
        return {"ok": 1}

    def _reconfig(self, member: Member, doc: dict[str, Any], request: Any) -> dict[str, Any]:
        new = dict(doc["replSetReconfig"])
        force = bool(doc.get("force"))
        if not force and member.state != "PRIMARY":
            return _error(
                10107,
                "NotWritablePrimary",
                f"replSetReconfig should only be run on a writable PRIMARY. Current state {member.state};",
            )
        if new.get("_id") != SET_NAME:
            return _error(
                93,
                "InvalidReplicaSetConfig",
                f"Attempting to reconfigure a replica set with name {new.get('_id')}, but command "
                f"line reports {SET_NAME}; rejecting",
            )
        hosts = [str(m["host"]) for m in new["members"]]
        if member.host not in hosts:
            return _error(
                74,
                "NodeNotFound",
                f"No host described in new configuration with {{version: {new.get('version')}, "
                f"term: {self.term}}} for replica set {SET_NAME} maps to this node",
            )
        for m in new["members"]:
            if int(m.get("votes", 1)) == 0 and float(m.get("priority", 1)) > 0:
                return _error(
                    93, "InvalidReplicaSetConfig", "priority must be 0 when non-voting (votes:0)"
                )
            if m["host"] not in self.hosts:
                return _error(
                    74,
                    "NodeNotFound",
                    "replSetReconfig quorum check failed because not all proposed set members "
                    f"responded affirmatively: {m['host']} failed with Connection refused",
                )
        version = int(new.get("version", 0))
        if not force:
            if version <= int(self.config["version"]):
                return _error(
                    103,
                    "NewReplicaSetConfigurationIncompatible",
                    f"New replica set configuration version must be greater than old, but "
                    f"{version} is not greater than {self.config['version']} for replset {SET_NAME}",
                )
            voters_before = {m["host"] for m in self.config["members"] if m.get("votes", 1)}
            voters_after = {m["host"] for m in new["members"] if m.get("votes", 1)}
            if len(voters_before ^ voters_after) > 1:
                return _error(
                    103,
                    "NewReplicaSetConfigurationIncompatible",
                    "Non force replica set reconfig can only add or remove at most 1 voting member.",
                )
            up = [h for h in voters_after if self.member(h).up]
            if len(up) * 2 <= len(voters_after):
                return _error(
                    74,
                    "NodeNotFound",
                    f"Quorum check failed because not enough voting nodes responded; required "
                    f"{len(voters_after) // 2 + 1} but only the following {len(up)} voting nodes "
                    f"responded: {', '.join(sorted(up))}",
                )
        else:
            version += 10000  # a forced reconfig jumps the version
        new.pop("term", None)
        self.config = {**new, "version": version}
        for other in self.members:
            if self._cfg(other.host) is None and other.state == "PRIMARY":
                other.state = "SECONDARY"
        self._resolve()
        return {"ok": 1}

    def _insert(self, member: Member, doc: dict[str, Any], request: Any) -> dict[str, Any]:
        if member.state != "PRIMARY":
            return _error(10107, "NotWritablePrimary", "not primary")
        namespace = f"{request.namespace}.{doc['insert']}"
        documents = list(doc.get("documents", []))
        holders = [member] + [
            m
            for m in self.members
            if m is not member and m.up and m.lag == 0 and self._cfg(m.host) is not None
        ]
        mine = self.documents.setdefault(member.host, {}).setdefault(namespace, {})
        taken = [d for d in documents if d["_id"] in mine]
        if taken:
            self.duplicate_inserts += len(taken)
            return {
                "n": 0,
                "writeErrors": [
                    {
                        "index": documents.index(taken[0]),
                        "code": 11000,
                        "errmsg": f"E11000 duplicate key error collection: {namespace} "
                        f"index: _id_ dup key: {{ _id: {taken[0]['_id']!r} }}",
                    }
                ],
                "ok": 1,
            }
        if not self.lose_writes:
            for holder in holders:
                store = self.documents.setdefault(holder.host, {}).setdefault(namespace, {})
                for d in documents:
                    store[d["_id"]] = dict(d)
        reply: dict[str, Any] = {"n": len(documents), "ok": 1}
        concern = dict(doc.get("writeConcern") or {})
        _, total = self._votes()
        held = sum(int((self._cfg(h.host) or {}).get("votes", 1)) for h in holders)
        replicated = held * 2 > total
        if concern.get("w") == "majority" and (self.write_concern_timeout or not replicated):
            reply["writeConcernError"] = {
                "code": 64,
                "codeName": "WriteConcernFailed",
                "errmsg": "waiting for replication timed out",
                "errInfo": {
                    "wtimeout": True,
                    "writeConcern": {
                        "w": "majority",
                        "wtimeout": concern.get("wtimeout", 0),
                        "provenance": "clientSupplied",
                    },
                },
            }
        else:
            self.acknowledged += [(member.host, namespace, dict(d)) for d in documents]
        return reply

    def _find(self, member: Member, doc: dict[str, Any], request: Any) -> dict[str, Any]:
        namespace = f"{request.namespace}.{doc['find']}"
        wanted = dict(doc.get("filter") or {})
        batch = [
            d
            for d in self.documents.get(member.host, {}).get(namespace, {}).values()
            if all(d.get(k) == v for k, v in wanted.items())
        ]
        return {"cursor": {"firstBatch": batch, "id": Int64(0), "ns": namespace}, "ok": 1}


@pytest.fixture(scope="session")
def mockup_servers() -> Iterator[list[MockupDB]]:
    """Five MockupDB servers on loopback for the whole session (stopping one takes a second)."""
    servers = [MockupDB(request_timeout=5) for _ in range(5)]
    for server in servers:
        server.run()
    try:
        yield servers
    finally:
        stoppers = [threading.Thread(target=server.stop) for server in servers]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(15)


@pytest.fixture
def mock_rs(mockup_servers: list[MockupDB]) -> Iterator[MockReplicaSet]:
    """A fresh three-member mock replica set; member 0 is primary."""
    rs = MockReplicaSet(mockup_servers[:3], 3)
    try:
        yield rs
    finally:
        rs.close()


@pytest.fixture
def mock_rs5(mockup_servers: list[MockupDB]) -> Iterator[MockReplicaSet]:
    """Five mock members: three in the primary's region (0-2), two in another (3, 4)."""
    rs = MockReplicaSet(mockup_servers, 5)
    try:
        yield rs
    finally:
        rs.close()
