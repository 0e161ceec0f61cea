"""Connections and server-side tools for the PostgreSQL steps, with every error translated.

Every connection has a connect timeout and a statement timeout bounded by the step's
remaining time, so a hung server fails the step instead of hanging drctl. psycopg's
exceptions become StepError here, once, keeping the cause.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drctl.errors import StepError, Unreachable, first_line
from drctl.runbook.targets import PostgresTarget, SshTarget
from drctl.steps.base import StepContext
from drctl.steps.process import Completed, OsUser, last_line, run_command

#: Where a connection goes: a postgres target, its host resolved through the target's
#: ``dns_server`` (when it has one) on every connection, or a DSN used as it is.
Server = PostgresTarget | str


@contextmanager
def connect(
    server: Server, ctx: StepContext, *, what: str, read_only: bool = False, cap: float = 10.0
) -> Iterator[Any]:
    """An autocommit connection; ``read_only`` makes every transaction read-only."""
    import psycopg

    dsn = dsn_of(ctx, server)
    parse_dsn(dsn, what)
    budget = max(0.5, min(ctx.remaining(), cap))
    options = f"-c statement_timeout={int(budget * 1000)}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, connect_timeout=max(1, int(budget)), options=options
        )
    except psycopg.OperationalError as exc:
        raise Unreachable(f"{what}: cannot connect: {first_line(exc)}") from exc
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise StepError(f"{what}: {first_line(exc)}") from exc


#: A quoted piece of libpq's parse error ("=" alone names the missing sign, keep it).
_QUOTED = re.compile(r'"[^"]*"')


def parse_dsn(dsn: str, what: str) -> dict[str, Any]:
    """The DSN's parameters, or a StepError whose message never quotes the DSN.

    libpq's parse errors quote the token they stopped at, which can be a piece of a
    password (``missing "=" after "secondhalf"``) that masking cannot recognise: every
    quoted piece is dropped from the message.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = _QUOTED.sub(lambda m: m[0] if m[0] == '"="' else '"…"', first_line(exc))
        raise StepError(
            f"{what}: the target's dsn is not a valid libpq connection string ({reason}; "
            "the DSN's own text is left out, it may hold a password). Write it as key=value "
            "pairs, values with spaces in single quotes, or as a postgresql:// URI"
        ) from exc


def dsn_of(ctx: StepContext, server: Server) -> str:
    """The DSN to reach ``server`` with now: a target's host resolved through its dns_server.

    The one place a postgres target's ``dns_server`` is honoured, so every step type
    (and every tool a step runs, pg_rewind's source included) reaches the server a
    client following the name would reach at that moment.
    """
    if isinstance(server, str):
        return server
    return target_dsn(ctx, server.dsn, server.dns_server)[0]


def target_dsn(ctx: StepContext, dsn: str, server: str | None) -> tuple[str, str | None]:
    """A DSN with its host resolved through the DNS ``server`` (``host:port``), if one is given.

    Returns the DSN to connect with and the address the name resolved to (or None).
    """
    if not server:
        return dsn, None
    from psycopg.conninfo import make_conninfo

    params = parse_dsn(dsn, "postgres target")
    host = str(params.get("host") or "")
    address = _resolve_a(ctx, host, server)
    return make_conninfo(dsn, hostaddr=address), address


def _resolve_a(ctx: StepContext, name: str, server: str) -> str:
    from drctl.providers.dns.resolve import Resolve

    Resolve().warm()  # dnspython through the one import lock, not beside a dns step's
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    ip, _, port = server.rpartition(":")
    query = dns.message.make_query(name if name.endswith(".") else name + ".", "A")
    try:
        reply = dns.query.udp(
            query, ip or server, port=int(port or 53), timeout=max(0.5, min(ctx.remaining(), 3.0))
        )
    except (OSError, ValueError, dns.exception.DNSException) as exc:
        raise Unreachable(f"cannot resolve {name} through {server}: {first_line(exc)}") from exc
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.A:
            return str(next(iter(rrset)).address)
    # A name that does not resolve is a server drctl cannot reach (see Unreachable).
    raise Unreachable(f"{name} has no A record at {server}")


def scalar(conn: Any, sql: str, args: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql, args).fetchone()
    return row[0] if row else None


def lsn(text: str | None) -> int | None:
    """``'0/3000148'`` → 50331976."""
    if not text:
        return None
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def lsn_text(position: int | None) -> str | None:
    """50331976 → ``'0/3000148'``."""
    if position is None:
        return None
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def is_read_only_error(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc.__cause__, psycopg.errors.ReadOnlySqlTransaction)


def writable(dsn: Server, ctx: StepContext, what: str) -> bool | None:
    """Whether a fresh session can write: True, False (refused), None (no answer)."""
    try:
        return not refuses_writes(dsn, ctx, what)
    except Unreachable:
        return None


def refuses_writes(dsn: Server, ctx: StepContext, what: str) -> bool:
    """Whether a fresh session is refused writes; ``Unreachable`` if the server does not answer.

    A server that rejects the session with a ``reject`` line of pg_hba.conf (the hard
    fence) answers: refused. Silence is not an answer either way, so it stays an error.
    """
    return probe_writes(dsn, ctx, what)[0]


