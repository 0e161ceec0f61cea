"""``postgres.choose_primary``: pick the candidate to promote, and say why of every other."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres.candidate import RULE, Candidate, PatroniSays, Ranking, Verdict, rank
from drctl.providers.postgres.promote import TIMELINE, timeline_of
from drctl.providers.postgres.session import connect, lsn, lsn_text
from drctl.runbook.targets import PatroniTarget, PostgresTarget
from drctl.steps.base import Role, StepContext, StepInputs, StepType, published

if TYPE_CHECKING:
    # Imported by the step only for candidates Patroni manages.
    from drctl.providers.patroni.api import ClusterView, ConfigView


class CandidateInputs(StepInputs):
    target: str = Field(description="Target name of a standby that may be promoted.")
    nofailover: bool = Field(default=False, description="Never choose this one (an operator tag).")
    priority: int = Field(
        default=0, ge=0, le=1000, description="Higher wins between candidates at equal position."
    )
    application_name: str | None = Field(
        default=None,
        description=(
            "Its name in the old primary's pg_stat_replication (default: the target name); "
            "for a target managed_by Patroni, also its member name there (Patroni names "
            "each standby's application_name after its member)."
        ),
    )


def _named(value: object) -> object:
    # A bare target name is a candidate with no tags (a list rendered from params).
    if isinstance(value, list):
        return [{"target": v} if isinstance(v, str) else v for v in value]
    return value


class ChooseInputs(StepInputs):
    candidates: Annotated[list[CandidateInputs], BeforeValidator(_named)] = Field(
        min_length=1,
        description="The standbys to choose among, each with its operator tags (or a bare target name).",
    )
    old_primary: str | None = Field(
        default=None,
        description=(
            "Target name of the old primary: asked (when it answers) for its WAL position, "
            "synchronous_standby_names and how it saw each candidate."
        ),
    )
    prefer: str | None = Field(
        default=None,
        description="Choose this candidate if it is eligible, even behind another; the bytes it gives up are logged.",
    )
    accept_unreachable: bool = Field(
        default=False,
        description="Choose even when a candidate that may be the most advanced does not answer.",
    )
    accept_timeline_split: bool = Field(
        default=False,
        description="Choose among those on the newest timeline when candidates disagree.",
    )
    accept_patroni_refusal: bool = Field(
        default=False,
        description=(
            "Choose a candidate Patroni would not promote (tagged nofailover, lagging over "
            "maximum_lag_on_failover, not the sync standby in synchronous_mode); logged and "
            "published with what Patroni said."
        ),
    )

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, value: list[CandidateInputs]) -> list[CandidateInputs]:
        names = [c.target for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"candidate listed more than once: {', '.join(twice)}")
        return value

    @model_validator(mode="after")
    def _known_names(self) -> ChooseInputs:
        names = {c.target for c in self.candidates}
        if self.prefer is not None and self.prefer not in names:
            raise ValueError(f"prefer names {self.prefer!r}, which is not a candidate")
        if self.old_primary is not None and self.old_primary in names:
            raise ValueError(f"old_primary {self.old_primary!r} is also a candidate")
        return self


@dataclass(frozen=True)
class Replica:
    """One row of the old primary's pg_stat_replication."""

    state: str
    sync_state: str
    sync_priority: int
    flushed: int | None


@dataclass(frozen=True)
class PrimaryView:
    """What the old primary said, when it answered."""

    end: int
    synchronous_standby_names: str
    replicas: dict[str, Replica]


Ctx = StepContext[ChooseInputs, None]

#: What the old primary says, in one statement (each is a round trip on the critical
#: path): whether it is in recovery, its write position (NULL in recovery, where
#: pg_current_wal_lsn() fails), synchronous_standby_names and its pg_stat_replication.
_PRIMARY_VIEW = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN NULL "
    "ELSE pg_current_wal_lsn()::text END, current_setting('synchronous_standby_names'), "
    "(SELECT json_agg(json_build_array(application_name, state, sync_state, sync_priority, "
    "flush_lsn::text)) FROM pg_stat_replication)"
)
#: What a candidate says, in one statement: its positions, and its timeline's columns.
_CANDIDATE = (
    "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, "
    "pg_last_wal_replay_lsn()::text, "
    f"pg_is_in_recovery() AND pg_get_wal_replay_pause_state() <> 'not paused', {TIMELINE}"
)


