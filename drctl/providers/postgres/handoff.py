"""The handoff proof: where the old primary stopped, and what a candidate holds of it.

Counted as Vitess counts it: WAL a candidate *received* and has not replayed is not
lost (the promotion replays it first); WAL it never received is. So every figure a
promote refuses on, and every data-loss acknowledgement, is the not-received number;
the received-not-replayed number is said beside it, never added to it.

Where the old primary stopped (the *mark*) comes, best first, from this run's fence
that took effect (its journaled ``final_lsn``), from the old primary itself when it
still answers as a primary, else from the furthest position any step of this run saw
of it (``wal_seen``): then only a lower bound — "RPO at least N bytes".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres.session import connect, lsn, lsn_text
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import StepContext, StepFacts

#: The output (``{target name: LSN}``) a step publishes for the furthest WAL position
#: it saw each server hold: a primary's write position, a standby's received one.
WAL_SEEN = "wal_seen"
CHOOSE_TYPE = "postgres.choose_primary"


@dataclass(frozen=True)
class Mark:
    """The old primary's last WAL position, as far as this run knows it."""

    lsn: int
    #: Where it comes from, for the log and the refusal ("fence step fence final_lsn …").
    source: str
    #: True: where the old primary ended (a fence's final_lsn, or its own answer now);
    #: False: only the furthest any step saw, so the real end may be further.
    exact: bool


@dataclass(frozen=True)
class Position:
    """How far a standby has received and replayed WAL, and on which timeline."""

    received: int
    replayed: int
    timeline: int
    paused: bool


@dataclass(frozen=True)
class Ahead:
    """Another candidate known to have received more WAL than the one being promoted."""

    name: str
    received: int
    #: How it is known: "read now", or the step whose table said so.
    known_from: str


@dataclass(frozen=True)
class Handoff:
    """What the promote knows at the moment it decides."""

    mark: Mark | None
    position: Position
    ahead: Ahead | None

    @property
    def not_received(self) -> int | None:
        """WAL the old primary wrote and the candidate never received: what is lost."""
        return None if self.mark is None else max(0, self.mark.lsn - self.position.received)

    @property
    def unreplayed(self) -> int:
        """WAL received and not yet replayed (up to the mark): not lost, promotion replays it."""
        top = (
            self.position.received
            if self.mark is None
            else min(self.mark.lsn, self.position.received)
        )
        return max(0, top - self.position.replayed)

    @property
    def behind_ahead(self) -> int:
        """WAL another candidate received that this one did not."""
        return 0 if self.ahead is None else max(0, self.ahead.received - self.position.received)

    @property
    def loss_bytes(self) -> int:
        """The bytes promoting this candidate loses, as far as is known (a lower bound if inexact)."""
        return max(self.not_received or 0, self.behind_ahead)

    def as_record(self) -> dict[str, Any]:
        """The facts journaled before the promotion (and published as outputs)."""
        mark = self.mark
        return {
            "handoff_lsn": lsn_text(mark.lsn) if mark else None,
            "handoff_from": mark.source if mark else None,
            "handoff_exact": bool(mark and mark.exact),
            "received_lsn": lsn_text(self.position.received),
            "replayed_lsn": lsn_text(self.position.replayed),
            "not_received_bytes": self.not_received,
            "unreplayed_bytes": self.unreplayed,
            "ahead": None if self.ahead is None else self.ahead.name,
            "ahead_bytes": self.behind_ahead,
            "gap_bytes": self.loss_bytes,
            # Only a lower bound when the old primary's end is not known for certain.
            "rpo_at_least_bytes": self.loss_bytes if mark is not None and not mark.exact else None,
        }

    def figures(self) -> str:
        """Both numbers, the lost one first."""
        least = "at least " if self.mark is not None and not self.mark.exact else ""
        lost = "unknown" if self.not_received is None else f"{least}{self.not_received}"
        return (
            f"{lost} bytes not received (lost if promoted), {self.unreplayed} bytes received and "
            "not yet replayed (not lost: promotion replays them)"
        )


