"""``postgres.fence``: make the old primary stop accepting writes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres import hba
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.controldata import control_data
from drctl.providers.postgres.session import (
    LocalSocket,
    Server,
    ServerNode,
    connect,
    local_node,
    pg_ctl,
    pg_ctl_status,
    refused_by_hba,
    refuses_writes,
    scalar,
    socket_psql,
    socket_scalar,
    socket_session,
    writable,
)
from drctl.steps.base import Role, StepInputs, published

Mode = Literal["read_only", "hard", "stop", "read_only_then_stop"]

_CLIENTS = (
    "SELECT count({}) FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
)
_LEFT = "client sessions left"
_ENDED = "client sessions ended"
_FINAL = "final WAL position"
#: How long, and how often, the server is asked whether the ended sessions are gone.
_GONE_WITHIN = 5.0
_GONE_EVERY = 0.05
#: Waits on the server for the client backends to exit. pg_stat_activity is a snapshot
#: taken once per transaction; pg_stat_clear_snapshot() makes each pass a fresh look.
_WAIT_GONE = (
    "DO $$BEGIN FOR i IN 1..{polls} LOOP PERFORM pg_stat_clear_snapshot(); "
    "EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'client backend' "
    "AND pid <> pg_backend_pid()); PERFORM pg_sleep({every}); END LOOP; END$$"
)


class FenceInputs(StepInputs):
    mode: Mode = Field(
        default="read_only",
        description=(
            "read_only (advisory), hard (pg_hba.conf rejects every session but replication "
            "and drctl's local superuser; the server stays up), stop, or read-only then stop."
        ),
    )
    terminate_sessions: bool = Field(
        default=True,
        description="After the read-only switch, end client sessions opened before it.",
    )


Ctx = PostgresContext[FenceInputs]


class Fence(PostgresStep[FenceInputs]):
    """Stop the old primary from accepting writes: read-only, hard (pg_hba.conf), or stopped.

    ``read_only`` sets ``default_transaction_read_only`` with ALTER SYSTEM, reloads, and
    ends existing client sessions. It is advisory: any session can still run
    ``SET default_transaction_read_only = off`` and write. ``stop`` is a fast shutdown
    with ``pg_ctl`` on the target's ``data_dir``. ``verify`` needs a positive proof: a
    fresh session refused writes (read_only), ``pg_ctl status`` saying stopped where the
    server lives (stop modes), or the reject line answering (hard). A server that does
    not answer is never counted as fenced: resumed, such a fence is applied again, and a
    mode that needs the server's answer fails saying it did not answer.

    ``hard`` keeps the server up, so its last WAL still reaches the standbys, but lets
    no application session in: it rewrites ``pg_hba.conf`` (the file ``hba_file`` names,
    where the server lives: locally, or over SSH with the target's ``ssh``) to keep only
    the replication lines and the ``local`` lines of the target's own superuser role,
    rejects everything else, reloads, and ends every client backend. The original file
    is saved as ``<hba_file>.drctl-fence`` and recorded. ``verify``: a fresh session
    with the target's DSN is turned away by pg_hba.conf, and (asked over the local
    socket with psql) no client backend remains. It needs a superuser DSN, ``data_dir``
    and a Unix socket.

    Every mode publishes ``final_lsn``, the old primary's last WAL position: from
    ``pg_current_wal_lsn()`` once sessions are ended (read_only, hard), or the last
    checkpoint in ``pg_controldata`` after a stop (``final_lsn_from`` says which).
    ``undo`` lifts the fence (starts a stopped server, resets the read-only setting,
    puts the recorded pg_hba.conf back and reloads).
    """

    name = "postgres.fence"
    outputs = published(
        {
            "fenced": "True once the fence is in place.",
            "mode": "The fence mode.",
            "sessions_ended": "Client sessions ended (read_only with terminate_sessions).",
            "final_lsn": "The old primary's last WAL position.",
            "final_lsn_from": "Where final_lsn was read (pg_current_wal_lsn or pg_controldata).",
        }
    )
    Inputs = FenceInputs
    roles = frozenset({Role.FENCE, Role.MUTATING})

    def describe(self, inputs: FenceInputs, target: str | None) -> str:
        return {
            "read_only": f"fence {target}: read-only (advisory: a session can override it)",
            "hard": (
                f"fence {target}: pg_hba.conf rejects all but replication and drctl's local "
                "superuser, client sessions ended (the server keeps streaming WAL)"
            ),
            "stop": f"fence {target}: stop the server (fast shutdown)",
            "read_only_then_stop": f"fence {target}: read-only, then stop the server",
        }[inputs.mode]

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        target = ctx.target
        if inputs.mode != "read_only":
            local_node(target, f"fence ({inputs.mode})", ctx)
        if not ctx.dry_run:
            # What this would say is only shown in a dry run; apply asks the server anew,
            # and a hard fence proves its local socket in the shell that writes the file.
            return None
        try:
            with connect(target, ctx, what="old primary", read_only=True, cap=5.0) as conn:
                if scalar(conn, "SELECT pg_is_in_recovery()"):
                    return "do nothing: the server is a standby and takes no writes already"
                if inputs.mode == "hard":
                    _socket_answers(ctx, local_node(target, "fence (hard)", ctx), conn)
                # None: the plan's own description, which names the target (not the step).
                return None
        except Unreachable as exc:
            if refused_by_hba(exc):
                return "do nothing: pg_hba.conf turns sessions away already (hard-fenced)"
            if inputs.mode in ("stop", "read_only_then_stop"):
                return (
                    f"stop a server that does not answer ({exc.message}): only pg_ctl status "
                    "saying stopped will prove the fence"
                )
            return (
                f"fail: the server does not answer ({exc.message}), so it cannot be fenced or "
                "shown to be fenced from here"
            )

    def apply(self, ctx: Ctx) -> None:
        from drctl.providers.patroni.guard import refuse_unless_paused

        refuse_unless_paused(ctx, "fence it")  # live, right before acting (DR006)
        inputs = ctx.inputs
        target = ctx.target
        dsn = target
        if inputs.mode == "hard":
            self._hard(ctx, local_node(target, "fence (hard)", ctx))
        if inputs.mode in ("read_only", "read_only_then_stop"):
            try:
                self._read_only(ctx, dsn, inputs.terminate_sessions)
            except Unreachable as exc:
                if inputs.mode == "read_only":
                    raise _not_proven(exc) from exc
                ctx.log(f"server does not answer ({exc.message}); going on to stop it")
        if inputs.mode in ("stop", "read_only_then_stop"):
            node = local_node(target, "fence (stop)", ctx)
            ctx.record("stopped", True)
            if pg_ctl_status(ctx, node):
                pg_ctl(ctx, node, "stop")
                ctx.log("server stopped")
            else:
                ctx.log("server was not running")
            _final_lsn(ctx, control_data(ctx, node).checkpoint_lsn, "pg_controldata")
        ctx.output("fenced", True)
        ctx.output("mode", inputs.mode)

    @staticmethod
    def _read_only(ctx: Ctx, dsn: Server, terminate: bool) -> None:
        ctx.record("read_only", True)
        with connect(dsn, ctx, what="old primary") as conn:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous; wait until fresh sessions see it.
        seen = ctx.poll(
            lambda: True if writable(dsn, ctx, "old primary") is False else None,
            every=0.1,
            within=5.0,
        )
        if not seen.done:
            raise StepError(
                f"the read-only setting did not take effect {seen.waited:.1f}s after a reload"
            )
        if terminate:
            with connect(dsn, ctx, what="old primary") as conn:
                ended = scalar(
                    conn,
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
            ctx.log(f"read-only; ended {ended} client session(s)")
            ctx.output("sessions_ended", ended)
        with connect(dsn, ctx, what="old primary") as conn:
            _final_lsn(ctx, scalar(conn, "SELECT pg_current_wal_lsn()::text"), "pg_current_wal_lsn")

    @staticmethod
    def _hard(ctx: Ctx, node: ServerNode) -> None:
        dsn = ctx.target
        try:
            socket = _fence_hba(ctx, node)
        except Unreachable as exc:
            # A retry after the file was swapped in: the DSN is turned away already, and
            # the rest goes over the local socket the first attempt recorded.
            if not refused_by_hba(exc) or "socket" not in ctx.recorded:
                raise
            ctx.log("pg_hba.conf is fenced already; finishing over the local socket")
            socket = LocalSocket.from_json(ctx.recorded["socket"])
        # The reload is asynchronous; end sessions only once no new one can come in. The
        # postmaster usually has it within a few ms: a short interval, as each look is
        # one refused connection attempt.
        shut = ctx.poll(lambda: True if _refused(dsn, ctx) else None, every=0.02, within=5.0)
        if not shut.done:
            raise StepError(
                f"fresh sessions still get in {shut.waited:.1f}s after reloading the fenced "
                "pg_hba.conf"
            )

        # One psql session: end the clients, wait on the server until they are gone
        # (pg_terminate_backend only signals), count what is left, read the final WAL
        # position. Each statement is its own transaction, so the count is a fresh look.
        started = ctx.monotonic()
        within = max(0.0, min(_GONE_WITHIN, ctx.remaining() - 1.0))
        told = socket_session(ctx, node, socket, [
            (_ENDED, _CLIENTS.format("pg_terminate_backend(pid)")),
            (None, _WAIT_GONE.format(polls=int(within / _GONE_EVERY) + 1, every=_GONE_EVERY)),
            (_LEFT, _CLIENTS.format("*")),
            (_FINAL, "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END"),
        ])  # fmt: skip
        ended = int(told[_ENDED])
        if told[_LEFT] != "0":
            waited = ctx.monotonic() - started
            raise StepError(f"client sessions remain {waited:.1f}s after ending them")
        final = told[_FINAL]
        ctx.log(f"pg_hba.conf fenced and reloaded; ended {ended} client session(s)")
        ctx.output("sessions_ended", ended)
        if final:
            _final_lsn(ctx, final, "pg_current_wal_lsn")

    def verify(self, ctx: Ctx) -> bool:
        """Whether the fence holds now, from a positive proof only.

        A server that does not answer proves nothing (it may take writes behind a
        partition): that is an ``Unreachable``, never True. The proofs: stopped, as
        ``pg_ctl status`` says where the server lives (stop modes); turned away by the
        reject line with no client session left (hard); a fresh session refused writes
        (read_only).
        """
        mode = ctx.inputs.mode
        if mode in ("stop", "read_only_then_stop"):
            stopped = not pg_ctl_status(ctx, local_node(ctx.target, f"fence ({mode})", ctx))
            if not stopped:
                ctx.log("the server is still running")
            return stopped
        if mode == "read_only":
            try:
                return refuses_writes(ctx.target, ctx, "old primary")
            except Unreachable as exc:
                raise _not_proven(exc) from exc
        recorded = ctx.recorded.get("socket")
        if recorded is None:
            return False
        try:
            with connect(ctx.target, ctx, what="old primary", read_only=True, cap=3.0):
                return False  # a fresh session still gets in
        except Unreachable as exc:
            if not refused_by_hba(exc):
                raise _not_proven(exc) from exc
        node = local_node(ctx.target, "fence (hard)", ctx)
        socket = LocalSocket.from_json(recorded)
        return socket_scalar(ctx, node, socket, _LEFT, _CLIENTS.format("*")) == "0"

    def undo(self, ctx: Ctx) -> None:
        target = ctx.target
        if "hba_original" in ctx.recorded:
            node = local_node(target, "fence undo", ctx)
            hba_file = str(ctx.recorded["hba_file"])
            hba.write(ctx, node, hba_file, str(ctx.recorded["hba_original"]), save=False)
            pg_ctl(ctx, node, "reload")
            ctx.log(f"{hba_file} put back and reloaded")
            return
        if ctx.recorded.get("stopped"):
            node = local_node(target, "fence undo", ctx)
            if not pg_ctl_status(ctx, node):
                pg_ctl(ctx, node, "start")
        with connect(target, ctx, what="old primary") as conn:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")


def _local_socket(conn: Any) -> LocalSocket:
    """How drctl's role reaches the server over its Unix socket; a StepError if it cannot."""
    user, database, sockets, port, superuser = conn.execute(
        "SELECT current_user, current_database(), current_setting('unix_socket_directories'), "
        "current_setting('port')::int, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
    ).fetchone()
    if not superuser:
        raise StepError(
            f"a hard fence needs a superuser DSN: {user} cannot read pg_hba_file_rules "
            "or end other roles' sessions"
        )
    directory = str(sockets).split(",")[0].strip()
    if not directory:
        raise StepError(
            "a hard fence needs the server's Unix socket (unix_socket_directories is empty): "
            "it is drctl's way in once pg_hba.conf rejects TCP sessions"
        )
    return LocalSocket(directory, int(port), str(user), str(database))


