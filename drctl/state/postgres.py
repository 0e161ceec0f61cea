"""The shared state store: runs, journal and locks in PostgreSQL (psycopg 3).

Same tables and statements as the SQLite store (sql.py), so a run started in one
directory or on one machine is resumed from another, and the run lock holds across
them. Locks are rows taken with ``SELECT … FOR UPDATE``; appends to one run are
serialised with a transaction-scoped advisory lock, so sequence numbers never collide.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from drctl.errors import StateError, first_line
from drctl.state.sql import Cursor, SqlStore


class PostgresStore(SqlStore):
    """State in a PostgreSQL database (``--state postgresql://…``)."""

    dialect = "postgres"
    meta_table = "drctl_meta"
    placeholder = "%s"
    for_update = " FOR UPDATE"
    for_share = " FOR SHARE"

    def __init__(self, url: str, *, connect_timeout: int = 10, read_only: bool = False) -> None:
        import psycopg

        super().__init__(safe_location(url), read_only=read_only)
        self._psycopg = psycopg
        self._endpoints = _endpoints(url)
        self._mutex = threading.RLock()
        try:
            self._db = psycopg.connect(url, connect_timeout=connect_timeout, autocommit=False)
            # The server refuses every write of a read-only session, ours included.
            self._db.read_only = read_only
            self._open_schema()
        except psycopg.Error as exc:
            raise StateError(f"cannot open state store {self.location}: {first_line(exc)}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        psycopg = self._psycopg
        with self._mutex:
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise StateError(f"state store {self.location}: {first_line(exc)}") from exc

    def _serialise_migration(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('drctl-migrate'))")

    def _serialise_appends(self, cur: Cursor, run_id: str) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"drctl-run:{run_id}",))

    def _has_table(self, cur: Cursor, name: str) -> bool:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        return bool(cur.fetchone()[0])

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        return self._endpoints

    def close(self) -> None:
        with self._mutex:
            self._db.close()


def _endpoints(url: str) -> tuple[tuple[str, int], ...]:
    """The TCP hosts and ports a libpq URL or DSN names (unix sockets left out)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:  # psycopg's ProgrammingError; the connect reports a bad URL itself
        return ()
    hosts = str(info.get("hostaddr") or info.get("host") or "").split(",")
    ports = str(info.get("port") or "5432").split(",")
    found = []
    for i, host in enumerate(hosts):
        port = ports[i] if i < len(ports) else ports[-1]
        if host and not host.startswith("/") and port.isdigit():
            found.append((host, int(port)))
    return tuple(found)


def safe_location(url: str) -> str:
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
