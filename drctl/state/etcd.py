"""The quorum state store: runs, journal and locks in etcd v3 (``--state etcd://…``).

For a store that must outlive the region being failed over: a cluster of three or more
members across sites keeps the journal and the lock while a majority stands. It speaks
etcd's HTTP/JSON gateway through ``etcd3gw`` (imported when the store opens), trying the
members in turn; the client's errors become StateError here, once.

Keys under the URL's prefix ``P``::

    P/schema                  the schema version
    P/runs/<run id>           a run record (JSON)
    P/journal/<run id>        the run's last sequence number
    P/events/<run id>/<seq>   one event (JSON), seq zero-padded so keys sort in order
    P/locks/<key>             the lock's last holder and fencing token (JSON; never expires)
    P/holders/<key>           the current holder's lease id, attached to its etcd lease

A lock is held while its holder key exists (etcd deletes it when the lease's TTL runs
out without a keep-alive) and its recorded expiry is ahead of the caller's clock, as in
the SQL stores. Acquiring is one transaction that compares both keys' revisions, so of
racing acquirers exactly one writes its lease and the next token; an append is one
transaction conditional on the holder key still naming the writer's lease, so a run
that lost its lease cannot write.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

from drctl.errors import StateError, UsageError
from drctl.state.base import (
    AcquireResult,
    Event,
    Lease,
    LockInfo,
    RunRecord,
    StateStore,
    check_force_release,
    decide_acquire,
    dumps,
    lock_lost,
)
from drctl.state.schema import SCHEMA_VERSION

T = TypeVar("T")

#: etcd refuses a transaction of more than 128 operations (``--max-txn-ops``).
_EVENTS_PER_TXN = 100
#: Compare-and-set rounds lost to other writers before an operation gives up.
_CAS_ROUNDS = 50
#: Rounds over every member one request may take (also bounded by ``retry_for``).
_MAX_ROUNDS = 100
_ROUND_PAUSE = 0.2


@dataclass(frozen=True)
class EtcdUrl:
    """``etcd://HOST:PORT[,HOST:PORT…]/PREFIX``, parsed."""

    endpoints: tuple[tuple[str, int], ...]
    prefix: str

    @classmethod
    def parse(cls, spec: str) -> EtcdUrl:
        """Raises UsageError naming ``--state`` for anything but a well-formed URL."""
        scheme = "etcd://"
        if not spec.startswith(scheme):
            raise _bad_url(spec, "it must start with etcd://")
        hosts, slash, prefix = spec[len(scheme) :].partition("/")
        prefix = unquote(prefix).strip("/")
        if not slash or not prefix:
            raise _bad_url(spec, "give a key prefix after the members, e.g. etcd://h1:2379/drctl")
        endpoints = []
        for member in hosts.split(","):
            host, colon, port = member.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise _bad_url(spec, f"member {member!r} is not HOST:PORT")
            endpoints.append((host, int(port)))
        return cls(tuple(endpoints), prefix)

    def __str__(self) -> str:
        members = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        return f"etcd://{members}/{self.prefix}"


def _bad_url(spec: str, why: str) -> UsageError:
    return UsageError(
        f"--state: malformed etcd URL {spec!r}: {why}",
        hint="etcd://HOST:PORT[,HOST:PORT…]/PREFIX, e.g. etcd://10.0.0.1:2379,10.0.1.1:2379/drctl",
    )


