"""``postgres.follow``: repoint a standby at the new primary, rewinding only one that diverged."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import Field

from drctl.errors import StepError, Unreachable, first_line
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.discard import new_timeline_fork
from drctl.providers.postgres.promote import current_timeline
from drctl.providers.postgres.rejoin import _libpq_env, rewind
from drctl.providers.postgres.session import (
    connect,
    dsn_of,
    local_node,
    lsn,
    lsn_text,
    pg_ctl,
    scalar,
)
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import Role, StepInputs, published


class FollowInputs(StepInputs):
    new_primary: str = Field(description="Target name of the new primary to stream from.")
    application_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description=(
            "The standby's application_name towards the new primary (what monitoring and "
            "synchronous_standby_names expect); default: the standby's target name."
        ),
    )
    accept_discard: bool = Field(
        default=False,
        description=(
            "pg_rewind a standby that diverged, discarding its WAL past the fork (the range "
            "is measured, journaled and published first), instead of refusing."
        ),
    )
    rewind: bool = Field(
        default=False, description="The older name of accept_discard: the same meaning."
    )

    @property
    def may_discard(self) -> bool:
        return self.accept_discard or self.rewind

    wait_seconds: float = Field(
        default=60.0, ge=1, le=3600, description="How long to wait for streaming."
    )


@dataclass(frozen=True)
class Divergence:
    """Where the standby stands against the new primary's timeline history."""

    #: The standby's timeline and how far it holds WAL (received or replayed) on it.
    timeline: int
    end: int
    #: The new primary's timeline and where it forked from the standby's (None: same timeline).
    new_timeline: int
    fork: int | None

    @property
    def diverged_bytes(self) -> int:
        return 0 if self.fork is None else max(0, self.end - self.fork)

    def describe(self) -> str:
        if self.fork is None:
            return f"on the new primary's timeline {self.timeline} at {lsn_text(self.end)}"
        where = (
            f"timeline {self.timeline} up to {lsn_text(self.end)}; the new primary's "
            f"timeline {self.new_timeline} forked from it at {lsn_text(self.fork)}"
        )
        if self.diverged_bytes:
            return (
                f"diverged: {where}, so {self.diverged_bytes} bytes "
                f"({lsn_text(self.fork)}–{lsn_text(self.end)}) are not on the new timeline"
            )
        return f"a prefix of the new timeline: {where}"


Ctx = PostgresContext[FollowInputs]


