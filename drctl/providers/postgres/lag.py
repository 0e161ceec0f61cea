"""``postgres.replication_lag``: how far behind the standby is, in bytes and seconds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.session import Server, connect, lsn, scalar
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import Role, StepContext, StepInputs, published


class LagInputs(StepInputs):
    max_bytes: int | None = Field(
        default=None, ge=0, description="Fail above this many bytes of lag."
    )
    max_seconds: float | None = Field(
        default=None, ge=0, description="Fail above this replay delay."
    )
    primary: str | None = Field(
        default=None,
        description="Target name of the primary, asked for its current WAL position.",
    )
    primary_unreachable: Literal["fail", "warn"] = Field(
        default="fail",
        description=(
            "When the primary is named but does not answer (its WAL position unknown): fail, "
            "or warn and check the limits on what the standby alone shows (promoting blind)."
        ),
    )


class PrimaryPosition(StrEnum):
    """What is known of the primary's current WAL position."""

    KNOWN = "known"  # the primary answered with it
    UNKNOWN = "unknown"  # a primary was named and did not give it (no answer, or not primary)
    NOT_ASKED = "not_asked"  # no primary named: measured on the standby by design


@dataclass(frozen=True)
class Lag:
    """Lag figures, counted as Vitess counts them.

    With the primary's position known, ``bytes`` is the WAL the primary wrote that the
    standby has not *received* — what promoting it would lose. WAL received and not yet
    replayed is not lost (the promotion replays it): that is ``standby_bytes``, said
    beside it and never added. With the primary's position unknown (or not asked for),
    the standby's received-not-replayed figure is the only number there is, and
    ``bytes`` is that (the limits are then checked on it, as before).
    """

    bytes: int
    seconds: float
    receive_lsn: str | None
    replay_lsn: str | None
    primary_lsn: str | None
    primary_position: PrimaryPosition
    #: Why the primary's position is unknown (None when it is known or not asked for).
    unknown_because: str | None = None

    @property
    def primary_reachable(self) -> bool:
        return self.primary_position is PrimaryPosition.KNOWN

    def as_outputs(self) -> dict[str, object]:
        unknown = self.primary_position is PrimaryPosition.UNKNOWN
        return {
            # Not a number when the primary's position is unknown: 0 would read as "caught up".
            "lag_bytes": None if unknown else self.bytes, "standby_lag_bytes": self.standby_bytes,
            "lag_seconds": self.seconds, "receive_lsn": self.receive_lsn,
            "replay_lsn": self.replay_lsn, "primary_lsn": self.primary_lsn,
            "primary_position": str(self.primary_position),
            "primary_reachable": self.primary_reachable,
            "not_received_bytes": self.bytes if self.primary_reachable else None,
        }  # fmt: skip

    @property
    def standby_bytes(self) -> int:
        """WAL the standby received and has not replayed."""
        return max(0, (lsn(self.receive_lsn) or 0) - (lsn(self.replay_lsn) or 0))

    def unknown_message(self) -> str:
        """What an unknown primary position means for a promote (only when it is unknown)."""
        return (
            f"the primary's WAL position is unknown ({self.unknown_because}): the standby "
            f"replayed to {self.replay_lsn} with {self.standby_bytes} bytes received and not "
            "replayed, but WAL it never received cannot be counted, so the real lag is "
            "unknown and promoting it may lose writes the primary acknowledged"
        )


def measure(ctx: StepContext, standby_dsn: Server, primary_dsn: Server | None) -> Lag:
    """Measure from the standby (always) and from the primary (when it answers).

    The primary is asked first, for the WAL it has flushed (all a standby can have):
    WAL flushed before the standby is asked and not received by then is lag, so a
    standby keeping up under a steady load reads 0 rather than the WAL written between
    two queries.
    """
    primary_lsn: str | None = None
    because: str | None = None
    if primary_dsn is not None:
        try:
            with connect(primary_dsn, ctx, what="primary", read_only=True, cap=3.0) as conn:
                if scalar(conn, "SELECT pg_is_in_recovery()"):
                    because = "the server named as primary is in recovery"
                else:
                    primary_lsn = scalar(conn, "SELECT pg_current_wal_flush_lsn()::text")
        except Unreachable as exc:
            because = f"{exc.message}; it does not answer"
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
    seconds = round(float(seconds or 0), 3)
    if primary_dsn is None:
        return Lag(worst, seconds, receive, replay, None, PrimaryPosition.NOT_ASKED)
    if primary_lsn is None:
        return Lag(worst, seconds, receive, replay, None, PrimaryPosition.UNKNOWN, because)
    # Not received is lost; received and not replayed is not (Vitess's count).
    received = max(lsn(receive) or 0, lsn(replay) or 0)
    not_received = max(0, (lsn(primary_lsn) or 0) - received)
    return Lag(not_received, seconds, receive, replay, primary_lsn, PrimaryPosition.KNOWN)


Ctx = PostgresContext[LagInputs]


