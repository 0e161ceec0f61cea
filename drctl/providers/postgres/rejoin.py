"""``postgres.rejoin``: turn the old primary into a streaming standby of the new one."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.promote import current_timeline
from drctl.providers.postgres.session import (
    ServerNode,
    connect,
    local_node,
    node_shell,
    pg_ctl,
    pg_ctl_status,
    pg_tool,
    scalar,
)
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import Role, StepContext, StepInputs
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


Ctx = PostgresContext[RejoinInputs]


class Rejoin(PostgresStep[RejoinInputs]):
    """Rewind the old primary onto the new primary's timeline and start it as its standby.

    Steps: CHECKPOINT on the new primary and wait until its control file shows the new
    timeline (otherwise ``pg_rewind`` can say "no rewind required" and leave a silently
    diverged node); stop the old node; ``pg_rewind`` from the new primary; clear the
    read-only fence and any old ``primary_conninfo`` from postgresql.auto.conf (rewind
    copies it from the source); write ``standby.signal`` and a ``primary_conninfo``
    naming this node; start it with the target's ``start_options``. ``verify``: the
    node's WAL receiver is streaming and the new primary lists it in
    ``pg_stat_replication`` — ``pg_is_in_recovery()`` alone proves nothing.
    """

    name = "postgres.rejoin"
    Inputs = RejoinInputs
    roles = frozenset({Role.MUTATING})

    def describe(self, inputs: RejoinInputs, target: str | None) -> str:
        return f"rewind {target} and start it as a standby of {inputs.new_primary}"

    def _app_name(self, ctx: Ctx) -> str:
        return f"drctl_{re.sub(r'[^A-Za-z0-9_]', '_', ctx.step_id)}"

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        local_node(ctx.target, "rejoin", ctx)
        new = ctx.target_named(inputs.new_primary, PostgresTarget)
        with connect(new.dsn, ctx, what="new primary", read_only=True) as conn:
            if scalar(conn, "SELECT pg_is_in_recovery()"):
                if ctx.dry_run:  # the promote before this step has not run in a dry run
                    return (
                        f"{self.describe(inputs, ctx.step_id)} (once {inputs.new_primary} is "
                        "promoted: it is still in recovery now)"
                    )
                raise StepError(f"{inputs.new_primary} is still in recovery: promote it first")
        return self.describe(inputs, ctx.step_id)

    def apply(self, ctx: Ctx) -> None:
        from drctl.providers.patroni.guard import refuse_unless_paused

        refuse_unless_paused(ctx, "rejoin it")  # live, right before acting (DR006)
        inputs = ctx.inputs
        node = local_node(ctx.target, "rejoin", ctx)
        new_dsn = ctx.target_named(inputs.new_primary, PostgresTarget).dsn
        rewind(ctx, node, new_dsn, self._app_name(ctx))

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
        node_dsn = ctx.target.dsn
        new_dsn = ctx.target_named(inputs.new_primary, PostgresTarget).dsn

        def streaming() -> bool | None:
            with connect(node_dsn, ctx, what="rejoined node", read_only=True, cap=3.0) as conn:
                receiving = scalar(conn, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
            with connect(new_dsn, ctx, what="new primary", read_only=True, cap=3.0) as conn:
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
    ctx: StepContext[Any, Any], node: ServerNode, new_dsn: str, application_name: str
) -> None:
    """Rewind ``node`` onto the new primary at ``new_dsn`` and start it as its standby.

    The one rewind (``postgres.rejoin``, ``postgres.follow`` with ``rewind: true``).
    """
    Rejoin._checkpoint(ctx, new_dsn)
    if pg_ctl_status(ctx, node):
        pg_ctl(ctx, node, "stop")
    env, conninfo = _libpq_env(new_dsn)
    done = pg_tool(
        ctx, node, "pg_rewind", "-D", node.data_dir, f"--source-server={conninfo}", env=env
    )
    if done.exit_code != 0:
        raise StepError(f"pg_rewind failed (exit {done.exit_code}): {last_line(done.output)}")
    Rejoin._configure(ctx, node, f"{conninfo} application_name={application_name}")
    pg_ctl(ctx, node, "start")


def _libpq_env(dsn: str) -> tuple[dict[str, str], str]:
    """Split a DSN into a password-free conninfo and PGPASSWORD, so no secret is on a command line."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    password = params.pop("password", None)
    params.pop("options", None)
    env = {"PGPASSWORD": password} if password else {}
    return env, make_conninfo(**params)
