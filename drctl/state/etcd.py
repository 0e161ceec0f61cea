"""The quorum state store: runs, journal and locks in etcd v3 (``--state etcd://…``).

For a store that must outlive the region being failed over: a cluster of three or more
members across sites keeps the journal and the lock while a majority stands. It speaks
etcd's HTTP/JSON gateway (etcd_gateway.py: ``etcd3gw``, imported when the store opens,
each member in turn, errors translated there once).

Keys under the URL's prefix ``P``::

    P/schema                  the schema version
    P/runs/<run id>           a run record (JSON)
    P/journal/<run id>        the run's last sequence number
    P/events/<run id>/<seq>   one event (JSON), seq zero-padded so keys sort in order
    P/locks/<key>             the lock's last holder and fencing token (JSON; never expires)
    P/holders/<key>           the current holder's lease id, attached to its etcd lease
    P/freezes/<hex prefix>    a freeze (``drctl freeze``) on lock keys starting with prefix

A lock is held while its holder key exists (etcd deletes it when the lease's TTL runs
out without a keep-alive) and its recorded expiry is ahead of the caller's clock, as in
the SQL stores. Acquiring is one transaction that compares both keys' revisions, so of
racing acquirers exactly one writes its lease and the next token; an append is one
transaction conditional on the holder key still naming the writer's lease, so a run
that lost its lease cannot write.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from drctl.errors import StateError, UsageError
from drctl.state.base import (
    AcquireResult,
    Event,
    Freeze,
    Lease,
    LockInfo,
    RunRecord,
    StateStore,
    check_force_release,
    decide_acquire,
    dumps,
    lock_lost,
)
from drctl.state.etcd_gateway import (
    EtcdGateway,
    EtcdUrl,
    absent,
    delete,
    equals,
    put,
    unchanged,
)
from drctl.state.schema import READABLE_FROM, SCHEMA_VERSION

T = TypeVar("T")

#: etcd refuses a transaction of more than 128 operations (``--max-txn-ops``).
_EVENTS_PER_TXN = 100
#: Compare-and-set rounds lost to other writers before an operation gives up.
_CAS_ROUNDS = 50


class EtcdStore(StateStore):
    """State in an etcd v3 cluster (``--state etcd://h1:2379,h2:2379,h3:2379/prefix``)."""

    def __init__(
        self, spec: str, *, timeout: float = 5.0, retry_for: float = 10.0, read_only: bool = False
    ) -> None:
        url = EtcdUrl.parse(spec)
        super().__init__(str(url), read_only=read_only)
        self._wire = EtcdGateway(url, timeout=timeout, retry_for=retry_for)
        self._mutex = threading.Lock()
        #: Per run: the last sequence number this process wrote, and its revision.
        self._heads: dict[str, tuple[int, int]] = {}
        self._p = url.prefix + "/"
        self._url = url
        try:
            self._open_schema()
        except StateError as exc:
            self.close()
            if self._wire.unreachable(exc):
                detail = exc.message.removeprefix(f"state store {self.location}: ")
                raise UsageError(
                    f"--state: cannot reach the etcd store {self.location}: {detail}",
                    hint="check the members' addresses and that a majority of them is up",
                ) from exc
            raise

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        return self._url.endpoints

    # -- writes: refused read only ----------------------------------------------------

    def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        return self._commit(compare, success) is not None

    def _commit(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> int | None:
        if self.read_only:
            raise StateError(f"state store {self.location} is open read only")
        return self._wire.commit(compare, success)

    def _cas(self, attempt: Callable[[], T | None], what: str) -> T:
        """Run a compare-and-set round until it wins; bounded, since rivals finish quickly."""
        for _ in range(_CAS_ROUNDS):
            result = attempt()
            if result is not None:
                return result
        raise StateError(f"state store {self.location}: {what}: too many concurrent writers")

    # -- schema -----------------------------------------------------------------------

    def _open_schema(self) -> None:
        key = self._p + "schema"
        found = self._wire.get(key)
        version = int(found[0]) if found else 0
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state store {self.location} has schema version {version}; this drctl knows "
                f"{SCHEMA_VERSION}. Upgrade drctl."
            )
        if self.read_only:
            if version >= READABLE_FROM:
                return  # keys added since are read as absent
            raise StateError(
                f"state store {self.location} is empty: nothing can be read from it yet",
                hint="a command that writes (drctl run) creates it",
            )
        # Keys need no migration: only the version moves (once, whoever races).
        was = absent(key) if found is None else equals(key, found[0].decode())
        self._txn([was], [put(key, str(SCHEMA_VERSION).encode())])

    # -- runs ---------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        key = self._p + "runs/" + run.id
        if not self._txn([absent(key)], [put(key, _run_json(run))]) and self.get_run(run.id) != run:
            raise StateError(f"state store {self.location}: run {run.id} exists already")

    def get_run(self, run_id: str) -> RunRecord | None:
        found = self._wire.get(self._p + "runs/" + run_id)
        return _run_from_json(found[0]) if found else None

    def find_runs(self, prefix: str) -> list[RunRecord]:
        found = self._wire.range(self._p + "runs/" + prefix, prefix=True)
        return sorted((_run_from_json(v) for _, v, _ in found), key=lambda r: r.started_at)

    def list_runs(self, limit: int = 50, name: str | None = None) -> list[RunRecord]:
        runs = [_run_from_json(v) for _, v, _ in self._wire.range(self._p + "runs/", prefix=True)]
        chosen = [r for r in runs if name is None or r.name == name]
        chosen.sort(key=lambda r: r.id)
        chosen.sort(key=lambda r: r.started_at, reverse=True)
        return chosen[:limit]

    def set_status(self, run_id: str, status: str, finished_at: float | None) -> None:
        key = self._p + "runs/" + run_id

        def attempt() -> bool | None:
            found = self._wire.get(key)
            if found is None:
                return True  # as in SQL: updating no run changes nothing
            data = json.loads(found[0])
            data.update(status=status, finished_at=finished_at)
            ok = self._txn([unchanged(key, found[1])], [put(key, dumps(data).encode())])
            return True if ok else None

        self._cas(attempt, f"setting the status of run {run_id}")

    # -- journal --------------------------------------------------------------------------

    def _append_many(self, run_id: str, events: list[Event], lease: Lease | None) -> list[Event]:
        stored: list[Event] = []
        for start in range(0, len(events), _EVENTS_PER_TXN):
            stored.extend(
                self._append_chunk(run_id, events[start : start + _EVENTS_PER_TXN], lease)
            )
        return stored

    def _append_chunk(self, run_id: str, events: list[Event], lease: Lease | None) -> list[Event]:
        counter = self._p + "journal/" + run_id
        token = lease.token if lease is not None else 0

        write = uuid.uuid4().hex

        def attempt() -> list[Event] | None:
            # This process's last append to the run saves reading the counter back; if
            # another writer appended meanwhile the comparison fails and it is read.
            with self._mutex:
                head = self._heads.pop(run_id, None)
            if head is None:
                found = self._wire.get(counter)
                last, landed = _counter(found[0]) if found else (0, "")
                if landed == write:  # a repeated request: the first one landed
                    return _numbered(events, last - len(events), token)
                head = (last, found[1] if found else 0)
            last, revision = head
            compare = [unchanged(counter, revision) if revision else absent(counter)]
            if lease is not None:
                compare.append(equals(self._p + "holders/" + lease.key, lease.lease_id))
            stored = _numbered(events, last, token)
            puts = [put(self._event_key(run_id, e.seq), _event_json(e)) for e in stored]
            puts.append(put(counter, dumps({"seq": last + len(events), "write": write}).encode()))
            written = self._commit(compare, puts)
            if written is not None:
                with self._mutex:
                    self._heads[run_id] = (last + len(events), written)
                return stored
            if lease is not None and not self._holds(lease):
                raise lock_lost(lease)
            return None  # another writer appended (an audit event): count again

        return self._cas(attempt, f"appending to run {run_id}")

    def _event_key(self, run_id: str, seq: int) -> str:
        return f"{self._p}events/{run_id}/{seq:012d}"

    def events(self, run_id: str) -> list[Event]:
        found = self._wire.range(f"{self._p}events/{run_id}/", prefix=True)
        events = [_event_from_json(v) for _, v, _ in found]
        events.sort(key=lambda e: e.seq)
        return events

    # -- locks ----------------------------------------------------------------------------

    def _holds(self, lease: Lease) -> bool:
        return self._holder_is(lease.key, lease.lease_id)

    def _holder_is(self, key: str, lease_id: str) -> bool:
        found = self._wire.get(self._p + "holders/" + key)
        return found is not None and found[0].decode() == lease_id

    def _lock_state(self, key: str) -> tuple[LockInfo | None, int, bytes | None, int]:
        """The lock record and its revision, the holder key's value and its revision."""
        record = self._wire.get(self._p + "locks/" + key)
        holder = self._wire.get(self._p + "holders/" + key)
        info = _lock_from_json(key, record[0]) if record else None
        return (
            info,
            record[1] if record else 0,
            holder[0] if holder else None,
            holder[1] if holder else 0,
        )

    def lock_info(self, key: str) -> LockInfo | None:
        info, _, holder, _ = self._lock_state(key)
        return _as_etcd_sees_it(info, holder)

    def acquire(
        self,
        key: str,
        run_id: str,
        user: str,
        host: str,
        pid: int,
        ttl: float,
        now: float,
        *,
        displace: str | None = None,
    ) -> AcquireResult:
        record_key, holder_key = self._p + "locks/" + key, self._p + "holders/" + key

        def attempt() -> AcquireResult | None:
            info, record_rev, holder, holder_rev = self._lock_state(key)
            token, took_over = decide_acquire(key, _as_etcd_sees_it(info, holder), now, displace)
            lease_num = self._grant(ttl)
            lease_id = f"{lease_num:x}"
            record = {
                "lease_id": lease_id, "run_id": run_id, "user": user, "host": host, "pid": pid,
                "acquired_at": now, "expires_at": now + ttl, "token": token,
            }  # fmt: skip
            compare = [
                unchanged(record_key, record_rev) if record_rev else absent(record_key),
                unchanged(holder_key, holder_rev) if holder_rev else absent(holder_key),
            ]
            success = [
                put(record_key, dumps(record).encode()),
                put(holder_key, lease_id.encode(), lease=lease_num),
            ]
            if self._txn(compare, success) or self._holder_is(key, lease_id):
                if holder is not None:
                    self._revoke(holder.decode())  # the displaced holder's lease
                return AcquireResult(Lease(key, lease_id, token, run_id, now + ttl), took_over)
            self._revoke(lease_id)  # another acquirer won this round: look again
            return None

        return self._cas(attempt, f"acquiring lock {key!r}")

    def _grant(self, ttl: float) -> int:
        return self._wire.grant(max(1, math.ceil(ttl)))

    def _revoke(self, lease_id: str) -> None:
        # Unknown or expired already: an orphan lease expires on its own.
        with contextlib.suppress(StateError):
            self._wire.revoke(int(lease_id, 16))

    def heartbeat(self, lease: Lease, ttl: float, now: float) -> Lease:
        if self._wire.keep_alive(int(lease.lease_id, 16)) <= 0:
            raise lock_lost(lease)
        record_key, holder_key = self._p + "locks/" + lease.key, self._p + "holders/" + lease.key

        def attempt() -> bool | None:
            found = self._wire.get(record_key)
            if found is None:
                raise lock_lost(lease)
            record = json.loads(found[0])
            record["expires_at"] = now + ttl
            compare = [unchanged(record_key, found[1]), equals(holder_key, lease.lease_id)]
            if self._txn(compare, [put(record_key, dumps(record).encode())]):
                return True
            if not self._holds(lease):
                raise lock_lost(lease)
            return None

        self._cas(attempt, f"extending lock {lease.key!r}")
        return Lease(lease.key, lease.lease_id, lease.token, lease.run_id, now + ttl)

    def release(self, lease: Lease) -> None:
        if self._clear(lease.key, lease.lease_id):
            self._revoke(lease.lease_id)

    def force_release(self, key: str, lease_id: str) -> LockInfo:
        def attempt() -> LockInfo | None:
            info, record_rev, _, _ = self._lock_state(key)
            checked = check_force_release(key, info, lease_id)
            return checked if self._clear(key, lease_id, record_rev) else None

        info = self._cas(attempt, f"releasing lock {key!r}")
        self._revoke(lease_id)
        return info

    def _clear(self, key: str, lease_id: str, record_rev: int | None = None) -> bool:
        """Mark the lock free if ``lease_id`` holds it (at ``record_rev``, if given)."""
        record_key, holder_key = self._p + "locks/" + key, self._p + "holders/" + key
        found = self._wire.get(record_key)
        if found is None or (record_rev is not None and found[1] != record_rev):
            return False
        record = json.loads(found[0])
        if record.get("lease_id") != lease_id:
            return False
        record.update(lease_id=None, expires_at=None)
        return self._txn(
            [unchanged(record_key, found[1])],
            [put(record_key, dumps(record).encode()), delete(holder_key)],
        )

    # -- the brake ----------------------------------------------------------------------

    def _freeze_key(self, prefix: str) -> str:
        return self._p + "freezes/" + prefix.encode().hex()

    def freeze(self, freeze: Freeze) -> None:
        data = {"prefix": freeze.prefix, "reason": freeze.reason, "user": freeze.user,
                "host": freeze.host, "at": freeze.at}  # fmt: skip
        self._commit([], [put(self._freeze_key(freeze.prefix), dumps(data).encode())])

    def thaw(self, prefix: str) -> Freeze | None:
        key = self._freeze_key(prefix)

        def attempt() -> tuple[Freeze | None] | None:
            found = self._wire.get(key)
            if found is None:
                return (None,)
            raw, revision = found
            return (
                (_freeze_from_json(raw),)
                if self._txn([unchanged(key, revision)], [delete(key)])
                else None
            )

        return self._cas(attempt, "thaw")[0]

    def freezes(self) -> list[Freeze]:
        found = [
            _freeze_from_json(v) for _, v, _ in self._wire.range(self._p + "freezes/", prefix=True)
        ]
        return sorted(found, key=lambda f: (-len(f.prefix), f.prefix))

    def close(self) -> None:
        self._wire.close()


# -- JSON at the edge: records in, records out ---------------------------------------------


def _freeze_from_json(raw: bytes) -> Freeze:
    d = json.loads(raw)
    return Freeze(
        str(d["prefix"]), str(d["reason"]), str(d["user"]), str(d["host"]), float(d["at"])
    )


def _run_json(run: RunRecord) -> bytes:
    from dataclasses import asdict

    return dumps(asdict(run)).encode()


def _run_from_json(raw: bytes) -> RunRecord:
    data = json.loads(raw)
    return RunRecord(
        id=data["id"], runbook=data["runbook"], name=data["name"], plan_hash=data["plan_hash"],
        plan_json=data["plan_json"], params_json=data["params_json"], user=data["user"],
        host=data["host"], pid=int(data["pid"]), version=data["version"],
        started_at=float(data["started_at"]), lock_key=data["lock_key"],
        dry_run=bool(data["dry_run"]), status=data["status"], finished_at=data["finished_at"],
        cwd=data["cwd"],
    )  # fmt: skip


def _counter(raw: bytes) -> tuple[int, str]:
    """A run's last sequence number and the id of the write that set it."""
    data = json.loads(raw)
    return int(data["seq"]), str(data["write"])


def _numbered(events: list[Event], after: int, token: int) -> list[Event]:
    return [e.stored(after + 1 + i, token) for i, e in enumerate(events)]


def _event_json(event: Event) -> bytes:
    return dumps(event.to_json()).encode()


def _event_from_json(raw: bytes) -> Event:
    data = json.loads(raw)
    return Event(
        data["kind"], data["ts"], data["step"], data["attempt"], data["data"],
        int(data["seq"]), int(data["token"]),
    )  # fmt: skip


def _lock_from_json(key: str, raw: bytes) -> LockInfo:
    data = json.loads(raw)
    return LockInfo(
        key, data.get("lease_id"), data.get("run_id"), data.get("user"), data.get("host"),
        data.get("pid"), data.get("acquired_at"), data.get("expires_at"), int(data["token"]),
    )  # fmt: skip


def _as_etcd_sees_it(info: LockInfo | None, holder: bytes | None) -> LockInfo | None:
    """The record, with its lease counted as ended once etcd has expired it."""
    if info is None or info.lease_id is None:
        return info
    if holder is not None and holder.decode() == info.lease_id:
        return info
    from dataclasses import replace

    # etcd dropped the holder key: the lease ran out, whatever the recorded expiry said.
    return replace(info, expires_at=min(info.expires_at or 0.0, 0.0))
