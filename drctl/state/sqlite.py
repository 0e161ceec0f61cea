"""The embedded state store: one SQLite file, WAL, ``synchronous=FULL``.

WAL with full sync makes every committed event durable before ``append`` returns,
and lets readers (``drctl status`` in another terminal) read while a run writes.
Locks are rows taken in ``BEGIN IMMEDIATE`` transactions, so two processes can
never both believe they hold the same key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


class SqliteStore(StateStore):
    """State in one SQLite file (default ``.drctl/state.db``)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._mutex = threading.RLock()
        self._next_seq: dict[str, int] = {}
        self._init_queue()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state store {self.path}: {exc}") from exc
        except OSError as exc:
            raise StateError(f"cannot open state store {self.path}: {exc.strerror}") from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken immediately so concurrent writers queue."""
        with self._mutex:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path} is unavailable: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"cannot write state store {self.path}: {exc}") from exc

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._mutex:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"cannot read state store {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.path} has schema version {version}; this drctl knows "
                    f"{SCHEMA_VERSION}. Upgrade drctl."
                )
            for statement in statements("sqlite", version):
                db.execute(statement)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    # -- runs ----------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (id, runbook, name, plan_hash, plan_json, params_json, user, "
                "host, pid, version, started_at, finished_at, status, dry_run, lock_key, cwd) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id, run.runbook, run.name, run.plan_hash, run.plan_json, run.params_json,
                    run.user, run.host, run.pid, run.version, run.started_at, run.finished_at,
                    run.status, int(run.dry_run), run.lock_key, run.cwd,
                ),
            )  # fmt: skip

    _RUN_COLUMNS = (
        "id, runbook, name, plan_hash, plan_json, params_json, user, host, pid, version, "
        "started_at, lock_key, dry_run, status, finished_at, cwd"
    )

    @staticmethod
    def _run(row: tuple[Any, ...]) -> RunRecord:
        values = list(row)
        values[12] = bool(values[12])
        return RunRecord(*values)

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._read(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return self._run(rows[0]) if rows else None

    def find_runs(self, prefix: str) -> list[RunRecord]:
        rows = self._read(
            f"SELECT {self._RUN_COLUMNS} FROM runs WHERE substr(id, 1, ?) = ? ORDER BY started_at",
            (len(prefix), prefix),
        )
        return [self._run(r) for r in rows]

    def list_runs(self, limit: int = 50, name: str | None = None) -> list[RunRecord]:
        if name is None:
            rows = self._read(
                f"SELECT {self._RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id LIMIT ?",
                (limit,),
            )
        else:
            rows = self._read(
                f"SELECT {self._RUN_COLUMNS} FROM runs WHERE name = ? "
                "ORDER BY started_at DESC, id LIMIT ?",
                (name, limit),
            )
        return [self._run(r) for r in rows]

    def set_status(self, run_id: str, status: str, finished_at: float | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
                (status, finished_at, run_id),
            )

    # -- journal ---------------------------------------------------------------

    def _append_many(self, run_id: str, events: list[Event], lease: Lease | None) -> list[Event]:
        stored = []
        with self._tx() as db:
            token = 0
            if lease is not None:
                row = db.execute(
                    "SELECT lease_id, token FROM locks WHERE key = ?", (lease.key,)
                ).fetchone()
                if row is None or row[0] != lease.lease_id:
                    raise lock_lost(lease)
                token = int(row[1])
            seq = self._next_seq.get(run_id)
            if seq is None:
                seq = self._max_seq(db, run_id)
            for event in events:
                try:
                    self._insert_event(db, run_id, seq, event, token)
                except sqlite3.IntegrityError:
                    # Another process appended to this run (an audit event): recount.
                    seq = self._max_seq(db, run_id)
                    self._insert_event(db, run_id, seq, event, token)
                stored.append(
                    Event(event.kind, event.ts, event.step, event.attempt, event.data, seq, token)
                )
                seq += 1
            self._next_seq[run_id] = seq
        return stored

    @staticmethod
    def _max_seq(db: sqlite3.Connection, run_id: str) -> int:
        row = db.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?", (run_id,)
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _insert_event(
        db: sqlite3.Connection, run_id: str, seq: int, event: Event, token: int
    ) -> None:
        db.execute(
            "INSERT INTO events (run_id, seq, ts, kind, step, attempt, token, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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

    def events(self, run_id: str) -> list[Event]:
        rows = self._read(
            "SELECT kind, ts, step, attempt, data, seq, token FROM events WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    # -- locks -----------------------------------------------------------------

    _LOCK_COLUMNS = "key, lease_id, run_id, user, host, pid, acquired_at, expires_at, token"

    def lock_info(self, key: str) -> LockInfo | None:
        rows = self._read(f"SELECT {self._LOCK_COLUMNS} FROM locks WHERE key = ?", (key,))
        return LockInfo(*rows[0]) if rows else None

    def acquire(
        self, key: str, run_id: str, user: str, host: str, pid: int, ttl: float, now: float
    ) -> AcquireResult:
        lease_id = uuid.uuid4().hex[:12]
        with self._tx() as db:
            row = db.execute(
                f"SELECT {self._LOCK_COLUMNS} FROM locks WHERE key = ?", (key,)
            ).fetchone()
            token, took_over = decide_acquire(key, LockInfo(*row) if row else None, now)
            db.execute(
                "INSERT OR REPLACE INTO locks (key, lease_id, run_id, user, host, pid, acquired_at, "
                "expires_at, token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, lease_id, run_id, user, host, pid, now, now + ttl, token),
            )
        return AcquireResult(Lease(key, lease_id, token, run_id, now + ttl), took_over)

    def heartbeat(self, lease: Lease, ttl: float, now: float) -> Lease:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE locks SET expires_at = ? WHERE key = ? AND lease_id = ?",
                (now + ttl, lease.key, lease.lease_id),
            )
            if cur.rowcount != 1:
                raise lock_lost(lease)
        return Lease(lease.key, lease.lease_id, lease.token, lease.run_id, now + ttl)

    def release(self, lease: Lease) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE locks SET lease_id = NULL, expires_at = NULL WHERE key = ? AND lease_id = ?",
                (lease.key, lease.lease_id),
            )

    def force_release(self, key: str, lease_id: str) -> LockInfo:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {self._LOCK_COLUMNS} FROM locks WHERE key = ?", (key,)
            ).fetchone()
            info = check_force_release(key, LockInfo(*row) if row else None, lease_id)
            db.execute("UPDATE locks SET lease_id = NULL, expires_at = NULL WHERE key = ?", (key,))
        return info

    def close(self) -> None:
        with self._mutex:
            self._db.close()