def _fence_hba(ctx: Ctx, node: ServerNode) -> LocalSocket:
    """Swap the fenced pg_hba.conf in and reload; the local socket drctl keeps.

    The shell that writes the file first proves, with psql as the server's user, that
    the local socket lets drctl in: the fenced file keeps this way in and no other, so
    a fence drctl could not finish must not start.
    """
    with connect(ctx.target, ctx, what="old primary") as conn:
        socket = _local_socket(conn)
        hba_file = str(scalar(conn, "SELECT current_setting('hba_file')"))
        original = hba.read_original(conn, hba_file)
        # Recorded before the file changes, so undo finds it whatever happens next.
        ctx.record("hba_file", hba_file)
        ctx.record("hba_original", original)
        ctx.record("socket", socket.as_json())
        proof = socket_psql(node, socket, [("local socket answers as", "SELECT current_user")])
        content = hba.fenced(original, socket.user, hba_file)
        locked_out = hba.write(ctx, node, hba_file, content, save=True, first=proof)
        if locked_out is not None:
            raise _would_lock_out(socket, f"psql over the local socket failed: {locked_out}")
        errors = conn.execute(
            "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
        ).fetchall()
        if errors:
            hba.write(ctx, node, hba_file, original, save=False)
            line, error = errors[0]
            raise StepError(
                f"the fenced {hba_file} does not load (line {line}: {error}); "
                "the original is back in place"
            )
        conn.execute("SELECT pg_reload_conf()")
    return socket


