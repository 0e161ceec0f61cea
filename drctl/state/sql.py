"""Runs, journal and locks in SQL, written once for every SQL backend (SQLite, PostgreSQL).

A backend gives a connection's transactions (``_write``, ``_read``) and a few dialect
words; the statements, the lease checks and the row conversions are here. Statements
are written with ``?`` placeholders and ``"user"`` quoted (both dialects accept the
quotes; PostgreSQL needs them), and a backend whose driver wants ``%s`` says so.
"""

from __future__ import annotations

import functools
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from drctl.errors import StateError
from drctl.state.base import (
    AcquireResult,
    Append,
    Event,
    Freeze,
    Lease,
    LockInfo,
    RunRecord,
    StateStore,
    check_force_release,
    decide_acquire,
    lock_lost,
)
from drctl.state.schema import READABLE_FROM, SCHEMA_VERSION, statements

_RUN_COLUMNS = (
    'id, runbook, name, plan_hash, plan_json, params_json, "user", host, pid, version, '
    "started_at, lock_key, dry_run, status, finished_at, cwd"
)
_LOCK_COLUMNS = 'key, lease_id, run_id, "user", host, pid, acquired_at, expires_at, token'
_EVENT_COLUMNS = "kind, ts, step, attempt, data, seq, token"


class Cursor(Protocol):
    """What both drivers' cursors (sqlite3, psycopg) offer the statements here."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: Any, args: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: Any, args: Sequence[Sequence[Any]], /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="SqlStore")


def retried(fn: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Run the whole operation again when the backend says its connection broke before
    the commit (``_retry``): the server rolled the transaction back, so it is safe."""

    @functools.wraps(fn)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._retry(functools.partial(fn, self, *args, **kwargs))

    return wrapper