def probe_writes(
    dsn: Server, ctx: StepContext, what: str, *, try_write: bool = True
) -> tuple[bool, int | None]:
    """``refuses_writes``, and the write position of a primary that let the session in.

    One session for both, so a promote asks its old primary once. Without
    ``try_write`` the session is read-only and only the position is read (the first
    value is then only whether it is in recovery).
    """
    import psycopg

    try:
        with connect(dsn, ctx, what=what, read_only=not try_write, cap=5.0) as conn:
            recovery, position = conn.execute(
                "SELECT pg_is_in_recovery(), "
                "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END"
            ).fetchone()
            if recovery or not try_write:
                return bool(recovery), lsn(position)
            try:
                with conn.transaction():
                    conn.execute("CREATE TEMP TABLE drctl_fence_probe (x int) ON COMMIT DROP")
            except psycopg.errors.ReadOnlySqlTransaction:
                return True, lsn(position)
            return False, lsn(position)
    except Unreachable as exc:
        if refused_by_hba(exc):
            return True, None
        raise


def refused_by_hba(exc: StepError) -> bool:
    """Whether a failed connection was turned away by a ``reject`` line of pg_hba.conf.

    Only an explicit reject line (what the hard fence writes) counts: "no pg_hba.conf
    entry for host …" is a server that never let drctl in, which proves nothing about
    whether applications can still write there.
    """
    return "pg_hba.conf rejects connection" in str(exc.__cause__ or exc)


# -- server-side tools (pg_ctl, pg_rewind) on a local data directory -------------------


@dataclass(frozen=True)
class ServerNode:
    """Where a postgres target's server lives and how its tools are run."""

    data_dir: str
    bin_dir: str
    #: The server's OS user the tools run as ("" for the current user).
    os_user: str
    as_root: bool
    #: The host the tools run on over SSH; None for this machine.
    ssh: SshTarget | None
    start_options: str
    log_file: str


def local_node(target: PostgresTarget, what: str, ctx: StepContext) -> ServerNode:
    """Where a postgres target's server lives and how to control it, or a StepError.

    With ``ssh: NAME`` on the target, its tools run on that host over SSH (the named
    ssh target, strict host keys); without it, on this machine.
    """
    if not target.data_dir:
        raise StepError(
            f"{what}: the target has no data_dir; controlling a server needs its data "
            "directory (on this machine, or on the host of its ssh target)"
        )
    ssh = ctx.target_named(target.ssh, SshTarget) if target.ssh else None
    bin_dir = target.bin_dir or ("" if ssh else server_bin_dir())
    as_root = ssh.user == "root" if ssh else os.geteuid() == 0
    user = target.os_user or ("postgres" if as_root else "")
    return ServerNode(
        data_dir=target.data_dir,
        bin_dir=bin_dir,
        os_user=user,
        as_root=as_root,
        ssh=ssh,
        start_options=target.start_options or "",
        log_file=target.log_file or str(Path(target.data_dir).with_suffix(".log")),
    )


def server_bin_dir() -> str:
    """Where initdb/pg_ctl/pg_rewind live: $DRCTL_PG_BIN, Debian's layout, or PATH ("" if none)."""
    if os.environ.get("DRCTL_PG_BIN"):
        return os.environ["DRCTL_PG_BIN"]
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return str(Path(initdb).parent) if initdb else ""