class ChoosePrimary(StepType[ChooseInputs, None]):
    """Choose the standby to promote among candidates; publish it and the whole table.

    For each candidate: whether it answers, its received and replayed WAL position,
    timeline and whether replay is paused; from the old primary (when it answers) its
    replication state and sync priority; from the inputs its ``nofailover`` and
    ``priority`` tags. The most WAL *received* wins — received but not yet replayed WAL
    is not lost, the promotion replays it — and at an equal position a synchronous
    standby, then the higher priority, then the most replayed. Refuses when a candidate
    that may be the most advanced does not answer, or when candidates are on different
    timelines, unless ``accept_unreachable`` / ``accept_timeline_split``. ``prefer``
    overrides the choice for an eligible candidate, and the log says what it gives up.

    When candidates' targets are ``managed_by`` a ``patroni`` target, Patroni is asked
    too (``GET /cluster`` and ``GET /config``), beside the servers: each member's tags
    (``nofailover``, ``failover_priority``), whether it is Patroni's sync (or quorum)
    standby, its lag as Patroni counts it, and the cluster's
    ``maximum_lag_on_failover``, ``synchronous_mode`` and ``synchronous_mode_strict``.
    That view is shown beside drctl's in the table, the log and every reason; it does
    not change the order. The member is the candidate's ``application_name`` (default:
    the target name). Refuses a choice Patroni would not make itself — the member
    tagged ``nofailover`` (or ``failover_priority`` 0) in Patroni, lagging more than
    ``maximum_lag_on_failover``, not a sync standby while ``synchronous_mode`` is on
    and one exists, or not a member at all — unless ``accept_patroni_refusal``; then
    the override is logged and published (``patroni_refusal_accepted``) with what
    Patroni said. When no member of the cluster answers, the log says so and the choice
    is made on drctl's facts alone.

    Publishes ``target`` (the winner's target name), ``others`` (every other
    candidate's, in the order given: the standbys that follow the winner), ``gap_bytes`` (WAL the winner
    lacks against the furthest known position), ``gaps`` (each candidate's), ``table``
    (every candidate's facts, verdict and reason) and ``known_end_lsn``. Read-only.
    """

    name = "postgres.choose_primary"
    outputs = published(
        {
            "others": "The other candidates' target names (they follow the winner).",
            "wal_seen": "The furthest WAL position seen of the old primary, by target name.",
            "target": "The chosen candidate's target name.",
            "gap_bytes": "WAL it lacks against the newest known position.",
            "gaps": "Each candidate's gap in bytes, by target.",
            "table": "Every candidate's figures and why it was or was not chosen.",
            "known_end_lsn": "The newest WAL position known.",
            "preferred": "Whether the chosen one is the preferred one.",
            "gives_up_bytes": "WAL given up by taking the preferred candidate over the freshest.",
            "patroni_refusal_accepted": (
                "When accept_patroni_refusal chose a candidate Patroni would not promote: "
                "its target, Patroni's objections and what Patroni said of it."
            ),
        }
    )
    Inputs = ChooseInputs
    roles = frozenset({Role.LAG_CHECK})

    def warm_up(self) -> None:
        import psycopg
        import psycopg.conninfo
        import psycopg.errors  # noqa: F401

    def verifies(self, inputs: ChooseInputs) -> bool:
        # Nothing to prove: a resume runs the choice again, so later steps read its outputs.
        return False

    def target_outputs(self, inputs: ChooseInputs) -> Mapping[str, tuple[str, ...]]:
        names = tuple(c.target for c in inputs.candidates)
        return {"target": names, "others": names}

    def describe(self, inputs: ChooseInputs, target: str | None) -> str:
        names = ", ".join(c.target for c in inputs.candidates)
        prefer = f"; prefer {inputs.prefer}" if inputs.prefer else ""
        return f"choose the new primary among {names}: {RULE}{prefer}"

    def check(self, ctx: Ctx) -> str | None:
        if not ctx.dry_run:
            # apply ranks on the figures it publishes, and refuses just as this would:
            # ranking here too would read every server twice before the failover starts.
            return None
        ranking = self._rank(ctx)
        winner = self._decide(ctx, ranking)
        return f"choose {winner.name} ({winner.reason})"

    def apply(self, ctx: Ctx) -> None:
        ranking = self._rank(ctx)
        winner = self._decide(ctx, ranking)
        ctx.output("target", winner.name)
        ctx.output("others", [c.target for c in ctx.inputs.candidates if c.target != winner.name])
        ctx.output("gap_bytes", winner.gap_bytes)
        ctx.output("gaps", {c.name: c.gap_bytes for c in ranking.candidates})
        ctx.output("table", [c.as_json() for c in ranking.candidates])
        ctx.output("known_end_lsn", lsn_text(ranking.known_end))
        ctx.output("preferred", ctx.inputs.prefer == winner.name)
        if ctx.inputs.old_primary and ranking.primary_end is not None:
            # Where the old primary was seen: a later promote's lower bound if it is gone.
            ctx.output("wal_seen", {ctx.inputs.old_primary: lsn_text(ranking.primary_end)})

    def _decide(self, ctx: Ctx, ranking: Ranking) -> Candidate:
        """The candidate to promote, after logging the table; a StepError if none may be."""
        for c in ranking.candidates:
            ctx.log(_row(c))
        if ranking.refusals:
            raise StepError("refusing to choose: " + "; ".join(ranking.refusals))
        best = ranking.winner
        if best is None:
            raise StepError(
                "no eligible candidate: "
                + "; ".join(f"{c.name}: {c.reason}" for c in ranking.candidates)
            )
        prefer = ctx.inputs.prefer
        if prefer is None or prefer == best.name:
            return self._patroni_agrees(ctx, ranking, best)
        chosen = next(c for c in ranking.candidates if c.name == prefer)
        if chosen.verdict is Verdict.REJECTED:
            raise StepError(f"prefer: {prefer} cannot be chosen: {chosen.reason}")
        gives_up = (best.received or 0) - (chosen.received or 0)
        ctx.log(
            f"prefer: {prefer} chosen over {best.name}, giving up {gives_up} bytes of WAL "
            f"{prefer} never received"
        )
        ctx.output("gives_up_bytes", gives_up)
        return self._patroni_agrees(ctx, ranking, chosen)

    def _patroni_agrees(self, ctx: Ctx, ranking: Ranking, chosen: Candidate) -> Candidate:
        """``chosen``, unless Patroni would refuse it and that is not acknowledged."""
        objections = chosen.patroni_objections
        said = chosen.patroni
        if not objections or said is None:
            return chosen
        why = "; ".join(objections)
        if not ctx.inputs.accept_patroni_refusal:
            agreed = [
                c.name
                for c in ranking.candidates
                if c.verdict is Verdict.BEHIND
                and c.patroni is not None
                and not c.patroni_objections
            ]
            instead = (
                f"; Patroni would promote {', '.join(agreed)} (name it in prefer)" if agreed else ""
            )
            raise StepError(
                f"refusing to choose {chosen.name}: Patroni ({said.cluster}) would not promote "
                f"member {said.member}: {why} [{said.summary()}]{instead}; set "
                "accept_patroni_refusal: true to choose it all the same"
            )
        ctx.log(
            f"accept_patroni_refusal: {chosen.name} chosen although Patroni ({said.cluster}) "
            f"would not promote it: {why} [{said.summary()}]"
        )
        ctx.output(
            "patroni_refusal_accepted",
            {"target": chosen.name, "objections": list(objections), "patroni": said.as_json()},
        )
        return chosen

    def _rank(self, ctx: Ctx) -> Ranking:
        inputs = ctx.inputs
        # Every server is asked at once: the choice waits for the slowest answer, not for
        # the sum of them (an unreachable candidate costs its connect timeout only once).
        managers = {
            given.target: managed
            for given in inputs.candidates
            if (managed := ctx.target_named(given.target, PostgresTarget).managed_by)
        }
        clusters = sorted(set(managers.values()))
        workers = len(inputs.candidates) + 1 + len(clusters)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="choose") as pool:
            asked = (
                pool.submit(self._primary_view, ctx, inputs.old_primary)
                if inputs.old_primary
                else None
            )
            patroni = {name: pool.submit(self._patroni_view, ctx, name) for name in clusters}
            found = [pool.submit(self._candidate, ctx, c, asked) for c in inputs.candidates]
            candidates = [
                _with_patroni(c, given, managers, patroni)
                for c, given in zip((f.result() for f in found), inputs.candidates, strict=True)
            ]
            view = asked.result() if asked is not None else None
        return rank(
            candidates,
            primary_end=view.end if view else None,
            accept_unreachable=inputs.accept_unreachable,
            accept_timeline_split=inputs.accept_timeline_split,
        )

    def _primary_view(self, ctx: Ctx, name: str) -> PrimaryView | None:
        target = ctx.target_named(name, PostgresTarget)
        try:
            with connect(target, ctx, what=name, read_only=True, cap=3.0) as conn:
                recovery, end_text, names, rows = conn.execute(_PRIMARY_VIEW).fetchone()
        except Unreachable as exc:
            ctx.log(f"{name} does not answer ({exc.message}): candidates judged on their own")
            return None
        if recovery:
            ctx.log(f"{name} is in recovery: not asked how it saw the candidates")
            return None
        replicas = {
            str(r[0]): Replica(str(r[1]), str(r[2]), int(r[3]), lsn(r[4])) for r in rows or ()
        }
        return PrimaryView(lsn(end_text) or 0, str(names), replicas)

    def _patroni_view(self, ctx: Ctx, name: str) -> tuple[ClusterView, ConfigView] | str:
        """Patroni's /cluster and /config, or why it was not heard (logged).

        Only silence is tolerated: an answer that is not Patroni's, or refused
        credentials, is a StepError, since judging without Patroni then would hide a
        misconfiguration behind a choice Patroni might refuse.
        """
        from drctl.providers.patroni.api import PatroniApi

        client = PatroniApi(ctx.target_named(name, PatroniTarget), min(ctx.remaining(), 3.0))
        try:
            return client.cluster(), client.config()
        except Unreachable as exc:
            ctx.log(
                f"Patroni ({name}) does not answer ({exc.message}): its candidates are "
                "judged on drctl's facts"
            )
            return exc.message

    def _candidate(
        self, ctx: Ctx, given: CandidateInputs, asked: Future[PrimaryView | None] | None
    ) -> Candidate:
        target = ctx.target_named(given.target, PostgresTarget)
        facts: dict[str, Any]
        try:
            with connect(target, ctx, what=given.target, read_only=True, cap=3.0) as conn:
                recovery, receive, replay, paused, *where = conn.execute(_CANDIDATE).fetchone()
                timeline = timeline_of(conn, *where)
        except Unreachable as exc:
            facts = {"reachable": False, "problem": exc.message, "received": None,
                     "replayed": None, "timeline": None, "replay_paused": False}  # fmt: skip
        else:
            if not recovery:
                facts = {"reachable": True, "problem": "not a standby (not in recovery)",
                         "received": None, "replayed": None, "timeline": timeline,
                         "replay_paused": False}  # fmt: skip
            else:
                replayed = lsn(replay)
                # After a restart the receive position is where streaming restarted, behind
                # replay: what it holds is the further of the two.
                received = max(lsn(receive) or 0, replayed or 0)
                facts = {"reachable": True, "problem": None, "received": received,
                         "replayed": replayed, "timeline": timeline,
                         "replay_paused": bool(paused)}  # fmt: skip
        # How the old primary saw it: asked beside this candidate, read once both answered.
        view = asked.result() if asked is not None else None
        seen = view.replicas.get(given.application_name or given.target) if view else None
        return Candidate(
            name=given.target, nofailover=given.nofailover, priority=given.priority,
            state=seen.state if seen else None, sync_state=seen.sync_state if seen else None,
            sync_priority=seen.sync_priority if seen else None,
            primary_saw_flushed=seen.flushed if seen else None, **facts,
        )  # fmt: skip