class Follow(PostgresStep[FollowInputs]):
    """Repoint a standby to stream from the new primary; rewind it only if it diverged.

    Compares the standby's WAL (the further of received and replayed, on its timeline)
    with the fork point of that timeline in the new primary's timeline history file
    (read with ``pg_read_file``: the new primary's DSN needs a superuser or
    ``pg_read_server_files``). The standby's timeline is its WAL receiver's, or, when
    none runs (its primary gone), the newest one it holds WAL and history for where its
    WAL ends, read from its pg_wal (``pg_ls_waldir`` and ``pg_read_file``: superuser, or
    ``pg_monitor`` and ``pg_read_server_files``) — not its last restartpoint's.
    A standby whose WAL is a prefix of the new timeline is repointed in place:
    ``primary_conninfo`` set with ALTER SYSTEM (one line in postgresql.auto.conf, no
    stale one), ``primary_slot_name`` reset, then a reload (PostgreSQL 13 and later) or
    a restart (older). A standby that really diverged is refused with the exact range,
    unless ``accept_discard: true``: then it is stopped, the range it would discard is
    measured on its WAL (``pg_waldump``, as ``postgres.rejoin`` does), journaled and
    published (``discarded_bytes``, ``discarded_from``, ``discarded_to``,
    ``discarded_commits``), and it is pg_rewound like ``postgres.rejoin``. Whether it was
    rewound, and why, is journaled (``rewound``). ``verify``: the standby's WAL receiver streams on the new
    primary's timeline and the new primary lists it, by application_name, as streaming.
    """

    name = "postgres.follow"
    outputs = published(
        {
            "application_name": "The standby's application_name on the new primary.",
            "fork_lsn": "Where its timeline forks from the new primary's (null if the same).",
            "rewound": "Whether pg_rewind ran.",
            "discarded_bytes": "WAL discarded by the rewind.",
            "discarded_from": "Start of the discarded WAL.",
            "discarded_to": "End of the discarded WAL.",
            "discarded_commits": "Committed write transactions in the discarded WAL.",
        }
    )
    Inputs = FollowInputs
    wait_fields = ("wait_seconds",)
    roles = frozenset({Role.MUTATING})

    def describe(self, inputs: FollowInputs, target: str | None) -> str:
        how = "rewinding it if it diverged" if inputs.may_discard else "refusing if it diverged"
        return f"repoint {target} to stream from {inputs.new_primary} ({how})"

    def check(self, ctx: Ctx) -> str | None:
        if not ctx.dry_run:
            # apply asks both servers just before acting, and refuses the same ways (a
            # new primary still in recovery, a divergence not accepted): asked here too,
            # it would cost two sessions more on the failover's way.
            return None
        inputs = ctx.inputs
        new = ctx.target_named(inputs.new_primary, PostgresTarget)
        with connect(new, ctx, what="new primary", read_only=True) as conn:
            if scalar(conn, "SELECT pg_is_in_recovery()"):
                # The promote before this step has not run in a dry run.
                return (
                    f"repoint it once {inputs.new_primary} is promoted (it is still in "
                    "recovery now)"
                )
        divergence = self._divergence(ctx)
        if divergence.diverged_bytes and not inputs.may_discard:
            raise StepError(
                f"refusing to follow without a rewind: {divergence.describe()}; "
                "set accept_discard: true to discard them with pg_rewind"
            )
        if divergence.diverged_bytes:
            local_node(ctx.target, "follow (rewind)", ctx)
            return f"rewind, {divergence.describe()}"
        return f"repoint in place, {divergence.describe()}"

    def _divergence(self, ctx: Ctx, standby: Any = None) -> Divergence:
        """Where the standby stands, read on ``standby`` (a session to it) or a new one."""
        if standby is None:
            with connect(ctx.target, ctx, what="standby", read_only=True) as conn:
                return self._divergence(ctx, conn)
        if not scalar(standby, "SELECT pg_is_in_recovery()"):
            raise StepError("the target is not a standby (not in recovery)")
        receive, replay = standby.execute(
            "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text"
        ).fetchone()
        timeline = current_timeline(standby)
        end = max(lsn(receive) or 0, lsn(replay) or 0)
        new = ctx.target_named(ctx.inputs.new_primary, PostgresTarget)
        new_timeline, fork = new_timeline_fork(ctx, new, timeline)
        return Divergence(timeline, end, new_timeline, fork)

    def apply(self, ctx: Ctx) -> None:
        from drctl.providers.patroni.guard import refuse_unless_paused

        refuse_unless_paused(ctx, "repoint it")  # live, right before acting (DR006)
        inputs = ctx.inputs
        new_dsn = dsn_of(ctx, ctx.target_named(inputs.new_primary, PostgresTarget))
        # The divergence is read again, not taken from check: in between the standby may
        # have received more WAL (from an old primary not yet fenced, a gate waiting).
        # One session for that read, the name and the repoint: each connection costs
        # milliseconds on the failover's critical path.
        with connect(ctx.target, ctx, what="standby") as standby:
            divergence = self._divergence(ctx, standby)
            name = self._application_name(ctx, standby)
            ctx.record("application_name", name)
            ctx.output("application_name", name)
            ctx.output("fork_lsn", lsn_text(divergence.fork))
            if not divergence.diverged_bytes:
                version = self._repoint(ctx, standby, new_dsn, name, divergence)
        if divergence.diverged_bytes:
            if not inputs.may_discard:
                raise StepError(
                    f"refusing to follow without a rewind: {divergence.describe()}; "
                    "set accept_discard: true to discard them with pg_rewind"
                )
            node = local_node(ctx.target, "follow (rewind)", ctx)
            ctx.record("rewound", {"rewound": True, "why": divergence.describe()})
            ctx.output("rewound", True)
            ctx.log(f"rewinding: {divergence.describe()}")
            rewind(ctx, node, new_dsn, name, accept_discard=True)
            return
        if version < 130000:  # primary_conninfo takes a restart before PostgreSQL 13
            node = local_node(ctx.target, "follow (restart)", ctx)
            pg_ctl(ctx, node, "restart")
        ctx.log(f"following {inputs.new_primary} in place: {divergence.describe()}")

    def _repoint(self, ctx: Ctx, conn: Any, new_dsn: str, name: str, divergence: Divergence) -> int:
        """Set the standby's primary_conninfo (on ``conn``) and reload; its server version."""
        ctx.record("rewound", {"rewound": False, "why": divergence.describe()})
        ctx.output("rewound", False)
        ctx.output("discarded_bytes", 0)
        _, conninfo = _libpq_env(new_dsn)
        from psycopg.conninfo import make_conninfo

        conninfo = make_conninfo(conninfo, application_name=name)
        conn.execute(f"ALTER SYSTEM SET primary_conninfo = {_literal(conninfo)}")
        if scalar(conn, "SHOW primary_slot_name"):
            ctx.log("primary_slot_name reset: the old primary's slot is not on the new one")
            conn.execute("ALTER SYSTEM RESET primary_slot_name")
        version = int(scalar(conn, "SHOW server_version_num"))
        if version >= 130000:
            conn.execute("SELECT pg_reload_conf()")
        return version

    def _application_name(self, ctx: Ctx, standby: Any = None) -> str:
        """The name to stream under, asking the standby (``standby``, or a new session)
        only when neither the inputs, the journal nor the target's name give one."""
        if ctx.inputs.application_name:
            return ctx.inputs.application_name
        # The target's name first: what the runbook calls the node is what monitoring
        # keys on; the server's own settings only when the context has no target name.
        for known in (ctx.recorded.get("application_name"), ctx.target_name):
            if known:
                return str(known)
        if standby is None:
            with connect(ctx.target, ctx, what="standby", read_only=True) as conn:
                return self._application_name(ctx, conn)
        from psycopg.conninfo import conninfo_to_dict

        current = str(scalar(standby, "SHOW primary_conninfo") or "")
        cluster = str(scalar(standby, "SHOW cluster_name") or "")
        named = conninfo_to_dict(current).get("application_name") if current else None
        for candidate in (named, cluster):
            if candidate:
                return str(candidate)
        raise StepError(
            "the standby has no application_name in primary_conninfo and no cluster_name: "
            "set application_name so the new primary and its monitoring know it"
        )

    def verify(self, ctx: Ctx) -> bool:
        inputs = ctx.inputs
        new = ctx.target_named(inputs.new_primary, PostgresTarget)
        name = str(ctx.recorded.get("application_name") or self._application_name(ctx))

        def streams(conn: Any) -> bool:
            row = conn.execute("SELECT status, received_tli FROM pg_stat_wal_receiver").fetchone()
            return row is not None and row[0] == "streaming" and int(row[1] or 0) >= timeline

        def lists(conn: Any) -> bool:
            return bool(
                scalar(
                    conn,
                    "SELECT count(*) FROM pg_stat_replication "
                    "WHERE application_name = %s AND state = 'streaming'",
                    (name,),
                )
            )

        timeline = 0  # the new primary's, read once: a primary's timeline does not move

        def streaming() -> bool | None:
            nonlocal timeline
            if not timeline:
                timeline = held.ask(new, "new primary", current_timeline)
            # The standby first: until its receiver streams there is nothing to ask the
            # new primary, which lists it only once it streams.
            if held.ask(ctx.target, "standby", streams) and held.ask(new, "new primary", lists):
                return True
            return None

        held = _Held(ctx)
        try:
            within = min(inputs.wait_seconds, max(0.0, ctx.remaining() - 0.5))
            started, error = ctx.monotonic(), None
            for every, span in CADENCE:
                left = within - (ctx.monotonic() - started)
                if left < every:
                    break
                polled = ctx.poll(
                    streaming, every=every, within=min(span, left), retry_on=(Unreachable,)
                )
                if polled.done:
                    return True
                error = polled.error or error
        finally:
            held.close()
        if error is not None:
            waited = ctx.monotonic() - started
            ctx.log(f"not streaming after {waited:.1f}s: {error.message}")
        return False