def pg_tool(
    ctx: StepContext,
    node: ServerNode,
    tool: str,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run a server tool as the data directory's OS user (initdb/pg_ctl refuse root)."""
    return _as_server_user(ctx, node, [tool_path(node, tool), *args], env)


def tool_path(node: ServerNode, tool: str) -> str:
    """Where ``tool`` is on the server's host: in its bin_dir, else found on PATH."""
    return str(Path(node.bin_dir) / tool) if node.bin_dir else tool


def node_shell(
    ctx: StepContext,
    node: ServerNode,
    script: str,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> Completed:
    """Run a small sh script as the server's OS user, where the server lives.

    Values go in through ``env`` (kept off command lines, sent over SSH's stdin);
    ``args`` are the script's ``"$@"``.
    """
    # By its path: a bare "sh" is looked for along PATH, one failed exec per entry.
    return _as_server_user(ctx, node, ["/bin/sh", "-c", script, "sh", *args], env)


#: Tools that start a server (or run one in single-user mode): run through ``runuser``,
#: so the server gets the user's PAM session and its limits. Every other tool (psql, a
#: shell) is exec'd as the user directly: two processes fewer.
_STARTS_SERVER = frozenset({"pg_ctl", "pg_rewind", "postgres", "initdb"})


def _as_server_user(
    ctx: StepContext, node: ServerNode, argv: list[str], env: Mapping[str, str] | None
) -> Completed:
    switch = node.as_root and node.os_user and node.os_user != "root"
    if switch and not node.ssh and Path(argv[0]).name not in _STARTS_SERVER:
        return run_command(ctx, argv, env=env, user=OsUser.named(node.os_user))
    if switch:
        keep = ",".join(sorted(env)) if env else ""
        # From "/": the caller's directory (root's home, over SSH) is closed to the server's
        # user, and every tool would start by saying so.
        argv = [
            "runuser", "-u", node.os_user, *(["-w", keep] if keep else []), "--",
            "/bin/sh", "-c", 'cd / && exec "$0" "$@"', *argv,
        ]  # fmt: skip
    if node.ssh:
        from drctl.providers.ssh.run import SshRun
        from drctl.providers.ssh.session import run_remote

        SshRun().warm()  # paramiko through the one import lock, not beside an ssh step's

        return run_remote(ctx, node.ssh, argv, env=env)
    return run_command(ctx, argv, env=env)


@dataclass(frozen=True)
class LocalSocket:
    """How drctl's superuser reaches a server over its Unix socket, on the server's host."""

    directory: str
    port: int
    user: str
    database: str

    def as_json(self) -> dict[str, object]:
        return {"directory": self.directory, "port": self.port, "user": self.user,
                "database": self.database}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalSocket:
        return cls(str(data["directory"]), int(data["port"]), str(data["user"]),
                   str(data["database"]))  # fmt: skip


def socket_scalar(
    ctx: StepContext, node: ServerNode, socket: LocalSocket, label: str, sql: str
) -> str:
    """One value of the scalar query ``sql``, asked with psql over the server's Unix socket.

    The path the hard fence leaves open for drctl's superuser, locally or over SSH.
    psql's output is the step's log, so the value comes out as ``label: value``.
    """
    return socket_session(ctx, node, socket, [(label, sql)])[label]


def socket_session(
    ctx: StepContext,
    node: ServerNode,
    socket: LocalSocket,
    statements: list[tuple[str | None, str]],
) -> dict[str, str]:
    """Run ``statements`` in order in one psql session over the server's Unix socket.

    Each is ``(label, scalar query)`` — its value comes back under ``label`` — or
    ``(None, statement)``, run for its effect. One process and one connection for all
    of them (each its own transaction); psql stops at the first error, and that is a
    StepError, as is a labelled value missing from the output.
    """
    argv, env = socket_psql(node, socket, statements)
    done = _as_server_user(ctx, node, argv, env)
    values: dict[str, str] = {}
    lines = done.output.splitlines()
    for label, _ in statements:
        if label is None:
            continue
        prefix = f"{label}: "
        found = [line[len(prefix) :] for line in lines if line.startswith(prefix)]
        if found:
            values[label] = found[-1]
    if done.exit_code != 0 or len(values) < sum(1 for label, _ in statements if label):
        raise StepError(
            f"psql over the local socket {socket.directory} failed (exit {done.exit_code}): "
            f"{last_line(done.output)}"
        )
    return values


def socket_psql(
    node: ServerNode, socket: LocalSocket, statements: list[tuple[str | None, str]]
) -> tuple[list[str], dict[str, str]]:
    """psql's argv and environment for ``socket_session``'s ``statements``."""
    env = {
        "PGHOST": socket.directory, "PGPORT": str(socket.port), "PGUSER": socket.user,
        "PGDATABASE": socket.database, "PGCONNECT_TIMEOUT": "5",
    }  # fmt: skip
    argv = [tool_path(node, "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    for label, sql in statements:
        argv += [
            "-c",
            sql if label is None else f"SELECT '{label}: ' || COALESCE(({sql})::text, '')",
        ]
    return argv, env


def pg_ctl_status(ctx: StepContext, node: ServerNode) -> bool:
    """True if the server runs, False if it is stopped; a StepError if pg_ctl cannot tell.

    ``pg_ctl status`` exits 0 (running), 3 (not running) or 4 (no accessible data
    directory): 4 — a data directory that is not on this machine — proves nothing.
    """
    done = pg_tool(ctx, node, "pg_ctl", "status", "-D", node.data_dir)
    if done.exit_code in (0, 3):
        return done.exit_code == 0
    raise StepError(
        f"cannot tell whether the server in {node.data_dir} is running: pg_ctl status "
        f"exit {done.exit_code}: {last_line(done.output)}"
    )


def pg_ctl(ctx: StepContext, node: ServerNode, action: str) -> None:
    if action == "reload":  # a signal: nothing to wait for
        done = pg_tool(ctx, node, "pg_ctl", "reload", "-D", node.data_dir)
        if done.exit_code != 0:
            raise StepError(
                f"pg_ctl reload failed (exit {done.exit_code}): {last_line(done.output)}"
            )
        return
    args = [action, "-w", "-t", str(max(5, int(ctx.remaining()))), "-D", node.data_dir]
    if action == "stop":
        args += ["-m", "fast"]
    if action == "start":
        args += ["-l", node.log_file]
        if node.start_options:
            args += ["-o", node.start_options]
    done = pg_tool(ctx, node, "pg_ctl", *args)
    if done.exit_code != 0:
        raise StepError(f"pg_ctl {action} failed (exit {done.exit_code}): {last_line(done.output)}")
