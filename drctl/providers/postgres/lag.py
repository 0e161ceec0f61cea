"""``postgres.replication_lag``: how far behind the standby is, in bytes and seconds."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.session import connect, lsn, scalar
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import Role, StepContext, StepInputs


class LagInputs(StepInputs):
    max_bytes: int | None = Field(
        default=None, ge=0, description="Fail above this many bytes of lag."
    )
    max_seconds: float | None = Field(
        default=None, ge=0, description="Fail above this replay delay."
    )
    primary: str | None = Field(
        default=None,
        description="Target name of the primary, asked for its current WAL position when reachable.",
    )


@dataclass(frozen=True)
class Lag:
    """Lag figures; ``bytes`` is the worst of what the standby and the primary say."""

    bytes: int
    seconds: float
    receive_lsn: str | None
    replay_lsn: str | None
    primary_lsn: str | None
    primary_reachable: bool

    def as_outputs(self) -> dict[str, object]:
        return {
            "lag_bytes": self.bytes, "lag_seconds": self.seconds, "receive_lsn": self.receive_lsn,
            "replay_lsn": self.replay_lsn, "primary_lsn": self.primary_lsn,
            "primary_reachable": self.primary_reachable,
        }  # fmt: skip


def measure(ctx: StepContext, standby_dsn: str, primary_dsn: str | None) -> Lag:
    """Measure from the standby (always) and from the primary (when it answers)."""
    with connect(standby_dsn, ctx, what="standby", read_only=True) as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, "
            # Replayed all it received (after a restart or a rejoin the receive position is
            # the streaming start, behind replay): no delay, however old the last transaction.
            "CASE WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 "
            "ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END"
        ).fetchone()
    in_recovery, receive, replay, seconds = row
    if not in_recovery:
        raise StepError(
            "standby: the server is not in recovery (not a standby, or already promoted)"
        )
    worst = max(0, (lsn(receive) or 0) - (lsn(replay) or 0))
    primary_lsn = None
    reachable = False
    if primary_dsn is not None:
        try:
            with connect(primary_dsn, ctx, what="primary", read_only=True, cap=3.0) as conn:
                if not scalar(conn, "SELECT pg_is_in_recovery()"):
                    primary_lsn = scalar(conn, "SELECT pg_current_wal_lsn()::text")
                    reachable = True
        except Unreachable as exc:
            # Measured on the standby alone then; the outputs say so, the log says why.
            ctx.log(f"measuring on the standby only: {exc.message}")
            reachable = False
        if primary_lsn is not None:
            worst = max(worst, (lsn(primary_lsn) or 0) - (lsn(replay) or 0))
    return Lag(worst, round(float(seconds or 0), 3), receive, replay, primary_lsn, reachable)


Ctx = PostgresContext[LagInputs]


class ReplicationLag(PostgresStep[LagInputs]):
    """Measure the standby's replay lag in bytes and seconds; fail above the limits.

    Measured on the standby (received vs replayed WAL) always, and against the
    primary's current WAL position when the primary answers — the only way to see
    WAL the standby has not even received. Publishes ``lag_bytes``, ``lag_seconds``,
    ``replay_lsn`` and ``primary_reachable`` for later steps.
    """

    name = "postgres.replication_lag"
    Inputs = LagInputs
    roles = frozenset({Role.LAG_CHECK})

    def describe(self, inputs: LagInputs, target: str | None) -> str:
        limits = []
        if inputs.max_bytes is not None:
            limits.append(f"≤ {inputs.max_bytes} bytes")
        if inputs.max_seconds is not None:
            limits.append(f"≤ {inputs.max_seconds:g}s")
        against = f" against {inputs.primary}" if inputs.primary else ""
        return f"measure replication lag of {target}{against}" + (
            f" ({', '.join(limits)})" if limits else ""
        )

    def _measure(self, ctx: Ctx) -> Lag:
        inputs = ctx.inputs
        primary = ctx.target_named(inputs.primary, PostgresTarget).dsn if inputs.primary else None
        return measure(ctx, ctx.target.dsn, primary)

    def check(self, ctx: Ctx) -> str | None:
        lag = self._measure(ctx)
        return f"lag is {lag.bytes} bytes, {lag.seconds:g}s"

    def verify(self, ctx: Ctx) -> bool:
        """The lag is within the limits now (what ``wait: until`` polls for)."""
        inputs = ctx.inputs
        lag = self._measure(ctx)
        return (inputs.max_bytes is None or lag.bytes <= inputs.max_bytes) and (
            inputs.max_seconds is None or lag.seconds <= inputs.max_seconds
        )

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        lag = self._measure(ctx)
        for key, value in lag.as_outputs().items():
            ctx.output(key, value)
        source = "primary and standby" if lag.primary_reachable else "standby only"
        ctx.log(f"lag {lag.bytes} bytes, {lag.seconds:g}s (measured on {source})")
        if inputs.max_bytes is not None and lag.bytes > inputs.max_bytes:
            raise StepError(f"standby is {lag.bytes} bytes behind (limit {inputs.max_bytes})")
        if inputs.max_seconds is not None and lag.seconds > inputs.max_seconds:
            raise StepError(
                f"standby replay is {lag.seconds:g}s behind (limit {inputs.max_seconds:g}s)"
            )