def _socket_answers(ctx: Ctx, node: ServerNode, conn: Any) -> LocalSocket:
    """The local socket, once psql has reached the server through it; else a StepError."""
    socket = _local_socket(conn)
    try:
        socket_scalar(ctx, node, socket, "local socket answers as", "SELECT current_user")
    except StepError as exc:
        raise _would_lock_out(socket, exc.message) from exc
    return socket


def _would_lock_out(socket: LocalSocket, why: str) -> StepError:
    return StepError(
        f"a hard fence would lock drctl out: {why}. It needs psql on the server's host and "
        f"a local pg_hba.conf line that lets {socket.user} in"
    )


def _not_proven(exc: Unreachable) -> Unreachable:
    """The error for a server that did not answer where the fence needs an answer."""
    return Unreachable(
        f"{exc.message} — the server did not answer, so it is not fenced as far as drctl "
        "can tell (it may still take writes behind a partition)"
    )


def _refused(dsn: Server, ctx: Ctx) -> bool:
    """Whether a fresh session with ``dsn`` is turned away by pg_hba.conf."""
    try:
        with connect(dsn, ctx, what="old primary", read_only=True, cap=3.0):
            return False
    except Unreachable as exc:
        return refused_by_hba(exc)


def _final_lsn(ctx: Ctx, position: str, source: str) -> None:
    """Publish and record the old primary's last WAL position (the handoff proof's mark)."""
    ctx.record("final_lsn", position)
    ctx.output("final_lsn", position)
    ctx.output("final_lsn_from", source)
    ctx.log(f"final WAL position {position} (from {source})")
