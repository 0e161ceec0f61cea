"""The PostgreSQL canary: numbered rows committed in autocommit into ``drctl_canary``.

The DSN's host is resolved through ``dns_server`` (when given) on every reconnect, as
a client's resolver would, so a repointed DNS name is followed. A write is acknowledged
when its commit returned. On any failure the connection is dropped and the next write
reconnects (and re-resolves), as a pooled application's would.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, cast

from drctl.drill.canary import Canary, CanaryError
from drctl.drill.conninfo import mask_dsn

if TYPE_CHECKING:
    from drctl.steps.base import StepContext

TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS drctl_canary "
    "(drill_id text NOT NULL, seq bigint NOT NULL, at timestamptz NOT NULL, "
    "PRIMARY KEY (drill_id, seq))"
)


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
            resolved, address = target_dsn(ctx, dsn, dns_server)
        except StepError as exc:
            raise CanaryError(exc.message) from exc
        return resolved, address or ""
    params = conninfo_to_dict(dsn)
    return dsn, str(params.get("hostaddr") or params.get("host") or "")


def server_of(conn: Any) -> str:
    """``host:port`` of the server a session is connected to.

    Not the DSN's host: a multi-host DSN (``host=a,b,c target_session_attrs=read-write``)
    names every member, and only the one libpq settled on tells a write's server apart
    (members may share a host and differ by port). The IP libpq connected to when it
    has one (a name resolved, or ``hostaddr``), else the host (a socket directory).
    """
    info = conn.info
    return f"{info.hostaddr or info.host}:{info.port}"


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


class PostgresCanary(Canary):
    """Commits numbered rows through the application's DSN until stopped."""

    kind = "postgres"

    def warm(self) -> None:
        from drctl.providers.postgres.probe import WriteProbe

        WriteProbe().warm()

    def check(self) -> None:
        from psycopg.conninfo import conninfo_to_dict

        for flag, dsn in (("--canary-dsn", self.spec.dsn), ("--verify-dsn", self.spec.verify_dsn)):
            if dsn is None:
                continue
            try:
                conninfo_to_dict(dsn)
            except Exception as exc:  # psycopg words it with a piece of the string: not shown
                raise CanaryError(
                    f"{flag} is not a valid libpq connection string",
                    hint="key=value pairs (quote values with spaces: password='a b') or a postgresql:// URI",
                ) from exc

    def prepare(self) -> None:
        import psycopg

        try:
            dsn, _ = resolve_dsn(self.spec.dsn, self.spec.dns_server, self.spec.timeout)
            with connect(dsn, max(self.spec.timeout, 3.0)) as conn:
                conn.execute(TABLE_SQL)
        except psycopg.Error as exc:
            raise CanaryError(
                f"canary: cannot create drctl_canary: {self.describe_error(exc)}"
            ) from exc

    def _connect(self) -> Any:
        dsn, _ = resolve_dsn(self.spec.dsn, self.spec.dns_server, self.spec.timeout)
        session = connect(dsn, self.spec.timeout)
        # The address travels with its connection: the ack names where the row went.
        return session, server_of(session)

    def _write(self, conn: Any, seq: int) -> str:
        session, address = conn
        session.execute(
            "INSERT INTO drctl_canary (drill_id, seq, at) VALUES (%s, %s, now())",
            (self.drill_id, seq),
        )
        return str(address)

    def _failures(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.Error, CanaryError, OSError)

    def _after_failure(self, conn: Any) -> Any:
        self._close(conn)
        return None

    def _close(self, conn: Any) -> None:
        if conn is None:
            return
        with contextlib.suppress(Exception):  # closing a broken connection: nothing to do with it
            conn[0].close()

    def read_back(self) -> tuple[set[int], str, str]:
        import psycopg

        spec = self.spec
        try:
            if spec.verify_dsn:
                dsn, _ = resolve_dsn(spec.verify_dsn, None)
            else:
                dsn, _ = resolve_dsn(spec.dsn, spec.dns_server, 3.0)
            with connect(dsn, 5.0) as conn:
                address = server_of(conn)
                rows = conn.execute(
                    "SELECT seq FROM drctl_canary WHERE drill_id = %s", (self.drill_id,)
                ).fetchall()
        except psycopg.errors.UndefinedTable:
            rows = []
        except psycopg.Error as exc:
            raise CanaryError(
                f"canary: cannot read back from the new primary: {self.describe_error(exc)}"
            ) from exc
        return {int(r[0]) for r in rows}, address, mask_dsn(dsn)
