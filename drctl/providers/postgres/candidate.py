"""A promotion candidate as the failover sees it, and the rule that ranks candidates.

Pure: the facts are gathered by ``postgres.choose_primary``; ranking them needs no I/O,
so it is the same in a run, a dry run and a unit test.

The rule: WAL a candidate has not *received* is lost if it is promoted; WAL received
but not yet replayed is not (the promotion replays it first). So candidates are ranked
by received position, as Vitess's EmergencyReparentShard does; at an equal position a
standby the old primary saw as synchronous wins, then the higher operator ``priority``,
then the one with less left to replay (a faster promotion), then the name.

A candidate Patroni manages also carries Patroni's view of it (``PatroniSays``): its
tags, whether it is the sync standby, its lag as Patroni counts it and the cluster's
failover settings. That view does not change the order; it says whether Patroni would
promote the winner (``objections``), which the step enforces unless acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from drctl.providers.postgres.session import lsn_text

RULE = (
    "the most WAL received wins (received but not replayed is not lost); at an equal "
    "position a synchronous standby, then the higher priority, then the most replayed"
)


class Verdict(StrEnum):
    CHOSEN = "chosen"
    #: Eligible, ranked below the winner.
    BEHIND = "behind"
    REJECTED = "rejected"


@dataclass(frozen=True)
class PatroniSays:
    """What Patroni said of one candidate (``GET /cluster``) and of its cluster (``GET /config``)."""

    #: The ``patroni`` target the candidate is ``managed_by``.
    cluster: str
    #: The member's name in Patroni (the candidate's application_name).
    member: str
    #: Why Patroni was not heard (no member answered); None when it answered.
    problem: str | None = None
    #: Whether Patroni's /cluster lists the member at all.
    listed: bool = False
    role: str | None = None
    state: str | None = None
    #: Bytes behind the leader as Patroni counts them; None when it does not know.
    lag: int | None = None
    nofailover: bool = False
    failover_priority: int | None = None
    sync_standby: bool = False
    maximum_lag_on_failover: int | None = None
    #: ``off``, ``on`` or ``quorum``.
    synchronous_mode: str | None = None
    synchronous_mode_strict: bool = False
    #: The members Patroni holds as sync (or quorum) standbys.
    sync_standbys: tuple[str, ...] = ()

    @property
    def objections(self) -> tuple[str, ...]:
        """Why Patroni would not promote this member itself; empty when it would (or was not heard)."""
        if self.problem is not None:
            return ()
        if not self.listed:
            return (f"Patroni ({self.cluster}) lists no member {self.member!r}",)
        out: list[str] = []
        if self.nofailover:
            why = (
                f"failover_priority {self.failover_priority}"
                if self.failover_priority is not None and self.failover_priority <= 0
                else "nofailover"
            )
            out.append(f"tagged {why} in Patroni")
        limit = self.maximum_lag_on_failover
        if limit is not None and self.lag is not None and self.lag > limit:
            out.append(f"lags {self.lag} bytes in Patroni, over maximum_lag_on_failover {limit}")
        if (
            self.synchronous_mode not in (None, "off")
            and self.sync_standbys
            and not self.sync_standby
        ):
            out.append(
                f"not a sync standby with synchronous_mode {self.synchronous_mode} "
                f"(Patroni's: {', '.join(self.sync_standbys)})"
            )
        return tuple(out)

    def summary(self) -> str:
        """Patroni's view in a few words, for the log row."""
        if self.problem is not None:
            return "patroni: no answer"
        if not self.listed:
            return "patroni: not a member"
        lag = "unknown" if self.lag is None else str(self.lag)
        parts = [f"patroni: {self.role or '?'} {self.state or '?'} lag {lag}"]
        if self.maximum_lag_on_failover is not None:
            parts.append(f"max {self.maximum_lag_on_failover}")
        if self.nofailover:
            parts.append("nofailover")
        if self.failover_priority is not None:
            parts.append(f"failover_priority {self.failover_priority}")
        if self.synchronous_mode not in (None, "off"):
            strict = " strict" if self.synchronous_mode_strict else ""
            parts.append(f"synchronous_mode {self.synchronous_mode}{strict}")
        return " ".join(parts)

    def as_json(self) -> dict[str, object]:
        return {
            "cluster": self.cluster, "member": self.member, "problem": self.problem,
            "listed": self.listed, "role": self.role, "state": self.state, "lag": self.lag,
            "nofailover": self.nofailover, "failover_priority": self.failover_priority,
            "sync_standby": self.sync_standby,
            "maximum_lag_on_failover": self.maximum_lag_on_failover,
            "synchronous_mode": self.synchronous_mode,
            "synchronous_mode_strict": self.synchronous_mode_strict,
            "sync_standbys": list(self.sync_standbys), "objections": list(self.objections),
        }  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """What is known of one candidate; positions are byte offsets (``lsn()``)."""

    name: str
    reachable: bool
    #: Why it did not answer, or why it is not a standby; None when it is one.
    problem: str | None
    received: int | None
    replayed: int | None
    timeline: int | None
    replay_paused: bool
    nofailover: bool
    priority: int
    #: As the old primary saw it (pg_stat_replication), when it answered and listed it.
    state: str | None = None
    sync_state: str | None = None
    sync_priority: int | None = None
    #: The old primary's view of how far it flushed, for a candidate that does not answer.
    primary_saw_flushed: int | None = None
    gap_bytes: int | None = None
    #: Patroni's view, when the candidate's target is ``managed_by`` a Patroni cluster.
    patroni: PatroniSays | None = None
    verdict: Verdict = Verdict.REJECTED
    reason: str = ""

    @property
    def synchronous(self) -> bool:
        return self.state == "streaming" and self.sync_state in ("sync", "quorum")

    @property
    def eligible(self) -> bool:
        return self.reachable and self.problem is None and not self.nofailover

    @property
    def patroni_objections(self) -> tuple[str, ...]:
        """Why Patroni would refuse to promote it; empty when unmanaged or Patroni agrees."""
        return self.patroni.objections if self.patroni is not None else ()

    @property
    def known_position(self) -> int | None:
        """The furthest it is known to have received, from itself or the old primary."""
        if self.received is not None:
            return self.received
        return self.primary_saw_flushed

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name, "reachable": self.reachable, "problem": self.problem,
            "received_lsn": lsn_text(self.received), "replayed_lsn": lsn_text(self.replayed),
            "timeline": self.timeline, "replay_paused": self.replay_paused,
            "state": self.state, "sync_state": self.sync_state,
            "sync_priority": self.sync_priority, "nofailover": self.nofailover,
            "priority": self.priority, "gap_bytes": self.gap_bytes,
            "patroni": self.patroni.as_json() if self.patroni is not None else None,
            "verdict": str(self.verdict), "reason": self.reason,
        }  # fmt: skip


