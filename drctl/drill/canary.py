"""The canary writer: numbered rows committed through the client path, acknowledged.

A background thread inserts ``(drill_id, seq, at)`` into ``drctl_canary`` in autocommit
every ``interval`` seconds, through the DSN an application would use (its host resolved
through ``dns_server`` on every reconnect, as a client's resolver would). A write counts
as acknowledged only after the commit returned; each acknowledgement keeps its sequence
number, wall time and the address it went to. On any failure the connection is dropped
and the next write reconnects (and re-resolves). Every connect and statement is bounded
by ``timeout``, so stopping the canary is bounded too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from drctl.errors import DrctlError

if TYPE_CHECKING:
    from drctl.steps.base import StepContext

TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS drctl_canary "
    "(drill_id text NOT NULL, seq bigint NOT NULL, at timestamptz NOT NULL, "
    "PRIMARY KEY (drill_id, seq))"
)


class CanaryError(DrctlError):
    """Raised when the canary cannot write before the drill starts (exit 2: check the flags),
    or cannot resolve or read back the new primary after it (the drill journals that instead)."""

    exit_code = 2


@dataclass(frozen=True)
class Ack:
    """One acknowledged write: its sequence number, when the commit returned, and where it went."""

    seq: int
    at: float
    address: str


class _Budget:
    """The one thing the postgres resolver asks of a step context: the time left."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())


def resolve_dsn(dsn: str, dns_server: str | None, timeout: float = 1.0) -> tuple[str, str]:
    """The DSN to connect with and the address it names (its host resolved through ``dns_server``)."""
    from psycopg.conninfo import conninfo_to_dict

    from drctl.errors import StepError
    from drctl.providers.postgres.session import target_dsn

    if dns_server:
        ctx = cast("StepContext", _Budget(timeout))
        try:
            resolved, address = target_dsn(ctx, {"dsn": dsn, "dns_server": dns_server})
        except StepError as exc:
            raise CanaryError(exc.message) from exc
        return resolved, address or ""
    params = conninfo_to_dict(dsn)
    return dsn, str(params.get("hostaddr") or params.get("host") or "")


def connect(dsn: str, timeout: float) -> Any:
    """An autocommit connection with connect and statement timeouts of about ``timeout``."""
    import psycopg

    return psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=max(1, round(timeout)),
        # A server that vanished mid-statement: give up when sent data stays unacknowledged.
        tcp_user_timeout=int(timeout * 1000) + 1000,
        options=f"-c statement_timeout={int(timeout * 1000)}",
    )


class PostgresCanary:
    """Writes numbered rows through ``dsn`` until stopped; keeps every acknowledgement."""

    def __init__(
        self,
        dsn: str,
        drill_id: str,
        *,
        dns_server: str | None = None,
        interval: float = 0.02,
        timeout: float = 1.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.dsn = dsn
        self.drill_id = drill_id
        self.dns_server = dns_server
        self.interval = interval
        self.timeout = timeout
        self._now = now
        self._acks: list[Ack] = []
        self._errors = 0
        self._last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the canary table through the client path; raises CanaryError if it cannot."""
        import psycopg

        try:
            dsn, _ = resolve_dsn(self.dsn, self.dns_server, self.timeout)
            with connect(dsn, max(self.timeout, 3.0)) as conn:
                conn.execute(TABLE_SQL)
        except psycopg.Error as exc:
            raise CanaryError(f"canary: cannot create drctl_canary: {_first_line(exc)}") from exc

    def start(self, first_ack_within: float = 5.0) -> None:
        """Start writing; returns after the first acknowledgement (CanaryError if none comes)."""
        self.started_at = self._now()
        self._thread = threading.Thread(target=self._loop, name="drctl-canary", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + first_ack_within
        while time.monotonic() < deadline:
            if self.acks():
                return
            time.sleep(0.01)
        self.stop()
        raise CanaryError(
            f"canary: no write acknowledged within {first_ack_within:g}s through {self._shown()}"
            + (f": {self._last_error}" if self._last_error else ""),
            hint="check --canary-dsn (and --canary-dns-server): the canary writes where the application does",
        )

    def stop(self) -> None:
        """Stop writing; bounded by one statement's timeout."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout * 3 + 1)
        self.stopped_at = self._now()

    def acks(self) -> list[Ack]:
        with self._lock:
            return list(self._acks)

    @property
    def errors(self) -> int:
        return self._errors

    # -- the writer ----------------------------------------------------------------------
    def _loop(self) -> None:
        import psycopg

        conn: Any = None
        address = ""
        seq = 0
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                if conn is None:
                    dsn, address = resolve_dsn(self.dsn, self.dns_server, self.timeout)
                    conn = connect(dsn, self.timeout)
                seq += 1
                conn.execute(
                    "INSERT INTO drctl_canary (drill_id, seq, at) VALUES (%s, %s, now())",
                    (self.drill_id, seq),
                )
                ack = Ack(seq, self._now(), address)
                with self._lock:
                    self._acks.append(ack)
            except (psycopg.Error, CanaryError, OSError) as exc:
                self._errors += 1
                self._last_error = _first_line(exc)
                _close(conn)
                conn = None
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))
        _close(conn)

    def _shown(self) -> str:
        return self.dsn + (f" (resolved through {self.dns_server})" if self.dns_server else "")


def read_back(dsn: str, drill_id: str, timeout: float = 5.0) -> set[int]:
    """The canary sequence numbers of ``drill_id`` present at ``dsn`` (none if the table is absent)."""
    import psycopg

    try:
        with connect(dsn, timeout) as conn:
            rows = conn.execute(
                "SELECT seq FROM drctl_canary WHERE drill_id = %s", (drill_id,)
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        return set()
    except psycopg.Error as exc:
        raise CanaryError(
            f"canary: cannot read back from the new primary: {_first_line(exc)}"
        ) from exc
    return {int(r[0]) for r in rows}


def _close(conn: Any) -> None:
    if conn is None:
        return
    with contextlib.suppress(Exception):  # closing a broken connection: nothing to do with it
        conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
