"""``postgres.fence``: make the old primary stop accepting writes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.session import (
    connect,
    local_node,
    pg_ctl,
    pg_ctl_status,
    scalar,
    writable,
)
from drctl.steps.base import Role, StepInputs

Mode = Literal["read_only", "stop", "read_only_then_stop"]


class FenceInputs(StepInputs):
    mode: Mode = Field(
        default="read_only", description="read_only (advisory), stop (hard), or both in turn."
    )
    terminate_sessions: bool = Field(
        default=True,
        description="After the read-only switch, end client sessions opened before it.",
    )


Ctx = PostgresContext[FenceInputs]


class Fence(PostgresStep[FenceInputs]):
    """Stop the old primary from accepting writes: read-only, stopped, or read-only then stopped.

    ``read_only`` sets ``default_transaction_read_only`` with ALTER SYSTEM, reloads, and
    ends existing client sessions. It is advisory: any session can still run
    ``SET default_transaction_read_only = off`` and write. ``stop`` is the hard fence:
    a fast shutdown with ``pg_ctl`` on the target's ``data_dir``. ``verify`` proves the
    fence: a write in a fresh session is refused, or the server does not answer.
    ``undo`` lifts the fence (starts a stopped server, resets the read-only setting).
    """

    name = "postgres.fence"
    Inputs = FenceInputs
    roles = frozenset({Role.FENCE, Role.MUTATING})

    def describe(self, inputs: FenceInputs, target: str | None) -> str:
        return {
            "read_only": f"fence {target}: read-only (advisory: a session can override it)",
            "stop": f"fence {target}: stop the server (fast shutdown)",
            "read_only_then_stop": f"fence {target}: read-only, then stop the server",
        }[inputs.mode]

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        target = ctx.target
        if inputs.mode != "read_only":
            local_node(target, "fence (stop)", ctx)
        try:
            with connect(target.dsn, ctx, what="old primary", read_only=True, cap=5.0) as conn:
                if scalar(conn, "SELECT pg_is_in_recovery()"):
                    return "the server is a standby: already takes no writes"
                return self.describe(inputs, ctx.step_id)
        except Unreachable as exc:
            return f"the server does not answer ({exc.message}): nothing to fence there"

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        target = ctx.target
        dsn = target.dsn
        if inputs.mode in ("read_only", "read_only_then_stop"):
            try:
                self._read_only(ctx, dsn, inputs.terminate_sessions)
            except Unreachable as exc:
                if inputs.mode == "read_only":
                    raise
                ctx.log(f"server does not answer ({exc.message}); going on to stop it")
        if inputs.mode in ("stop", "read_only_then_stop"):
            node = local_node(target, "fence (stop)", ctx)
            ctx.record("stopped", True)
            if pg_ctl_status(ctx, node):
                pg_ctl(ctx, node, "stop")
                ctx.log("server stopped")
            else:
                ctx.log("server was not running")
        ctx.output("fenced", True)
        ctx.output("mode", inputs.mode)

    @staticmethod
    def _read_only(ctx: Ctx, dsn: str, terminate: bool) -> None:
        ctx.record("read_only", True)
        with connect(dsn, ctx, what="old primary") as conn:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous; wait until fresh sessions see it.
        seen = ctx.poll(
            lambda: True if writable(dsn, ctx, "old primary") is not True else None,
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

    def verify(self, ctx: Ctx) -> bool:
        return writable(ctx.target.dsn, ctx, "old primary") is not True

    def undo(self, ctx: Ctx) -> None:
        target = ctx.target
        if ctx.recorded.get("stopped"):
            node = local_node(target, "fence undo", ctx)
            if not pg_ctl_status(ctx, node):
                pg_ctl(ctx, node, "start")
        with connect(target.dsn, ctx, what="old primary") as conn:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")