@dataclass(frozen=True)
class Ranking:
    """Candidates ranked: the winner first, every other with its verdict and reason."""

    candidates: tuple[Candidate, ...]
    #: The furthest WAL position anyone is known to have: the old primary's, or a candidate's.
    known_end: int
    #: What stops the choice (unreachable most advanced, split timelines), unacknowledged.
    refusals: tuple[str, ...]
    #: The old primary's own WAL position, when it answered.
    primary_end: int | None = None

    @property
    def winner(self) -> Candidate | None:
        first = self.candidates[0] if self.candidates else None
        return first if first is not None and first.verdict is Verdict.CHOSEN else None


def _order(c: Candidate) -> tuple[int, int, int, int, str]:
    # Sorted ascending: negate what should come first.
    return (-(c.received or 0), 0 if c.synchronous else 1, -c.priority, -(c.replayed or 0), c.name)


def rank(
    candidates: list[Candidate],
    *,
    primary_end: int | None,
    accept_unreachable: bool,
    accept_timeline_split: bool,
) -> Ranking:
    """Rank ``candidates``; ``primary_end`` is the old primary's WAL position, if it answered."""
    positions = [p for c in candidates if (p := c.known_position) is not None]
    known_end = max([*positions, primary_end or 0])
    refusals: list[str] = []
    live = [c for c in candidates if c.eligible]
    timelines = sorted({c.timeline for c in live if c.timeline is not None})
    newest = timelines[-1] if timelines else None
    if len(timelines) > 1 and not accept_timeline_split:
        split = ", ".join(f"{c.name} on {c.timeline}" for c in live)
        refusals.append(
            f"candidates disagree on timeline ({split}): one of them was promoted already; "
            "set accept_timeline_split: true to choose among those on the newest"
        )
    ranked = sorted((c for c in live if c.timeline == newest or newest is None), key=_order)
    best = ranked[0] if ranked else None
    out: list[Candidate] = []
    for c in candidates:
        gap = None if c.known_position is None else known_end - c.known_position
        out.append(replace(c, gap_bytes=gap))
    by_name = {c.name: c for c in out}

    for c in out:
        if not c.reachable:
            seen = c.primary_saw_flushed
            lead = (best.received or 0) if best else 0
            if (seen is None or seen > lead) and not accept_unreachable:
                what = (
                    "its position is unknown (the old primary does not list it)"
                    if seen is None
                    else f"the old primary saw it flush {seen - lead} bytes past the best reachable"
                )
                refusals.append(
                    f"{c.name} does not answer and may be the most advanced: {what}; "
                    "set accept_unreachable: true to choose without it"
                )

    result: list[Candidate] = []
    for position, r in enumerate(ranked):
        c = by_name[r.name]
        if position == 0:
            result.append(_judged(c, Verdict.CHOSEN, _why_chosen(c, ranked)))
        else:
            result.append(_judged(c, Verdict.BEHIND, _why_behind(c, ranked[0])))
    for c in out:
        if c.name in {r.name for r in result}:
            continue
        result.append(_judged(c, Verdict.REJECTED, _why_rejected(c, newest)))
    return Ranking(tuple(result), known_end, tuple(refusals), primary_end)