class ReplicationLag(PostgresStep[LagInputs]):
    """Measure the standby's replay lag in bytes and seconds; fail above the limits.

    Measured on the standby (received vs replayed WAL) always, and against the
    primary's current WAL position when a ``primary`` is named — the only way to see
    WAL the standby has not even received. Counted as Vitess counts it: with the
    primary named, ``lag_bytes`` (and ``max_bytes``) is WAL the standby has not
    received, what a promotion would lose; WAL received and not yet replayed is not
    lost and is published apart as ``standby_lag_bytes``. Publishes ``lag_bytes``,
    ``not_received_bytes``, ``standby_lag_bytes``, ``lag_seconds``, ``replay_lsn``,
    ``primary_position`` (``known``, ``unknown``, ``not_asked``) and
    ``primary_reachable`` and ``wal_seen`` (the primary's position, by target name:
    the lower bound a later promote counts from if the primary is gone) for later steps.

    A named primary that does not answer leaves its position ``unknown``: the lag is
    then not a number (``lag_bytes`` is null, never 0), and the step fails unless
    ``primary_unreachable: warn`` says to go on, with a warning, checking the limits on
    the standby's figure alone — what promoting blind would rest on.
    """

    name = "postgres.replication_lag"
    outputs = published(
        {
            "not_received_bytes": "WAL the standby has not received (what a promotion loses).",
            "wal_seen": "The primary's WAL position seen, by target name (a lower bound later).",
            "lag_bytes": "Worst lag in bytes (null when the primary's position is unknown).",
            "standby_lag_bytes": "WAL received and not replayed.",
            "lag_seconds": "Replay delay in seconds.",
            "receive_lsn": "The standby's last received WAL position.",
            "replay_lsn": "Its last replayed position.",
            "primary_lsn": "The primary's current position (null if not known).",
            "primary_position": "known, unknown or not_asked.",
            "primary_reachable": "Whether the primary answered.",
        }
    )
    Inputs = LagInputs
    roles = frozenset({Role.LAG_CHECK})

    def describe(self, inputs: LagInputs, target: str | None) -> str:
        limits = []
        if inputs.max_bytes is not None:
            limits.append(f"≤ {inputs.max_bytes} bytes")
        if inputs.max_seconds is not None:
            limits.append(f"≤ {inputs.max_seconds:g}s")
        against = f" against {inputs.primary}" if inputs.primary else ""
        if inputs.primary and inputs.primary_unreachable == "warn":
            against += " (warn only if it does not answer)"
        return f"measure replication lag of {target}{against}" + (
            f" ({', '.join(limits)})" if limits else ""
        )

    def lag_limit(self, inputs: LagInputs) -> int | None:
        return inputs.max_bytes

    def _measure(self, ctx: Ctx) -> Lag:
        inputs = ctx.inputs
        primary = ctx.target_named(inputs.primary, PostgresTarget) if inputs.primary else None
        return measure(ctx, ctx.target, primary)

    def check(self, ctx: Ctx) -> str | None:
        lag = self._measure(ctx)
        if lag.primary_position is PrimaryPosition.UNKNOWN:
            if ctx.inputs.primary_unreachable == "fail":
                raise StepError(_refusal(lag))
            return (
                f"measure an unknown lag ({lag.standby_bytes} bytes on the standby alone): "
                f"{lag.unknown_message()}"
            )
        return f"measure a lag of {lag.bytes} bytes, {lag.seconds:g}s"

    def verify(self, ctx: Ctx) -> bool:
        """The lag is within the limits now (what ``wait: until`` polls for).

        An unknown primary position is not within any limit unless ``warn`` is set.
        """
        inputs = ctx.inputs
        lag = self._measure(ctx)
        if lag.primary_position is PrimaryPosition.UNKNOWN and inputs.primary_unreachable == "fail":
            return False
        return (inputs.max_bytes is None or lag.bytes <= inputs.max_bytes) and (
            inputs.max_seconds is None or lag.seconds <= inputs.max_seconds
        )

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        lag = self._measure(ctx)
        for key, value in lag.as_outputs().items():
            ctx.output(key, value)
        if inputs.primary and lag.primary_lsn:
            ctx.output("wal_seen", {inputs.primary: lag.primary_lsn})
        if lag.primary_position is PrimaryPosition.UNKNOWN:
            if inputs.primary_unreachable == "fail":
                raise StepError(_refusal(lag))
            ctx.log(
                f"warning: {lag.unknown_message()}; primary_unreachable is warn, so the "
                "limits are checked on the standby's figure alone"
            )
        elif lag.primary_reachable:
            ctx.log(
                f"lag {lag.bytes} bytes not received, {lag.standby_bytes} received and not "
                f"yet replayed (not lost), {lag.seconds:g}s (measured on primary and standby)"
            )
        else:
            ctx.log(
                f"lag {lag.bytes} bytes received and not yet replayed, {lag.seconds:g}s "
                "(measured on standby only: WAL it never received cannot be seen)"
            )
        if inputs.max_bytes is not None and lag.bytes > inputs.max_bytes:
            what = "not received" if lag.primary_reachable else "received, not replayed"
            raise StepError(
                f"standby is {lag.bytes} bytes behind ({what}; limit {inputs.max_bytes})"
            )
        if inputs.max_seconds is not None and lag.seconds > inputs.max_seconds:
            raise StepError(
                f"standby replay is {lag.seconds:g}s behind (limit {inputs.max_seconds:g}s)"
            )


def _refusal(lag: Lag) -> str:
    return (
        f"{lag.unknown_message()}. Reach the primary, or set primary_unreachable: warn to "
        "accept promoting on the standby's figure alone"
    )
