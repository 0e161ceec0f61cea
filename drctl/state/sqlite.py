"""The embedded state store: one SQLite file, WAL, ``synchronous=FULL``.

WAL with full sync makes every committed event durable before ``append`` returns,
and lets readers (``drctl status`` in another terminal) read while a run writes.
Locks are rows taken in ``BEGIN IMMEDIATE`` transactions, so two processes can
never both believe they hold the same key. The statements are shared with the
PostgreSQL store (sql.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from drctl.errors import StateError
from drctl.state.sql import Cursor, SqlStore


class SqliteStore(SqlStore):
    """State in one SQLite file (default: the user's, ``~/.local/state/drctl/state.db``)."""

    machine_local = True

    dialect = "sqlite"
    meta_table = "meta"

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 30.0, read_only: bool = False
    ) -> None:
        super().__init__(str(path), read_only=read_only)
        self.path = Path(path)
        self._mutex = threading.RLock()
        try:
            self._db = self._connect(busy_timeout)
            try:
                self._open_schema()
            except BaseException:
                self._db.close()
                raise
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state store {self.path}: {exc}") from exc
        except OSError as exc:
            raise StateError(f"cannot open state store {self.path}: {exc.strerror}") from exc

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        if self.read_only:
            if not self.path.is_file():
                raise StateError(
                    f"no state store at {self.path}",
                    hint="give the store with --state (or DRCTL_STATE) as the run did",
                )
            db = self._connect_read_only(busy_timeout)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def _connect_read_only(self, busy_timeout: float) -> sqlite3.Connection:
        """A connection that writes nothing, even where nothing can be written.

        ``mode=ro`` still needs the WAL index (``-shm``), which a read-only mount or a
        full disk cannot create. Then, if no write-ahead log holds committed pages the
        file lacks (a cleanly closed store), the file alone is the whole store and is
        read as immutable.
        """
        uri = f"file:{quote(str(self.path.absolute()))}"
        db = sqlite3.connect(
            f"{uri}?mode=ro", uri=True, timeout=busy_timeout, isolation_level=None,
            check_same_thread=False,
        )  # fmt: skip
        try:
            db.execute("PRAGMA schema_version").fetchone()
        except sqlite3.OperationalError:
            db.close()
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise
            db = sqlite3.connect(
                f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False
            )
        return db

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """One write transaction, taken immediately so concurrent writers queue."""
        with self._mutex:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path} is unavailable: {exc}") from exc
            try:
                yield self._db.cursor()
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StateError(f"cannot write state store {self.path}: {exc}") from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"cannot write state store {self.path}: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        # Each read here is one statement, a transaction of its own: no BEGIN, so a
        # reader never waits for a writer (WAL) and never needs a write lock.
        with self._mutex:
            try:
                yield self._db.cursor()
            except sqlite3.Error as exc:
                raise StateError(f"cannot read state store {self.path}: {exc}") from exc

    def _has_table(self, cur: Cursor, name: str) -> bool:
        cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return cur.fetchone() is not None

    def close(self) -> None:
        with self._mutex:
            self._db.close()