class EtcdStore(StateStore):
    """State in an etcd v3 cluster (``--state etcd://h1:2379,h2:2379,h3:2379/prefix``)."""

    def __init__(
        self, spec: str, *, timeout: float = 5.0, retry_for: float = 10.0, read_only: bool = False
    ) -> None:
        url = EtcdUrl.parse(spec)
        self._retry_for = retry_for
        super().__init__(str(url), read_only=read_only)
        from etcd3gw import exceptions
        from etcd3gw.client import Etcd3Client

        self._errors = exceptions
        self._endpoints = [f"{h}:{p}" for h, p in url.endpoints]
        self._clients = [
            Etcd3Client(host=h, port=p, timeout=timeout, api_path="/v3/") for h, p in url.endpoints
        ]
        self._current = 0
        self._mutex = threading.Lock()
        #: Per run: the last sequence number this process wrote, and its revision.
        self._heads: dict[str, tuple[int, int]] = {}
        self._p = url.prefix + "/"
        try:
            self._open_schema()
        except StateError as exc:
            self.close()
            if isinstance(exc.__cause__, exceptions.Etcd3Exception):
                detail = exc.message.removeprefix(f"state store {self.location}: ")
                raise UsageError(
                    f"--state: cannot reach the etcd store {self.location}: {detail}",
                    hint="check the members' addresses and that a majority of them is up",
                ) from exc
            raise

    # -- the wire: one place that talks to etcd and translates its errors ----------

    def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST to the gateway: each member in turn, starting with the last that answered,
        round after round until ``retry_for`` has passed (an election takes a moment).

        A retried write may have been applied already (a member timed out after the
        cluster committed it): the operations below make every write safe to repeat or
        find out that it landed.
        """
        errors = self._errors
        failed: dict[int, Exception] = {}
        last: Exception | None = None
        deadline = time.monotonic() + self._retry_for
        with self._mutex:
            first = self._current
        count = len(self._clients)
        for attempt in range(_MAX_ROUNDS * count):
            if attempt and attempt % count == 0:
                if time.monotonic() >= deadline:
                    break
                time.sleep(_ROUND_PAUSE)
            index = (first + attempt) % count
            client = self._clients[index]
            try:
                answer: dict[str, Any] = client.post(client.get_url(path), json=payload)
            except errors.Etcd3Exception as exc:
                # Down or cut off, or without a leader on its side: another may answer.
                failed[index] = last = exc
                continue
            except (OSError, ValueError) as exc:  # the client's transport below its own errors
                failed[index] = last = exc
                continue
            with self._mutex:
                self._current = index
            return answer
        each = "; ".join(
            f"{self._endpoints[i]}: {_reason(exc)}" for i, exc in sorted(failed.items())
        )
        raise StateError(
            f"state store {self.location}: no majority of its members answered within "
            f"{self._retry_for:g}s ({each})",
            hint="the run stopped before its next step; once a majority of the etcd members "
            "is back, continue it with drctl resume",
        ) from last

    def _range(self, key: str, *, prefix: bool = False) -> list[tuple[str, bytes, int]]:
        """(key, value, mod_revision) of ``key``, or of every key starting with it."""
        payload: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            payload["range_end"] = _b64(_prefix_end(key))
        answer = self._call("kv/range", payload)
        return [
            (_unb64(kv["key"]).decode(), _unb64(kv.get("value", "")), int(kv["mod_revision"]))
            for kv in answer.get("kvs", [])
        ]

    def _get(self, key: str) -> tuple[bytes, int] | None:
        found = self._range(key)
        return (found[0][1], found[0][2]) if found else None

    def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        return self._commit(compare, success) is not None

    def _commit(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> int | None:
        """The revision the transaction wrote, or None if a comparison failed."""
        if self.read_only:
            raise StateError(f"state store {self.location} is open read only")
        answer = self._call("kv/txn", {"compare": compare, "success": success, "failure": []})
        if not answer.get("succeeded", False):
            return None
        return int(answer["header"]["revision"])

    def _cas(self, attempt: Callable[[], T | None], what: str) -> T:
        """Run a compare-and-set round until it wins; bounded, since rivals finish quickly."""
        for _ in range(_CAS_ROUNDS):
            result = attempt()
            if result is not None:
                return result
        raise StateError(f"state store {self.location}: {what}: too many concurrent writers")

    # -- schema -----------------------------------------------------------------------

    def _open_schema(self) -> None:
        found = self._get(self._p + "schema")
        version = int(found[0]) if found else 0
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state store {self.location} has schema version {version}; this drctl knows "
                f"{SCHEMA_VERSION}. Upgrade drctl."
            )
        if self.read_only:
            raise StateError(
                f"state store {self.location} is empty: nothing can be read from it yet",
                hint="a command that writes (drctl run) creates it",
            )
        key = self._p + "schema"
        self._txn([_absent(key)], [_put(key, str(SCHEMA_VERSION).encode())])

    # -- runs ---------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        key = self._p + "runs/" + run.id
        if (
            not self._txn([_absent(key)], [_put(key, _run_json(run))])
            and self.get_run(run.id) != run
        ):
            raise StateError(f"state store {self.location}: run {run.id} exists already")

    def get_run(self, run_id: str) -> RunRecord | None:
        found = self._get(self._p + "runs/" + run_id)
        return _run_from_json(found[0]) if found else None

    def find_runs(self, prefix: str) -> list[RunRecord]:
        found = self._range(self._p + "runs/" + prefix, prefix=True)
        return sorted((_run_from_json(v) for _, v, _ in found), key=lambda r: r.started_at)

    def list_runs(self, limit: int = 50, name: str | None = None) -> list[RunRecord]:
        runs = [_run_from_json(v) for _, v, _ in self._range(self._p + "runs/", prefix=True)]
        chosen = [r for r in runs if name is None or r.name == name]
        chosen.sort(key=lambda r: r.id)
        chosen.sort(key=lambda r: r.started_at, reverse=True)
        return chosen[:limit]

    def set_status(self, run_id: str, status: str, finished_at: float | None) -> None:
        key = self._p + "runs/" + run_id

        def attempt() -> bool | None:
            found = self._get(key)
            if found is None:
                return True  # as in SQL: updating no run changes nothing
            data = json.loads(found[0])
            data.update(status=status, finished_at=finished_at)
            ok = self._txn([_unchanged(key, found[1])], [_put(key, dumps(data).encode())])
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
                found = self._get(counter)
                last, landed = _counter(found[0]) if found else (0, "")
                if landed == write:  # a repeated request: the first one landed
                    return _numbered(events, last - len(events), token)
                head = (last, found[1] if found else 0)
            last, revision = head
            compare = [_unchanged(counter, revision) if revision else _absent(counter)]
            if lease is not None:
                compare.append(_equals(self._p + "holders/" + lease.key, lease.lease_id))
            stored = _numbered(events, last, token)
            puts = [_put(self._event_key(run_id, e.seq), _event_json(e)) for e in stored]
            puts.append(_put(counter, dumps({"seq": last + len(events), "write": write}).encode()))
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
        found = self._range(f"{self._p}events/{run_id}/", prefix=True)
        events = [_event_from_json(v) for _, v, _ in found]
        events.sort(key=lambda e: e.seq)
        return events

    # -- locks ----------------------------------------------------------------------------

    def _holds(self, lease: Lease) -> bool:
        return self._holder_is(lease.key, lease.lease_id)

    def _holder_is(self, key: str, lease_id: str) -> bool:
        found = self._get(self._p + "holders/" + key)
        return found is not None and found[0].decode() == lease_id

    def _lock_state(self, key: str) -> tuple[LockInfo | None, int, bytes | None, int]:
        """The lock record and its revision, the holder key's value and its revision."""
        record = self._get(self._p + "locks/" + key)
        holder = self._get(self._p + "holders/" + key)
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
                _unchanged(record_key, record_rev) if record_rev else _absent(record_key),
                _unchanged(holder_key, holder_rev) if holder_rev else _absent(holder_key),
            ]
            success = [
                _put(record_key, dumps(record).encode()),
                _put(holder_key, lease_id.encode(), lease=lease_num),
            ]
            if self._txn(compare, success) or self._holder_is(key, lease_id):
                if holder is not None:
                    self._revoke(holder.decode())  # the displaced holder's lease
                return AcquireResult(Lease(key, lease_id, token, run_id, now + ttl), took_over)
            self._revoke(lease_id)  # another acquirer won this round: look again
            return None

        return self._cas(attempt, f"acquiring lock {key!r}")

    def _grant(self, ttl: float) -> int:
        answer = self._call("lease/grant", {"TTL": max(1, math.ceil(ttl)), "ID": 0})
        return int(answer["ID"])

    def _revoke(self, lease_id: str) -> None:
        # Unknown or expired already: an orphan lease expires on its own.
        with contextlib.suppress(StateError):
            self._call("kv/lease/revoke", {"ID": int(lease_id, 16)})

    def heartbeat(self, lease: Lease, ttl: float, now: float) -> Lease:
        answer = self._call("lease/keepalive", {"ID": int(lease.lease_id, 16)})
        if int(answer.get("result", {}).get("TTL", -1)) <= 0:
            raise lock_lost(lease)
        record_key, holder_key = self._p + "locks/" + lease.key, self._p + "holders/" + lease.key

        def attempt() -> bool | None:
            found = self._get(record_key)
            if found is None:
                raise lock_lost(lease)
            record = json.loads(found[0])
            record["expires_at"] = now + ttl
            compare = [_unchanged(record_key, found[1]), _equals(holder_key, lease.lease_id)]
            if self._txn(compare, [_put(record_key, dumps(record).encode())]):
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
        found = self._get(record_key)
        if found is None or (record_rev is not None and found[1] != record_rev):
            return False
        record = json.loads(found[0])
        if record.get("lease_id") != lease_id:
            return False
        record.update(lease_id=None, expires_at=None)
        return self._txn(
            [_unchanged(record_key, found[1])],
            [_put(record_key, dumps(record).encode()), _delete(holder_key)],
        )

    def close(self) -> None:
        for client in self._clients:
            client.session.close()


# -- JSON at the edge: records in, records out ---------------------------------------------


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
    return [
        Event(e.kind, e.ts, e.step, e.attempt, e.data, after + 1 + i, token)
        for i, e in enumerate(events)
    ]


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


# -- the gateway's JSON: keys and values are base64 ------------------------------------------


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: str) -> bytes:
    raw = bytearray(prefix.encode())
    raw[-1] += 1  # prefixes here end in "/" or a run id character, never 0xff
    return bytes(raw)


def _absent(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def _unchanged(key: str, mod_revision: int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


def _equals(key: str, value: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}


def _put(key: str, value: bytes, lease: int | None = None) -> dict[str, Any]:
    put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease is not None:
        put["lease"] = str(lease)
    return {"request_put": put}


def _delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def _reason(exc: Exception) -> str:
    """etcd's own words where it gave them (the gateway's JSON error), else a short cause."""
    text = str(getattr(exc, "detail_text", None) or exc)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and (parsed.get("message") or parsed.get("error")):
        return str(parsed.get("message") or parsed.get("error"))
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower() or "Timeout" in type(exc).__name__:
        return "no answer (timed out)"
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__
