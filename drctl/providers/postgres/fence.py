"""``postgres.fence``: make the old primary stop accepting writes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drctl.errors import StepError
from drctl.providers.postgres.session import (
    ServerUnreachable,
    connect,
    import_client,
    local_node,
    pg_ctl,
    pg_ctl_status,
    scalar,
    writable,
)
from drctl.steps.base import Role, StepContext, StepInputs, StepType

Mode = Literal["read_only", "stop", "read_only_then_stop"]


class FenceInputs(StepInputs):
    mode: Mode = Field(
        default="read_only", description="read_only (advisory), stop (hard), or both in turn."
    )
    terminate_sessions: bool = Field(
        default=True,
        description="After the read-only switch, end client sessions opened before it.",
    )


class Fence(StepType):
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
    target_types = frozenset({"postgres"})
    target_required = True

    def warm_up(self) -> None:
        import_client()

    def describe(self, inputs: StepInputs, target: str | None) -> str:
        assert isinstance(inputs, FenceInputs)
        return {
            "read_only": f"fence {target}: read-only (advisory: a session can override it)",
            "stop": f"fence {target}: stop the server (fast shutdown)",
            "read_only_then_stop": f"fence {target}: read-only, then stop the server",
        }[inputs.mode]

    def check(self, ctx: StepContext) -> str | None:
        inputs = ctx.inputs
        assert isinstance(inputs, FenceInputs)
        target = ctx.target or {}
        if inputs.mode != "read_only":
            local_node(target, "fence (stop)", ctx)
        try:
            with connect(
                str(target["dsn"]), ctx, what="old primary", read_only=True, cap=5.0
            ) as conn:
                if scalar(conn, "SELECT pg_is_in_recovery()"):
                    return "the server is a standby: already takes no writes"
                return self.describe(inputs, ctx.step_id)
        except ServerUnreachable:
            return "the server does not answer: nothing to fence there"

    def apply(self, ctx: StepContext) -> None:
        inputs = ctx.inputs
        assert isinstance(inputs, FenceInputs)
        target = ctx.target or {}
        dsn = str(target["dsn"])
        if inputs.mode in ("read_only", "read_only_then_stop"):
            try:
                self._read_only(ctx, dsn, inputs.terminate_sessions)
            except ServerUnreachable:
                if inputs.mode == "read_only":
                    raise
                ctx.log("server does not answer; going on to stop it")
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
    def _read_only(ctx: StepContext, dsn: str, terminate: bool) -> None:
        ctx.record("read_only", True)
        with connect(dsn, ctx, what="old primary") as conn:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous; wait until fresh sessions see it.
        for _ in range(50):
            if writable(dsn, ctx, "old primary") is not True:
                break
            ctx.sleep(0.1)
        else:
            raise StepError("the read-only setting did not take effect after a reload")
        if terminate:
            with connect(dsn, ctx, what="old primary") as conn:
                ended = scalar(
                    conn,
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
            ctx.log(f"read-only; ended {ended} client session(s)")
            ctx.output("sessions_ended", ended)

    def verify(self, ctx: StepContext) -> bool:
        target = ctx.target or {}
        return writable(str(target["dsn"]), ctx, "old primary") is not True

    def undo(self, ctx: StepContext) -> None:
        target = ctx.target or {}
        if ctx.recorded.get("stopped"):
            node = local_node(target, "fence undo", ctx)
            if not pg_ctl_status(ctx, node):
                pg_ctl(ctx, node, "start")
        with connect(str(target["dsn"]), ctx, what="old primary") as conn:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")