def _with_patroni(
    c: Candidate,
    given: CandidateInputs,
    managers: dict[str, str],
    asked: dict[str, Future[tuple[ClusterView, ConfigView] | str]],
) -> Candidate:
    """``c`` with what its Patroni cluster said of it, when its target is managed."""
    cluster = managers.get(given.target)
    if cluster is None:
        return c
    member = given.application_name or given.target
    heard = asked[cluster].result()
    if isinstance(heard, str):
        return replace(c, patroni=PatroniSays(cluster, member, problem=heard))
    view, config = heard
    said = PatroniSays(
        cluster, member, maximum_lag_on_failover=config.maximum_lag_on_failover,
        synchronous_mode=config.synchronous_mode,
        synchronous_mode_strict=config.synchronous_mode_strict,
        sync_standbys=tuple(m.name for m in view.members if m.sync_standby),
    )  # fmt: skip
    seen = view.member(member)
    if seen is not None:
        said = replace(
            said, listed=True, role=seen.role, state=seen.state, lag=seen.lag,
            nofailover=seen.nofailover, failover_priority=seen.failover_priority,
            sync_standby=seen.sync_standby,
        )  # fmt: skip
    return replace(c, patroni=said)


def _row(c: Candidate) -> str:
    """One line of the table the log shows."""
    sync = f" {c.sync_state}/{c.sync_priority}" if c.sync_state else ""
    paused = " replay paused" if c.replay_paused else ""
    tags = (" nofailover" if c.nofailover else "") + (
        f" priority {c.priority}" if c.priority else ""
    )
    where = (
        f"received {lsn_text(c.received)} replayed {lsn_text(c.replayed)} tl {c.timeline}"
        if c.received is not None
        else "position unknown"
    )
    gap = f"gap {c.gap_bytes} bytes" if c.gap_bytes is not None else "gap unknown"
    said = f"; {c.patroni.summary()}" if c.patroni is not None else ""
    return f"{c.name}: {c.verdict} — {c.reason} [{where}, {gap}{sync}{paused}{tags}{said}]"