def _judged(c: Candidate, verdict: Verdict, reason: str) -> Candidate:
    return replace(c, verdict=verdict, reason=reason + _patroni_word(c))


def _patroni_word(c: Candidate) -> str:
    """Patroni's verdict, after drctl's reason (nothing for an unmanaged candidate)."""
    said = c.patroni
    if said is None:
        return ""
    if said.problem is not None:
        return f"; Patroni ({said.cluster}) did not answer: judged on drctl's facts"
    objections = said.objections
    if objections:
        return "; Patroni would refuse it: " + "; ".join(objections)
    return "; Patroni has no objection"


def _why_chosen(c: Candidate, ranked: list[Candidate]) -> str:
    if len(ranked) == 1:
        return "the only eligible candidate"
    runner = ranked[1]
    if (c.received or 0) > (runner.received or 0):
        more = (c.received or 0) - (runner.received or 0)
        return f"received the most WAL ({more} bytes more than {runner.name})"
    return f"received as much as {runner.name}; {_tie_break(c, runner)}"


def _tie_break(c: Candidate, other: Candidate) -> str:
    if c.synchronous and not other.synchronous:
        return "synchronous standby"
    if c.priority != other.priority:
        return f"higher priority ({c.priority} > {other.priority})"
    if (c.replayed or 0) != (other.replayed or 0):
        return f"replayed {(c.replayed or 0) - (other.replayed or 0)} bytes more"
    return "first by name"


def _why_behind(c: Candidate, winner: Candidate) -> str:
    gap = (winner.received or 0) - (c.received or 0)
    if gap > 0:
        paused = " (replay paused: not counted)" if c.replay_paused else ""
        return f"received {gap} bytes less than {winner.name}{paused}"
    reason = _tie_break(winner, c)
    return f"received as much as {winner.name}, which wins the tie: {reason}"


def _why_rejected(c: Candidate, newest: int | None) -> str:
    if not c.reachable:
        return f"unreachable: {c.problem}"
    if c.problem is not None:
        return c.problem
    if c.nofailover:
        return "tagged nofailover"
    return f"on timeline {c.timeline}, not the newest ({newest})"
