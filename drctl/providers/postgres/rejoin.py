"""``postgres.rejoin``: turn the old primary into a streaming standby of the new one."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.discard import DiscardedWal, measure_discard, new_timeline_fork
from drctl.providers.postgres.promote import current_timeline
from drctl.providers.postgres.session import (
    ServerNode,
    connect,
    dsn_of,
    local_node,
    lsn,
    lsn_text,
    node_shell,
    pg_ctl,
    pg_ctl_status,
    pg_tool,
    scalar,
)
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import Role, StepContext, StepInputs, published
from drctl.steps.process import last_line

# Run as the server's OS user, where the server lives (locally or over SSH): rewind
# copied postgresql.auto.conf from the new primary, so drop its read-only fence and any
# primary_conninfo it carries, then add ours and the standby.signal.
_CONFIGURE = r"""set -e
cd "$DRCTL_DATA"
touch postgresql.auto.conf
grep -Eiv '^[[:space:]]*(primary_conninfo|default_transaction_read_only|primary_slot_name)[[:space:]]*=' \
    postgresql.auto.conf > postgresql.auto.conf.drctl || true
printf '%s\n' "$DRCTL_CONNINFO" >> postgresql.auto.conf.drctl
mv postgresql.auto.conf.drctl postgresql.auto.conf
touch standby.signal
"""


class RejoinInputs(StepInputs):
    new_primary: str = Field(description="Target name of the new primary to follow.")
    wait_seconds: float = Field(
        default=60.0, ge=1, le=3600, description="How long to wait for streaming."
    )
    application_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description=(
            "The node's application_name towards the new primary (what monitoring and "
            "synchronous_standby_names expect); default: the node's target name."
        ),
    )
    accept_discard: bool = Field(
        default=False,
        description=(
            "Rewind even when the node holds committed transactions the new primary never "
            "had (its WAL past the fork), discarding them; the range is journaled either way."
        ),
    )


Ctx = PostgresContext[RejoinInputs]


class Rejoin(PostgresStep[RejoinInputs]):
    """Rewind the old primary onto the new primary's timeline and start it as its standby.

    Steps: CHECKPOINT on the new primary and wait until its control file shows the new
    timeline (otherwise ``pg_rewind`` can say "no rewind required" and leave a silently
    diverged node); stop the old node (one that crashed is first recovered in single-user
    mode, as pg_rewind would); measure what the rewind would discard: the node's
    WAL from where the new primary's timeline history says its timeline forked to the
    end of the node's WAL (``pg_waldump``), and the transactions in it that changed a
    user table and committed. A node whose discarded range holds one (a write the new
    primary never had; housekeeping such as checkpoints or an autovacuum's ANALYZE does
    not count) is refused, left stopped with its WAL intact, unless ``accept_discard: true``.
    The range is journaled before the rewind and published (``discarded_bytes``,
    ``discarded_from``, ``discarded_to``, ``discarded_commits``; 0 bytes when nothing is
    discarded) and said in the step's outcome line. Then ``pg_rewind`` from the new primary; clear the
    read-only fence and any old ``primary_conninfo`` from postgresql.auto.conf (rewind
    copies it from the source); write ``standby.signal`` and a ``primary_conninfo``
    naming this node (``application_name``: default its target name); start it with
    the target's ``start_options``. ``verify``: the
    node's WAL receiver is streaming and the new primary lists it in
    ``pg_stat_replication`` — ``pg_is_in_recovery()`` alone proves nothing.
    """

    name = "postgres.rejoin"
    outputs = published(
        {
            "discarded_bytes": "WAL the rewind discarded (0 when nothing was).",
            "discarded_from": "Start of the discarded WAL.",
            "discarded_to": "End of the discarded WAL.",
            "discarded_commits": "Committed write transactions in the discarded WAL.",
        }
    )
    Inputs = RejoinInputs
    wait_fields = ("wait_seconds",)
    roles = frozenset({Role.MUTATING})

    def describe(self, inputs: RejoinInputs, target: str | None) -> str:
        return f"rewind {target} and start it as a standby of {inputs.new_primary}"

    def _app_name(self, ctx: Ctx) -> str:
        """The name monitoring knows the node by: given, else its target name.

        Never the step id: monitoring keyed on application_name would lose the node.
        """
        if ctx.inputs.application_name:
            return ctx.inputs.application_name
        if ctx.target_name:
            return re.sub(r"[^A-Za-z0-9_.-]", "_", ctx.target_name)
        return f"drctl_{re.sub(r'[^A-Za-z0-9_]', '_', ctx.step_id)}"

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        local_node(ctx.target, "rejoin", ctx)
        new = ctx.target_named(inputs.new_primary, PostgresTarget)
        with connect(new, ctx, what="new primary", read_only=True) as conn:
            if scalar(conn, "SELECT pg_is_in_recovery()"):
                if ctx.dry_run:  # the promote before this step has not run in a dry run
                    return (
                        f"rejoin it once {inputs.new_primary} is promoted (it is still in "
                        "recovery now)"
                    )
                raise StepError(f"{inputs.new_primary} is still in recovery: promote it first")
        # Nothing more to say than the plan's description (which names the target), but
        # in a dry run, what the rewind would discard as far as the running node shows it.
        preview = self._preview(ctx, new.dsn)
        return f"{self.describe(inputs, ctx.step_id)}{preview}" if preview else None

    def _preview(self, ctx: Ctx, new_dsn: str) -> str:
        """What the rewind would discard, as far as the running node shows it ("" if it cannot).

        Only a preview: the exact range and its commits are read from the stopped node's
        WAL in ``apply``. A fenced node that turns drctl's session away shows nothing, and a
        live run (which measures exactly a moment later) does not ask.
        """
        if not ctx.dry_run:
            return ""
        try:
            with connect(ctx.target.dsn, ctx, what="old primary", read_only=True, cap=3.0) as conn:
                if scalar(conn, "SELECT pg_is_in_recovery()"):
                    return ""
                end = lsn(str(scalar(conn, "SELECT pg_current_wal_lsn()::text")))
                timeline = current_timeline(conn)
            _, fork = new_timeline_fork(ctx, new_dsn, timeline)
        except StepError:
            return ""
        if fork is None or end is None or end <= fork:
            return "; its WAL ends before the new timeline's fork: nothing to discard so far"
        ack = "" if ctx.inputs.accept_discard else "; refused if they hold writes (accept_discard)"
        return (
            f"; it holds about {end - fork} bytes of WAL past the fork at {lsn_text(fork)} "
            f"(exact range and commits read once it is stopped){ack}"
        )

    def apply(self, ctx: Ctx) -> None:
        from drctl.providers.patroni.guard import refuse_unless_paused

        refuse_unless_paused(ctx, "rejoin it")  # live, right before acting (DR006)
        inputs = ctx.inputs
        node = local_node(ctx.target, "rejoin", ctx)
        new_dsn = dsn_of(ctx, ctx.target_named(inputs.new_primary, PostgresTarget))
        rewind(ctx, node, new_dsn, self._app_name(ctx), accept_discard=inputs.accept_discard)

    @staticmethod
    def _checkpoint(ctx: StepContext[Any, Any], dsn: str) -> None:
        with connect(dsn, ctx, what="new primary") as conn:
            if scalar(conn, "SELECT pg_is_in_recovery()"):
                raise StepError("the new primary is still in recovery")
            timeline = current_timeline(conn)
            conn.execute("CHECKPOINT")
            shown = ctx.poll(
                lambda: (
                    True
                    if int(scalar(conn, "SELECT timeline_id FROM pg_control_checkpoint()"))
                    >= timeline
                    else None
                ),
                every=0.1,
                within=10.0,
            )
        if not shown.done:
            raise StepError(
                f"the new primary's control file did not show timeline {timeline} "
                f"within {shown.waited:.0f}s"
            )

    @staticmethod
    def _configure(ctx: StepContext[Any, Any], node: ServerNode, conninfo: str) -> None:
        """Clear old fence and primary settings, point the node at the new primary."""
        escaped = conninfo.replace("'", "''")
        done = node_shell(ctx, node, _CONFIGURE, env={
            "DRCTL_DATA": node.data_dir, "DRCTL_CONNINFO": f"primary_conninfo = '{escaped}'",
        })  # fmt: skip
        if done.exit_code != 0:
            raise StepError(f"cannot write the standby configuration: {last_line(done.output)}")

    def verify(self, ctx: Ctx) -> bool:
        inputs = ctx.inputs
        node = ctx.target
        new = ctx.target_named(inputs.new_primary, PostgresTarget)

        def streaming() -> bool | None:
            with connect(node, ctx, what="rejoined node", read_only=True, cap=3.0) as conn:
                receiving = scalar(conn, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
            with connect(new, ctx, what="new primary", read_only=True, cap=3.0) as conn:
                listed = scalar(
                    conn,
                    "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'",
                    (self._app_name(ctx),),
                )
            return True if receiving and listed else None

        # Keep half a second of the step for saying why, rather than timing out mid-check.
        within = min(inputs.wait_seconds, max(0.0, ctx.remaining() - 0.5))
        polled = ctx.poll(streaming, every=0.25, within=within, retry_on=(Unreachable,))
        if not polled.done and polled.error is not None:
            ctx.log(f"not streaming after {polled.waited:.1f}s: {polled.error.message}")
        return polled.done


def rewind(
    ctx: StepContext[Any, Any],
    node: ServerNode,
    new_dsn: str,
    application_name: str,
    *,
    accept_discard: bool,
) -> DiscardedWal | None:
    """Rewind ``node`` onto the new primary at ``new_dsn`` and start it as its standby.

    The one rewind (``postgres.rejoin``, ``postgres.follow`` of a diverged standby).
    Before ``pg_rewind`` runs, what it would discard is measured on the stopped node,
    journaled and published; a range holding committed transactions is refused unless
    ``accept_discard``. Returns that range (None: the node is on the new timeline already).
    """
    Rejoin._checkpoint(ctx, new_dsn)
    if pg_ctl_status(ctx, node):
        pg_ctl(ctx, node, "stop")
    discard = measure_discard(ctx, node, new_dsn)
    if discard is None:
        ctx.output("discarded_bytes", 0)
        ctx.output("discarded_commits", 0)
        ctx.log("the node is on the new primary's timeline already: nothing to discard")
    else:
        discard.publish(ctx)
        ctx.log(f"a rewind discards {discard.describe()}")
        if discard.holds_writes and not accept_discard:
            raise StepError(
                f"refusing to rewind: it would discard {discard.describe()}; the node is "
                "left stopped with its WAL intact. Set accept_discard: true to discard them"
            )
    env, conninfo = _libpq_env(new_dsn)
    done = pg_tool(
        ctx, node, "pg_rewind", "-D", node.data_dir, f"--source-server={conninfo}", env=env
    )
    if done.exit_code != 0:
        raise StepError(f"pg_rewind failed (exit {done.exit_code}): {last_line(done.output)}")
    Rejoin._configure(ctx, node, f"{conninfo} application_name={application_name}")
    pg_ctl(ctx, node, "start")
    return discard


def _libpq_env(dsn: str) -> tuple[dict[str, str], str]:
    """Split a DSN into a password-free conninfo and PGPASSWORD, so no secret is on a command line."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    password = params.pop("password", None)
    params.pop("options", None)
    env = {"PGPASSWORD": password} if password else {}
    return env, make_conninfo(**params)