#: How verify polls for streaming: (every, for how long) — fine at first, when the
#: reloaded standby's WAL receiver connects within milliseconds, coarser after; the
#: last stage runs to the end of wait_seconds.
CADENCE: tuple[tuple[float, float], ...] = ((0.01, 0.3), (0.05, 2.0), (0.25, 3600.0))


_R = TypeVar("_R")


class _Held:
    """One connection per server, kept across a verify's polls; dropped when it fails.

    Safe to reuse: each query runs in its own autocommit transaction, so the backend
    activity snapshot behind pg_stat_replication is taken afresh, and
    pg_stat_wal_receiver reads the receiver's shared memory on every query: a kept
    connection answers as fresh as a new one. A connection
    that breaks (a server restarting) is closed and the poll counts as "not yet".
    """

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.held: dict[str, tuple[ExitStack, Any]] = {}

    def ask(self, server: PostgresTarget, what: str, query: Callable[[Any], _R]) -> _R:
        import psycopg

        if what not in self.held:
            stack = ExitStack()
            conn = stack.enter_context(
                connect(server, self.ctx, what=what, read_only=True, cap=3.0)
            )
            self.held[what] = (stack, conn)
        try:
            return query(self.held[what][1])
        except psycopg.Error as exc:
            self.drop(what)
            if isinstance(exc, psycopg.OperationalError):
                raise Unreachable(f"{what}: {first_line(exc)}") from exc
            raise StepError(f"{what}: {first_line(exc)}") from exc

    def drop(self, what: str) -> None:
        stack, _ = self.held.pop(what)
        with suppress(Exception):  # closing a broken connection: nothing left to tell
            stack.close()

    def close(self) -> None:
        for what in list(self.held):
            self.drop(what)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