class SqlStore(StateStore):
    """The StateStore contract over one SQL connection; backends subclass it."""

    #: The driver's placeholder for one parameter.
    placeholder = "?"
    #: The schema's name in ``statements()``.
    dialect: str
    #: The table holding the schema version (named apart per backend since 0.1.0).
    meta_table: str
    #: Row-lock clauses; empty where a write transaction already locks the database.
    for_update = ""
    for_share = ""
    #: The schema version of the open store (older than SCHEMA_VERSION only read only).
    _version = SCHEMA_VERSION

    # -- what a backend provides ---------------------------------------------

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Cursor]:
        """One transaction on the connection, its driver's errors translated to StateError."""

    def _serialise_migration(self, cur: Cursor) -> None:
        """Make concurrent first-time migrations from several processes queue."""

    def _serialise_appends(self, cur: Cursor, run_id: str) -> None:
        """Make concurrent appends to ``run_id`` queue, so sequence numbers never collide."""

    @abstractmethod
    def close(self) -> None: ...

    def _retry(self, attempt: Callable[[], R]) -> R:
        """Call ``attempt``; a backend that can reconnect retries it (see ``retried``)."""
        return attempt()

    # -- transactions ------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        if self.read_only:
            raise StateError(f"state store {self.location} is open read only")
        with self._transaction() as cur:
            yield cur

    def _read(self) -> AbstractContextManager[Cursor]:
        return self._transaction()

    def _run_sql(self, cur: Cursor, sql: str, args: Sequence[Any] = ()) -> None:
        cur.execute(self._dialect_sql(sql), args)

    def _run_sql_many(self, cur: Cursor, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cur.executemany(self._dialect_sql(sql), rows)

    def _dialect_sql(self, sql: str) -> str:
        return sql.replace("?", self.placeholder) if self.placeholder != "?" else sql

    # -- schema -------------------------------------------------------------------

    def _open_schema(self) -> None:
        """Bring the schema up to date; read only, only check that it is."""
        if self.read_only:
            with self._read() as cur:
                version = self._schema_version(cur)
            if not READABLE_FROM <= version <= SCHEMA_VERSION:
                raise self._version_error(version)
            self._version = version
            return
        with self._write() as cur:
            self._serialise_migration(cur)
            self._run_sql(
                cur,
                f"CREATE TABLE IF NOT EXISTS {self.meta_table} "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )
            version = self._schema_version(cur)
            if version > SCHEMA_VERSION:
                raise self._version_error(version)
            self._version = SCHEMA_VERSION
            if version == SCHEMA_VERSION:
                return
            for statement in statements(self.dialect, version):
                self._run_sql(cur, statement)
            self._run_sql(
                cur,
                f"INSERT INTO {self.meta_table} (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def _schema_version(self, cur: Cursor) -> int:
        """The stored schema version; 0 for a store nothing has written yet."""
        if not self._has_table(cur, self.meta_table):
            return 0
        self._run_sql(cur, f"SELECT value FROM {self.meta_table} WHERE key = 'schema_version'")
        row = cur.fetchone()
        return int(row[0]) if row else 0

    @abstractmethod
    def _has_table(self, cur: Cursor, name: str) -> bool: ...

    def _version_error(self, version: int) -> StateError:
        if version > SCHEMA_VERSION:
            return StateError(
                f"state store {self.location} has schema version {version}; this drctl "
                f"knows {SCHEMA_VERSION}. Upgrade drctl."
            )
        return StateError(
            f"state store {self.location} has schema version {version}, not "
            f"{SCHEMA_VERSION}: nothing can be read from it yet",
            hint="a command that writes (drctl run) creates or migrates it",
        )

    # -- runs ---------------------------------------------------------------------

    @retried
    def create_run(self, run: RunRecord) -> None:
        with self._write() as cur:
            self._run_sql(
                cur,
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id, run.runbook, run.name, run.plan_hash, run.plan_json, run.params_json,
                    run.user, run.host, run.pid, run.version, run.started_at, run.lock_key,
                    run.dry_run, run.status, run.finished_at, run.cwd,
                ),
            )  # fmt: skip

    def _runs(self, where: str, args: Sequence[Any]) -> list[RunRecord]:
        with self._read() as cur:
            self._run_sql(cur, f"SELECT {_RUN_COLUMNS} FROM runs {where}", args)
            rows = cur.fetchall()
        return [_run_record(row) for row in rows]

    @retried
    def get_run(self, run_id: str) -> RunRecord | None:
        found = self._runs("WHERE id = ?", (run_id,))
        return found[0] if found else None

    @retried
    def find_runs(self, prefix: str) -> list[RunRecord]:
        return self._runs("WHERE substr(id, 1, ?) = ? ORDER BY started_at", (len(prefix), prefix))

    @retried
    def list_runs(self, limit: int = 50, name: str | None = None) -> list[RunRecord]:
        if name is None:
            return self._runs("ORDER BY started_at DESC, id LIMIT ?", (limit,))
        return self._runs("WHERE name = ? ORDER BY started_at DESC, id LIMIT ?", (name, limit))

    @retried
    def last_finished(self, lock_key: str) -> RunRecord | None:
        found = self._runs(
            "WHERE lock_key = ? AND finished_at IS NOT NULL AND dry_run = ? "
            "ORDER BY finished_at DESC, id DESC LIMIT 1",
            (lock_key, False),
        )
        return found[0] if found else None

    @retried
    def set_status(self, run_id: str, status: str, finished_at: float | None) -> None:
        with self._write() as cur:
            self._run_sql(
                cur,
                "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
                (status, finished_at, run_id),
            )

    # -- journal ------------------------------------------------------------------

    def _append_many(self, run_id: str, events: list[Event], lease: Lease | None) -> list[Event]:
        append = Append(run_id, events, lease)
        self._append_group([append])
        return append.result()

    @retried
    def _append_group(self, group: list[Append]) -> None:
        """Every append of ``group`` in one transaction: one commit, one sync.

        The fence is part of each INSERT: the row is written only while the writer's
        lease is the lock's current one, and takes its token from the lock row. In the
        open transaction nothing else can change that row (SQLite holds the write lock;
        PostgreSQL's ``FOR SHARE`` keeps it until commit), so an append's first INSERT
        decides for all of its events; one that finds its lease gone is refused alone.
        """
        outcomes: list[tuple[Append, list[Event] | None]] = []
        with self._write() as cur:
            next_seq: dict[str, int] = {}
            # In one order, so two processes' groups can never wait on each other.
            for run_id in sorted({append.run_id for append in group}):
                self._serialise_appends(cur, run_id)
                self._run_sql(
                    cur, "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?", (run_id,)
                )
                next_seq[run_id] = int(cur.fetchone()[0])
            for append in group:
                run_id = append.run_id
                seq = next_seq[run_id]
                stored = self._insert_fenced(cur, append, seq)
                outcomes.append((append, stored))
                if stored is not None:
                    next_seq[run_id] = seq + len(stored)
        # Only now, committed, are they stored: a failed commit leaves every one unset.
        for append, stored in outcomes:
            if stored is None:
                assert append.lease is not None
                append.error = lock_lost(append.lease)
            else:
                append.stored = stored

    def _insert_fenced(self, cur: Cursor, append: Append, seq: int) -> list[Event] | None:
        """Insert ``append``'s events from ``seq`` on; None if its lease is not current."""
        lease, events, run_id = append.lease, append.events, append.run_id
        token = 0
        rest = events
        if lease is not None and events:
            # The fence: the first event is written only while the lease is the lock's
            # current one, and takes its token from the lock row. The transaction keeps
            # that row as it is until the commit (see _append_group), so the rest of the
            # batch goes in under the same token without asking again.
            first = events[0]
            self._run_sql(
                cur,
                "INSERT INTO events (run_id, seq, ts, kind, step, attempt, token, data) "
                "SELECT ?, ?, ?, ?, ?, ?, token, ? FROM locks "
                f"WHERE key = ? AND lease_id = ?{self.for_share} RETURNING token",
                (
                    run_id, seq, first.ts, first.kind, first.step, first.attempt, first.text,
                    lease.key, lease.lease_id,
                ),
            )  # fmt: skip
            row = cur.fetchone()
            if row is None:
                return None
            token = int(row[0])
            rest = events[1:]
        if rest:
            start = seq + len(events) - len(rest)
            self._run_sql_many(
                cur,
                "INSERT INTO events (run_id, seq, ts, kind, step, attempt, token, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, start + n, e.ts, e.kind, e.step, e.attempt, token, e.text)
                    for n, e in enumerate(rest)
                ],
            )
        return [event.stored(seq + n, token) for n, event in enumerate(events)]

    @retried
    def events(self, run_id: str) -> list[Event]:
        with self._read() as cur:
            self._run_sql(
                cur, f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
            )
            rows = cur.fetchall()
        return [Event(r[0], r[1], r[2], r[3], None, r[5], r[6], text=r[4]) for r in rows]

    # -- locks ----------------------------------------------------------------------

    def _lock_row(self, cur: Cursor, key: str, *, for_update: bool) -> LockInfo | None:
        self._run_sql(
            cur,
            f"SELECT {_LOCK_COLUMNS} FROM locks WHERE key = ?{self.for_update if for_update else ''}",
            (key,),
        )
        row = cur.fetchone()
        return LockInfo(*row) if row else None

    @retried
    def lock_info(self, key: str) -> LockInfo | None:
        with self._read() as cur:
            return self._lock_row(cur, key, for_update=False)

    @retried
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
        lease_id = uuid.uuid4().hex[:12]
        with self._write() as cur:
            # Make sure the row exists, then lock it: racing acquirers queue here.
            self._run_sql(
                cur,
                "INSERT INTO locks (key, token) VALUES (?, 0) ON CONFLICT (key) DO NOTHING",
                (key,),
            )
            previous = self._lock_row(cur, key, for_update=True)
            token, took_over = decide_acquire(key, previous, now, displace)
            self._run_sql(
                cur,
                'UPDATE locks SET lease_id = ?, run_id = ?, "user" = ?, host = ?, pid = ?, '
                "acquired_at = ?, expires_at = ?, token = ? WHERE key = ?",
                (lease_id, run_id, user, host, pid, now, now + ttl, token, key),
            )
        return AcquireResult(Lease(key, lease_id, token, run_id, now + ttl), took_over)

    @retried
    def heartbeat(self, lease: Lease, ttl: float, now: float) -> Lease:
        with self._write() as cur:
            self._run_sql(
                cur,
                "UPDATE locks SET expires_at = ? WHERE key = ? AND lease_id = ?",
                (now + ttl, lease.key, lease.lease_id),
            )
            if cur.rowcount != 1:
                raise lock_lost(lease)
        return Lease(lease.key, lease.lease_id, lease.token, lease.run_id, now + ttl)

    @retried
    def release(self, lease: Lease) -> None:
        with self._write() as cur:
            self._run_sql(
                cur,
                "UPDATE locks SET lease_id = NULL, expires_at = NULL WHERE key = ? AND lease_id = ?",
                (lease.key, lease.lease_id),
            )

    @retried
    def force_release(self, key: str, lease_id: str) -> LockInfo:
        with self._write() as cur:
            info = check_force_release(key, self._lock_row(cur, key, for_update=True), lease_id)
            self._run_sql(
                cur, "UPDATE locks SET lease_id = NULL, expires_at = NULL WHERE key = ?", (key,)
            )
        return info

    # -- the brake ----------------------------------------------------------------------

    @retried
    def freeze(self, freeze: Freeze) -> None:
        with self._write() as cur:
            self._run_sql(
                cur,
                'INSERT INTO freezes (prefix, reason, "user", host, frozen_at) '
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (prefix) DO UPDATE SET reason = excluded.reason, "
                '"user" = excluded."user", host = excluded.host, frozen_at = excluded.frozen_at',
                (freeze.prefix, freeze.reason, freeze.user, freeze.host, freeze.at),
            )

    @retried
    def thaw(self, prefix: str) -> Freeze | None:
        with self._write() as cur:
            self._run_sql(
                cur,
                f"DELETE FROM freezes WHERE prefix = ? RETURNING {_FREEZE_COLUMNS}",
                (prefix,),
            )
            row = cur.fetchone()
        return Freeze(*row) if row else None

    @retried
    def freezes(self) -> list[Freeze]:
        if self._version < 2:  # an older store read only: it has no freezes table yet
            return []
        with self._read() as cur:
            self._run_sql(cur, f"SELECT {_FREEZE_COLUMNS} FROM freezes")
            rows = cur.fetchall()
        return sorted((Freeze(*row) for row in rows), key=lambda f: (-len(f.prefix), f.prefix))


_FREEZE_COLUMNS = 'prefix, reason, "user", host, frozen_at'


def _run_record(row: Sequence[Any]) -> RunRecord:
    (id_, runbook, name, plan_hash, plan_json, params_json, user, host, pid, version,
     started_at, lock_key, dry_run, status, finished_at, cwd) = row  # fmt: skip
    return RunRecord(
        id=id_, runbook=runbook, name=name, plan_hash=plan_hash, plan_json=plan_json,
        params_json=params_json, user=user, host=host, pid=pid, version=version,
        started_at=started_at, lock_key=lock_key, dry_run=bool(dry_run),  # SQLite: 0/1
        status=status, finished_at=finished_at, cwd=cwd,
    )  # fmt: skip