def read_position(conn: Any) -> Position:
    """A standby's position; a StepError if the server is not in recovery."""
    from drctl.providers.postgres.promote import TIMELINE, timeline_of

    # One statement: a promote polls this every 50 ms, each round trip on its way.
    recovery, receive, replay, paused, *where = conn.execute(
        "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, "
        "pg_last_wal_replay_lsn()::text, "
        f"pg_is_in_recovery() AND pg_get_wal_replay_pause_state() <> 'not paused', {TIMELINE}"
    ).fetchone()
    if not recovery:
        raise StepError("the server is not in recovery (not a standby, or promoted already)")
    replayed = lsn(replay) or 0
    # After a restart the receive position is where streaming restarted, behind replay.
    received = max(lsn(receive) or 0, replayed)
    return Position(received, replayed, timeline_of(conn, *where), bool(paused))


def fence_mark(ctx: StepContext[Any, Any], old_primary: str | None) -> Mark | None:
    """The furthest ``final_lsn`` a step of this run published for a server a proven fence holds.

    Only a fence this step waits for and that took effect counts (``ctx.fences()``); its
    fallback (a stop after a failed read-only switch) publishes under its own id, so the
    position is looked up by the fenced target, not by step id.
    """
    fenced = {
        f.target
        for f in ctx.fences()
        if f.status.proven and f.target and (old_primary is None or f.target == old_primary)
    }
    best: Mark | None = None
    for fact in ctx.facts():
        position = lsn(_text(fact.outputs.get("final_lsn")))
        if fact.target in fenced and position is not None and (best is None or position > best.lsn):
            source = _text(fact.outputs.get("final_lsn_from")) or "the fence"
            best = Mark(
                position,
                f"fence step {fact.step_id}'s final_lsn {lsn_text(position)} (from {source})",
                exact=True,
            )
    return best


def seen_mark(facts: Iterable[StepFacts], old_primary: str) -> Mark | None:
    """The furthest position any step of this run saw the old primary at: a lower bound."""
    best: Mark | None = None
    for fact in facts:
        seen = fact.outputs.get(WAL_SEEN)
        values = [seen.get(old_primary)] if isinstance(seen, Mapping) else []
        if fact.target == old_primary:
            values.append(fact.outputs.get("final_lsn"))
        for value in values:
            position = lsn(_text(value))
            if position is not None and (best is None or position > best.lsn):
                best = Mark(
                    position,
                    f"the furthest any step saw it: {lsn_text(position)} by step {fact.step_id}",
                    exact=False,
                )
    return best


def live_mark(name: str, position: int) -> Mark:
    """The old primary's own write position, read from it now (it answers as a primary)."""
    return Mark(position, f"{name}'s own current position {lsn_text(position)}", exact=True)


def best_ahead(
    ctx: StepContext[Any, Any], others: Iterable[str], position: Position
) -> Ahead | None:
    """The candidate known to have received the most WAL beyond ``position``, if any.

    Known from this run's ``postgres.choose_primary`` tables that list this step's target
    (candidates of the same cluster), and from live reads of ``others`` (the promote's
    ``candidates``). Only candidates on the same timeline are comparable.
    """
    me = ctx.target_name
    found: list[Ahead] = []
    for fact in ctx.facts():
        table = fact.outputs.get("table")
        if fact.type != CHOOSE_TYPE or not isinstance(table, list):
            continue
        rows = [r for r in table if isinstance(r, Mapping)]
        if me is None or me not in {r.get("name") for r in rows}:
            continue
        for row in rows:
            received = lsn(_text(row.get("received_lsn")))
            if row.get("name") == me or received is None:
                continue
            if row.get("timeline") not in (None, position.timeline):
                continue
            found.append(Ahead(str(row.get("name")), received, f"step {fact.step_id}'s table"))
    for name in others:
        target = ctx.target_named(name, PostgresTarget)
        try:
            with connect(target.dsn, ctx, what=name, read_only=True, cap=3.0) as conn:
                theirs = read_position(conn)
        except Unreachable as exc:
            ctx.log(f"candidate {name} does not answer ({exc.message}): not compared")
            continue
        except StepError as exc:
            ctx.log(f"candidate {name} is not comparable: {exc.message}")
            continue
        if theirs.timeline == position.timeline:
            found.append(Ahead(name, theirs.received, "read now"))
    ahead = [a for a in found if a.received > position.received]
    return max(ahead, key=lambda a: a.received) if ahead else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
