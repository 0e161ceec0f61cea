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
    """State in one SQLite file (default ``.drctl/state.db``)."""

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
            self._open_schema()
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state store {self.path}: {exc}") from exc
        except OSError as exc:
            raise StateError(f"cannot open state store {self.path}: {exc.strerror}") from exc

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        if self.read_only:
            # mode=ro writes nothing; on a read-only file system the WAL index cannot be
            # created either, and nobody can be writing there, so the file is immutable.
            if not self.path.is_file():
                raise StateError(
                    f"no state store at {self.path}",
                    hint="give the store with --state (or DRCTL_STATE) as the run did",
                )
            mode = "immutable=1" if _read_only_mount(self.path) else "mode=ro"
            uri = f"file:{quote(str(self.path.absolute()))}?{mode}"
            db = sqlite3.connect(
                uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
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


def _read_only_mount(path: Path) -> bool:
    import os

    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
