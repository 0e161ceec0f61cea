"""A promote's preflight: what must hold before the first fence runs, checked read-only.

A fence is the point of no return: once the old primary takes no writes, a promote
that then refuses leaves the cluster with no writable primary at all. So before any
fence starts, the engine asks the promote (``StepType.preflight``) whether it would
refuse for a reason the fence cannot change: the candidate does not answer or is no
standby, it is on another timeline than the old primary, or it lags by more than the
promote's own ``max_lag_bytes`` and does not catch up within its ``catchup_seconds``.
Lag is WAL not received (what a promotion would lose), as everywhere in the handoff.
"""

from __future__ import annotations

from typing import Any

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres.handoff import Position, read_position
from drctl.providers.postgres.session import connect, lsn, scalar
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import StepContext

_BEFORE = "refusing before any fence ran (the old primary still takes writes)"


def old_primary_of(ctx: StepContext[Any, Any], named: str | None) -> str | None:
    """The old primary: the one named, else the first PostgreSQL server a fence on the path
    fences (its ``fences:``, else its own target; a control-plane fence's own target is
    an instance, not the server)."""
    if named:
        return named
    for fence in ctx.fences():
        name = fence.fences or fence.target
        if name and _is_postgres(ctx, name):
            return name
    return None


def _is_postgres(ctx: StepContext[Any, Any], name: str) -> bool:
    from drctl.runbook.targets import PostgresTarget

    try:
        return isinstance(ctx.target_named(name), PostgresTarget)
    except StepError:
        return False


def preflight(
    ctx: StepContext[Any, PostgresTarget],
    *,
    old_primary: str | None,
    max_lag_bytes: int,
    catchup_seconds: float,
    accept_data_loss: bool,
) -> str:
    """What was found; a StepError naming the precondition that fails."""
    name = ctx.target_name or "the candidate"
    primary = old_primary_of(ctx, old_primary)
    try:
        # One session to the candidate for all of it: this runs on the way to the fence.
        with connect(ctx.target.dsn, ctx, what=name, read_only=True, cap=5.0) as conn:
            try:
                mine = read_position(conn)
            except StepError as exc:
                raise StepError(f"{_BEFORE}: {name}: {exc.message}") from exc
            if primary is None:
                return f"{name} answers as a standby; no old primary to measure it against"
            source = ctx.target_named(primary, PostgresTarget)
            try:
                with connect(source.dsn, ctx, what=primary, read_only=True, cap=3.0) as old:
                    return _against(ctx, old, conn, mine, name, primary, max_lag_bytes,
                                    catchup_seconds, accept_data_loss)  # fmt: skip
            except Unreachable as exc:  # only ever the old primary's connect
                # Nothing is lost by going on: the handoff proof after the fence decides.
                return (
                    f"{name} answers as a standby; {primary} does not answer ({exc.message}), "
                    "so its lag is judged after the fence, against the fence's final position"
                )
    except Unreachable as exc:
        raise StepError(f"{_BEFORE}: {name} does not answer ({exc.message})") from exc


def _against(
    ctx: StepContext[Any, PostgresTarget],
    old: Any,
    conn: Any,
    mine: Position,
    name: str,
    primary: str,
    max_lag_bytes: int,
    catchup_seconds: float,
    accept_data_loss: bool,
) -> str:
    from drctl.providers.postgres.promote import TIMELINE, timeline_of

    # One statement for the old primary's state and its first flush position.
    recovery, *where, flush = old.execute(
        f"SELECT pg_is_in_recovery(), {TIMELINE}, "
        "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END"
    ).fetchone()
    if recovery:
        raise StepError(f"{_BEFORE}: the old primary {primary} is in recovery, not a primary")
    timeline = timeline_of(old, *where)
    if timeline != mine.timeline:
        raise StepError(
            f"{_BEFORE}: {name} is on timeline {mine.timeline} and the old primary {primary} on "
            f"{timeline}: one of them was promoted already"
        )
    last: list[tuple[int, Position]] = []
    first = [flush]

    def caught_up() -> int | None:
        # The primary first: WAL it flushed before the standby is asked is WAL the
        # standby can have, so a standby keeping up under load reads 0.
        text = first.pop() if first else scalar(old, "SELECT pg_current_wal_flush_lsn()::text")
        flushed = lsn(text) or 0
        position = read_position(conn)
        gap = max(0, flushed - position.received)
        last.append((gap, position))
        return gap if gap <= max_lag_bytes else None

    polled = ctx.poll(caught_up, every=0.1, within=catchup_seconds)
    gap, position = last[-1]
    unreplayed = max(0, position.received - position.replayed)
    figures = f"{gap} bytes not received, {unreplayed} received and not yet replayed (not lost)"
    if polled.done:
        return f"{name} on timeline {timeline} with {primary}, {figures}"
    if accept_data_loss:
        ctx.log(f"{name} lags {figures}; accept_data_loss is set, so the promote goes on")
        return f"{name} lags ({figures}): accept_data_loss"
    raise StepError(
        f"{_BEFORE}: {name} has not received {gap} bytes the old primary {primary} wrote "
        f"(the promote's limit is {max_lag_bytes}, waited {polled.waited:.1f}s; {unreplayed} "
        "more bytes are received and not yet replayed, which is not lost). Fix its "
        "replication, choose another candidate, or set accept_data_loss: true"
    )
