"""The shared state store: runs, journal and locks in PostgreSQL (psycopg 3).

Same tables and statements as the SQLite store (sql.py), so a run started in one
directory or on one machine is resumed from another, and the run lock holds across
them. Locks are rows taken with ``SELECT … FOR UPDATE``; appends to one run are
serialised with a transaction-scoped advisory lock, so sequence numbers never collide.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from drctl.errors import StateError, UsageError, first_line
from drctl.state.base import Lease
from drctl.state.sql import Cursor, SqlStore

R = TypeVar("R")


#: Seconds to open a connection, and after which unacknowledged bytes end a socket
#: (``tcp_user_timeout``) or silence is probed (keepalives): a store that stops answering
#: is noticed in about this long, not after the kernel's minutes of retransmissions.
CONNECT_TIMEOUT = 5
SOCKET_TIMEOUT = 10.0
#: Server side: a statement that runs longer (a lock wait behind a stuck session) fails.
STATEMENT_TIMEOUT = 15.0
#: How long one operation keeps reconnecting after its connection broke before it fails.
RETRY_FOR = 15.0
#: Attempts per operation, whatever the clock says (bounded in count as well as time).
_MAX_ATTEMPTS = 30


class _Disconnected(StateError):
    """The connection broke before the transaction's commit was sent: nothing was
    written, so the whole operation may run again on a new connection."""


class PostgresStore(SqlStore):
    """State in a PostgreSQL database (``--state postgresql://…``).

    A connection that breaks (the server restarted, the backend was terminated, the
    network dropped it) is replaced, and the operation retried, for up to ``retry_for``
    seconds; one that broke while committing is not retried, since whether the commit
    landed is unknown: the run stops there and its resume reads what the journal holds.
    Lock heartbeats go over a connection of their own, so a journal write stuck on a
    silent server never holds a heartbeat back: the lease's holder learns first.
    """

    dialect = "postgres"
    meta_table = "drctl_meta"
    placeholder = "%s"
    for_update = " FOR UPDATE"
    for_share = " FOR SHARE"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: int = CONNECT_TIMEOUT,
        retry_for: float = RETRY_FOR,
        read_only: bool = False,
    ) -> None:
        import psycopg

        super().__init__(safe_location(url), read_only=read_only)
        self._psycopg = psycopg
        self._url = url
        self._connect_timeout = connect_timeout
        self._retry_for = retry_for
        self._endpoints = _endpoints(url)
        self._mutex = threading.RLock()
        self._beat_mutex = threading.Lock()
        self._beat_db: Any = None
        self._local = threading.local()
        try:
            self._db = self._connect()
        except psycopg.OperationalError as exc:
            # Nothing was written: the flag (or DRCTL_STATE, or settings.state) is wrong.
            raise UsageError(
                f"--state: cannot reach the PostgreSQL store {self.location}: {first_line(exc)}",
                hint="check the URL's host, port and credentials, and that the server is up",
            ) from exc
        except psycopg.Error as exc:
            raise StateError(f"cannot open state store {self.location}: {first_line(exc)}") from exc
        try:
            self._open_schema()
        except psycopg.Error as exc:
            raise StateError(f"cannot open state store {self.location}: {first_line(exc)}") from exc

    def _connect(self) -> Any:
        psycopg = self._psycopg
        conn = psycopg.connect(
            self._url, connect_timeout=self._connect_timeout, autocommit=True,
            keepalives=1, keepalives_idle=max(1, int(SOCKET_TIMEOUT / 3)),
            keepalives_interval=max(1, int(SOCKET_TIMEOUT / 6)), keepalives_count=3,
            tcp_user_timeout=int(SOCKET_TIMEOUT * 1000),
        )  # fmt: skip
        try:
            conn.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT * 1000)}")
            conn.autocommit = False
            # The server refuses every write of a read-only session, ours included.
            conn.read_only = self.read_only
        except psycopg.Error:
            conn.close()
            raise
        return conn

    def _retry(self, attempt: Callable[[], R]) -> R:
        deadline = time.monotonic() + self._retry_for
        last: _Disconnected | None = None
        for n in range(_MAX_ATTEMPTS):
            try:
                return attempt()
            except _Disconnected as exc:
                last = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.1 * 2**n, 1.0, max(0.0, deadline - time.monotonic())))
        assert last is not None
        raise StateError(
            f"state store {self.location}: the connection broke and no new one worked within "
            f"{self._retry_for:g}s: {last.message}",
            hint="check that the server answers; the run stopped before its next step",
        ) from last.__cause__

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        psycopg = self._psycopg
        beat = getattr(self._local, "beat", False)
        with self._beat_mutex if beat else self._mutex:
            conn = self._usable(beat)
            committing = False
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
                    committing = True
            except psycopg.Error as exc:
                if conn.broken and not committing:
                    raise _Disconnected(f"state store {self.location}: {first_line(exc)}") from exc
                if conn.broken:
                    raise StateError(
                        f"state store {self.location}: the connection broke while committing, "
                        f"so whether the write landed is unknown: {first_line(exc)}"
                    ) from exc
                raise StateError(f"state store {self.location}: {first_line(exc)}") from exc

    def _usable(self, beat: bool) -> Any:
        """The connection for this call, replaced first if it broke (under its mutex)."""
        conn = self._beat_db if beat else self._db
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        try:
            fresh = self._connect()
        except self._psycopg.Error as exc:
            raise _Disconnected(
                f"state store {self.location}: cannot reconnect: {first_line(exc)}"
            ) from exc
        if beat:
            self._beat_db = fresh
        else:
            self._db = fresh
        return fresh

    def heartbeat(self, lease: Lease, ttl: float, now: float) -> Lease:
        # Over its own connection: a journal write waiting on a silent server holds the
        # main one, and the heartbeat must still fail (and say why) on its own time.
        self._local.beat = True
        try:
            return super().heartbeat(lease, ttl, now)
        finally:
            self._local.beat = False

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
        with self._beat_mutex:
            if self._beat_db is not None:
                self._beat_db.close()


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
