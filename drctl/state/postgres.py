"""The shared state store: runs, journal and locks in PostgreSQL (psycopg 3).

Same tables as the SQLite store, so a run started in one directory or on one machine
is resumed from another, and the run lock holds across them. Locks are rows taken
with ``SELECT … FOR UPDATE``; appends to one run are serialised with a transaction-
scoped advisory lock, so sequence numbers never collide.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from drctl.errors import StateError
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
from drctl.state.schema import SCHEMA_VERSION, statements

_RUN_COLUMNS = (
    'id, runbook, name, plan_hash, plan_json, params_json, "user", host, pid, version, '
    "started_at, lock_key, dry_run, status, finished_at, cwd"
)
_LOCK_COLUMNS = 'key, lease_id, run_id, "user", host, pid, acquired_at, expires_at, token'


class PostgresStore(StateStore):
    """State in a PostgreSQL database (``--state postgresql://…``)."""

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        import psycopg

        self._psycopg = psycopg
        self.location = _safe_location(url)
        self._mutex = threading.RLock()
        self._init_queue()
        try:
            self._db = psycopg.connect(url, connect_timeout=connect_timeout, autocommit=False)
            self._migrate()
        except psycopg.Error as exc:
            raise StateError(
                f"cannot open state store {self.location}: {_first_line(exc)}"
            ) from exc

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        psycopg = self._psycopg
        with self._mutex:
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise StateError(f"state store {self.location}: {_first_line(exc)}") from exc

    def _migrate(self) -> None:
        with self._tx() as cur:
            # Serialise concurrent first-time migrations from several processes.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('drctl-migrate'))")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS drctl_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            cur.execute("SELECT value FROM drctl_meta WHERE key = 'schema_version'")
            row = cur.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.location} has schema version {version}; this drctl "
                    f"knows {SCHEMA_VERSION}. Upgrade drctl."
                )
            for statement in statements("postgres", version):
                cur.execute(statement)
            cur.execute(
                "INSERT INTO drctl_meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(SCHEMA_VERSION),),
            )

    # -- runs ----------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    run.id, run.runbook, run.name, run.plan_hash, run.plan_json, run.params_json,
                    run.user, run.host, run.pid, run.version, run.started_at, run.lock_key,
                    run.dry_run, run.status, run.finished_at, run.cwd,
                ),
            )  # fmt: skip

    def _runs(self, sql: str, args: tuple[Any, ...]) -> list[RunRecord]:
        with self._tx() as cur:
            cur.execute(f"SELECT {_RUN_COLUMNS} FROM runs {sql}", args)
            return [RunRecord(*row) for row in cur.fetchall()]

    def get_run(self, run_id: str) -> RunRecord | None:
        found = self._runs("WHERE id = %s", (run_id,))
        return found[0] if found else None

    def find_runs(self, prefix: str) -> list[RunRecord]:
        return self._runs("WHERE left(id, %s) = %s ORDER BY started_at", (len(prefix), prefix))

    def list_runs(self, limit: int = 50, name: str | None = None) -> list[RunRecord]:
        if name is None:
            return self._runs("ORDER BY started_at DESC, id LIMIT %s", (limit,))
        return self._runs("WHERE name = %s ORDER BY started_at DESC, id LIMIT %s", (name, limit))

    def set_status(self, run_id: str, status: str, finished_at: float | None) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE runs SET status = %s, finished_at = %s WHERE id = %s",
                (status, finished_at, run_id),
            )

    # -- journal ---------------------------------------------------------------

    def _append_many(self, run_id: str, events: list[Event], lease: Lease | None) -> list[Event]:
        stored = []
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"drctl-run:{run_id}",))
            token = 0
            if lease is not None:
                cur.execute(
                    "SELECT lease_id, token FROM locks WHERE key = %s FOR SHARE", (lease.key,)
                )
                row = cur.fetchone()
                if row is None or row[0] != lease.lease_id:
                    raise lock_lost(lease)
                token = int(row[1])
            cur.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = %s", (run_id,))
            seq = int(cur.fetchone()[0])
            for event in events:
                cur.execute(
                    "INSERT INTO events (run_id, seq, ts, kind, step, attempt, token, data) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        run_id,
                        seq,
                        event.ts,
                        event.kind,
                        event.step,
                        event.attempt,
                        token,
                        dumps(event.data),
                    ),
                )
                stored.append(
                    Event(event.kind, event.ts, event.step, event.attempt, event.data, seq, token)
                )
                seq += 1
        return stored

    def events(self, run_id: str) -> list[Event]:
        with self._tx() as cur:
            cur.execute(
                "SELECT kind, ts, step, attempt, data, seq, token FROM events "
                "WHERE run_id = %s ORDER BY seq",
                (run_id,),
            )
            rows = cur.fetchall()
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    # -- locks -----------------------------------------------------------------

    def _lock_row(self, cur: Any, key: str, *, for_update: bool) -> LockInfo | None:
        cur.execute(
            f"SELECT {_LOCK_COLUMNS} FROM locks WHERE key = %s{' FOR UPDATE' if for_update else ''}",
            (key,),
        )
        row = cur.fetchone()
        return LockInfo(*row) if row else None

    def lock_info(self, key: str) -> LockInfo | None:
        with self._tx() as cur:
            return self._lock_row(cur, key, for_update=False)

    def acquire(
        self, key: str, run_id: str, user: str, host: str, pid: int, ttl: float, now: float
    ) -> AcquireResult:
        lease_id = uuid.uuid4().hex[:12]
        with self._tx() as cur:
            # Make sure the row exists, then lock it: two racing acquirers queue here.
            cur.execute(
                "INSERT INTO locks (key, token) VALUES (%s, 0) ON CONFLICT (key) DO NOTHING", (key,)
            )
            token, took_over = decide_acquire(key, self._lock_row(cur, key, for_update=True), now)
            cur.execute(
                'UPDATE locks SET lease_id = %s, run_id = %s, "user" = %s, host = %s, pid = %s, '
                "acquired_at = %s, expires_at = %s, token = %s WHERE key = %s",
                (lease_id, run_id, user, host, pid, now, now + ttl, token, key),
            )
        return AcquireResult(Lease(key, lease_id, token, run_id, now + ttl), took_over)

    def heartbeat(self, lease: Lease, ttl: float, now: float) -> Lease:
        with self._tx() as cur:
            cur.execute(
                "UPDATE locks SET expires_at = %s WHERE key = %s AND lease_id = %s",
                (now + ttl, lease.key, lease.lease_id),
            )
            if cur.rowcount != 1:
                raise lock_lost(lease)
        return Lease(lease.key, lease.lease_id, lease.token, lease.run_id, now + ttl)

    def release(self, lease: Lease) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE locks SET lease_id = NULL, expires_at = NULL WHERE key = %s AND lease_id = %s",
                (lease.key, lease.lease_id),
            )

    def force_release(self, key: str, lease_id: str) -> LockInfo:
        with self._tx() as cur:
            info = check_force_release(key, self._lock_row(cur, key, for_update=True), lease_id)
            cur.execute(
                "UPDATE locks SET lease_id = NULL, expires_at = NULL WHERE key = %s", (key,)
            )
        return info

    def close(self) -> None:
        with self._mutex:
            self._db.close()


def _safe_location(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://…"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
