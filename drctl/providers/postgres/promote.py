"""``postgres.promote``: turn the standby into the primary, refusing to lose data by accident."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, model_validator

from drctl.errors import StepError, Unreachable
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.handoff import (
    WAL_SEEN,
    Handoff,
    Mark,
    Position,
    best_ahead,
    fence_mark,
    live_mark,
    read_position,
    seen_mark,
)
from drctl.providers.postgres.preflight import preflight
from drctl.providers.postgres.session import (
    connect,
    local_node,
    lsn,
    lsn_text,
    pg_ctl_status,
    probe_writes,
    scalar,
)
from drctl.runbook.model import Slug, no_items
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import FenceRecord, FenceStatus, Role, StepInputs, published

PROBE_TABLE = "drctl_probe"
CREATE_PROBE = (
    f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id bigserial PRIMARY KEY, run_id text, "
    "step text, nonce text, at timestamptz NOT NULL DEFAULT now())"
)


class PromoteInputs(StepInputs):
    old_primary: str | None = Field(
        default=None,
        description="Target name of the old primary, checked to be fenced before promoting.",
    )
    max_lag_bytes: int = Field(
        default=0, ge=0, description="Refuse when the standby is further behind."
    )
    catchup_seconds: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="Wait this long for the lag to drain before refusing.",
    )
    wait_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description=(
            "After pg_promote(false), poll pg_is_in_recovery() every 10 ms for up to this "
            "many seconds until the standby leaves recovery; fail after that."
        ),
    )
    accept_data_loss: bool = Field(
        default=False, description="Promote even when the standby is behind (lint DR002)."
    )
    force: bool = Field(
        default=False,
        description="Promote without proof that the old primary is fenced (lint DR001).",
    )
    candidates: list[Slug] = Field(
        default_factory=no_items,
        description=(
            "Target names of the other standbys that could be promoted: read at the promote, "
            "so that promoting one that is not the most advanced needs accept_data_loss."
        ),
    )

    @model_validator(mode="after")
    def _other_candidates(self) -> PromoteInputs:
        twice = sorted({n for n in self.candidates if self.candidates.count(n) > 1})
        if twice:
            raise ValueError(f"candidate listed more than once: {', '.join(twice)}")
        if self.old_primary is not None and self.old_primary in self.candidates:
            raise ValueError(f"old_primary {self.old_primary!r} is also a candidate")
        return self


#: How an unproven fence ended, in the promote's refusal.
_ENDED = {
    FenceStatus.FAILED: "failed",
    FenceStatus.IGNORED: "failed (ignored under on_failure: continue)",
    FenceStatus.SKIPPED: "was skipped",
    FenceStatus.IN_DOUBT: "is in doubt (started, no outcome)",
    FenceStatus.PENDING: "has not run",
    FenceStatus.SUCCEEDED: "succeeded",
    FenceStatus.RECOVERED: "was recovered by its fallback",
}


#: The columns ``timeline_of`` reads, to go in a statement that asks more beside them.
TIMELINE = (
    "(SELECT received_tli FROM pg_stat_wal_receiver), "
    "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END"
)


def current_timeline(conn: Any) -> int:
    """The timeline a server is on now (in recovery: the one it receives, else replays)."""
    return timeline_of(conn, *conn.execute(f"SELECT {TIMELINE}").fetchone())


def timeline_of(conn: Any, received: int | None, walfile: str | None) -> int:
    """The timeline from ``TIMELINE``'s two columns (read on ``conn``), asking more only
    of a standby with no WAL receiver."""
    if walfile:
        return int(walfile[:8], 16)
    if received:
        return int(received)
    return _replayed_timeline(conn)


#: WAL segment and timeline history file names in pg_wal.
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")


def _replayed_timeline(conn: Any) -> int:
    """The timeline of a standby with no WAL receiver (reconnecting, or none configured).

    PostgreSQL 15 has no SQL function for the replay timeline, and
    ``pg_control_checkpoint()`` gives the last restartpoint's, which lags behind a
    timeline switch the standby already replayed (restartpoints are minutes apart).
    So it is read from the standby's pg_wal: the startup process only replays, and the
    WAL receiver only writes, segments of timelines in the recovery target's history,
    so the newest timeline that has a segment file where the standby's WAL ends
    (replayed or received), a history file, and the restartpoint's timeline among its
    ancestors, is the one it is on. Needs ``pg_ls_waldir`` (superuser or ``pg_monitor``)
    and ``pg_read_file`` (superuser or ``pg_read_server_files``) on the standby.
    """
    import psycopg

    from drctl.providers.postgres.discard import fork_point

    checkpoint = int(scalar(conn, "SELECT timeline_id FROM pg_control_checkpoint()"))
    ends = conn.execute(
        "SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_receive_lsn()::text, "
        "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
    ).fetchone()
    segment_bytes = int(ends[2])
    try:
        names = [str(r[0]) for r in conn.execute("SELECT name FROM pg_ls_waldir()")]
        where = {_segment_name(end - 1, segment_bytes) for end in map(lsn, ends[:2]) if end}
        histories = {int(m[1], 16) for m in map(_HISTORY.match, names) if m}
        newer = sorted(
            {
                tli
                for m in map(_SEGMENT.match, names)
                if m and m[2] in where and (tli := int(m[1], 16)) > checkpoint
                if tli in histories
            },
            reverse=True,
        )
        for tli in newer:
            history = str(scalar(conn, "SELECT pg_read_file(%s)", (f"pg_wal/{tli:08X}.history",)))
            if fork_point(history, checkpoint) is not None:
                return tli
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StepError(
            "cannot tell the standby's timeline: its WAL receiver is not running and reading "
            "its pg_wal needs pg_ls_waldir (superuser or pg_monitor) and pg_read_file "
            f"(superuser or pg_read_server_files) for the DSN's user: {exc}"
        ) from exc
    return checkpoint


def _segment_name(position: int, segment_bytes: int) -> str:
    """The log and segment part (16 hex digits) of the WAL file holding ``position``."""
    segno = position // segment_bytes
    per_log = 0x100000000 // segment_bytes
    return f"{segno // per_log:08X}{segno % per_log:08X}"


Ctx = PostgresContext[PromoteInputs]


def _journaled_proof_of(ctx: Ctx, name: str) -> str:
    """The proof this run's journal gives that target ``name`` is fenced ("" if none).

    A fence step this promote waits for, fencing ``name`` (its ``fences:`` or its own
    target), whose verify passed in this run: the proof for an old primary that does not
    answer (a partition), fenced through a path that does not need it (the control
    plane, a firewall on its clients). In a dry run the fence has not run yet, so a
    pending one is what the run will rely on.
    """
    fencing = [f for f in ctx.fences() if f.fences == name]
    if ctx.dry_run:
        pending = [f.step_id for f in fencing]
        return f"{name} to be fenced by fence step {', '.join(pending)}" if pending else ""
    proven = [f.step_id for f in fencing if f.status.proven]
    if not proven:
        return ""
    return f"{name} fenced by fence step {', '.join(proven)} (verified earlier in this run)"


def _named_fence(ctx: Ctx, fences: tuple[FenceRecord, ...]) -> str:
    """With no old_primary: the proven fence of a named PostgreSQL server, or a refusal.

    Without one, there is no telling which server this promote replaces.
    """
    for f in fences:
        if f.status.proven and f.fences:
            fenced = ctx.target_named(f.fences)
            if isinstance(fenced, PostgresTarget) and fenced.dsn != ctx.target.dsn:
                return f"{f.fences} fenced by fence step {f.step_id} (verified earlier in this run)"
    named = [f.step_id for f in fences]
    which = (
        f"fence step {', '.join(named)} names no PostgreSQL server it fences"
        if named
        else "no fence step of this run ran before this step"
    )
    raise StepError(
        f"refusing to promote: no old_primary is named and {which}, so there is no telling "
        "which server this replaces or that it is fenced. Name old_primary, give a fence "
        "step this step requires fences: <the old primary's target>, or set force: true "
        "(lint DR001)."
    )


def _say_proof(ctx: Ctx, proof: str) -> None:
    """Journal which proof of the fence the promote relied on (outputs and a log line)."""
    if ctx.dry_run or not proof:
        return
    ctx.output("fence_proof", proof)
    ctx.log(f"fence proof: {proof}")


class Promote(PostgresStep[PromoteInputs]):
    """Promote the standby with ``SELECT pg_promote(false)``, after proving it is safe.

    After signalling the promotion it polls ``pg_is_in_recovery()`` every 10 ms until the
    standby leaves recovery, for up to ``wait_seconds`` (the step fails after that).

    Refuses (the step fails) when the standby is more than ``max_lag_bytes`` behind
    after waiting ``catchup_seconds``, unless ``accept_data_loss: true``; and when the
    ``old_primary`` still accepts writes or cannot be shown to be fenced, unless
    ``force: true``. The proof is one of: a live probe (it answers and refuses writes),
    ``pg_ctl status`` (a local server known to be stopped), or — for an old primary that
    does not answer, as behind a partition — a fence step it waits for that fences it
    (``fences: old_primary``, or a fence step whose target it is) and whose verify passed
    earlier in this run. It also reads this run's journal, whatever the lints said: a fence
    step it waits for that failed (even under ``on_failure: continue``), was skipped or is
    in doubt makes it refuse, naming that step; without ``old_primary`` it refuses unless a
    fence step it waits for fenced a named PostgreSQL target, since it cannot know
    otherwise which server it replaces. The proof it used is journaled (output
    ``fence_proof``) and shown in its outcome line.
    ``verify``: not in recovery, on a newer timeline than before, and a write succeeds.
    Running it on a server that is already primary does nothing.

    The handoff proof: it waits (up to ``catchup_seconds``) until the standby has
    received and replayed the old primary's last WAL position — the ``final_lsn`` this
    run's fence that took effect journaled, or the old primary's own position while it
    answers — else refuses naming the bytes not received. Lag is counted as Vitess
    counts it: WAL received and not yet replayed is not lost (a paused replay is
    resumed and the promotion replays it), WAL not received is; ``max_lag_bytes``, the
    refusal and ``accept_data_loss`` use the not-received number. With the old primary
    gone and no fence position, the furthest any step saw it (``wal_seen``) is a lower
    bound: "RPO at least N bytes" (``rpo_at_least_bytes``). A standby behind another
    candidate (a ``postgres.choose_primary`` table of this run listing it, or
    ``candidates`` read at the promote) needs ``accept_data_loss`` too. What it relied
    on is journaled before the promotion (record ``handoff``) and published:
    ``handoff_lsn``, ``handoff_from``, ``not_received_bytes``, ``unreplayed_bytes``,
    ``gap_bytes``, ``ahead``, ``rpo_at_least_bytes``, ``timeline``.

    Before the first fence it waits for starts, the engine runs its ``preflight``
    (journaled): the standby answers and is in recovery, is on the old primary's
    timeline, and its not-received lag is within ``max_lag_bytes`` (after up to
    ``catchup_seconds``), so a standby it would refuse is refused while the old primary
    still takes writes. Once promoted, the old ``primary_conninfo`` (and slot) is
    removed from the new primary's postgresql.auto.conf.
    """

    name = "postgres.promote"
    outputs = published(
        {
            "fence_proof": "Which proof that the old primary is fenced the promote relied on.",
            "lag_bytes": "The lag measured before promoting.",
            "timeline": "The new primary's timeline.",
        }
    )
    Inputs = PromoteInputs
    wait_fields = ("catchup_seconds", "wait_seconds")
    roles = frozenset({Role.PROMOTE, Role.MUTATING})

    def describe(self, inputs: PromoteInputs, target: str | None) -> str:
        guards = []
        guards.append(
            "accepting data loss"
            if inputs.accept_data_loss
            else f"if lag ≤ {inputs.max_lag_bytes} bytes"
        )
        if inputs.old_primary:
            guards.append(
                "without checking the fence"
                if inputs.force
                else f"and {inputs.old_primary} is fenced"
            )
        return f"promote {target} to primary ({' '.join(guards)})"

    def lag_limit(self, inputs: PromoteInputs) -> int | None:
        return None if inputs.accept_data_loss else inputs.max_lag_bytes

    def check(self, ctx: Ctx) -> str | None:
        # One session to the standby for the whole wait: a new one per poll costs a
        # connection (a backend forked) every 50 ms.
        with connect(ctx.target, ctx, what="standby", read_only=True) as conn:
            if not scalar(conn, "SELECT pg_is_in_recovery()"):
                return "do nothing: the server is primary already"
            fenced = self._journaled_fences(ctx)
            writes, live = self._old_primary_now(ctx)
            handoff = self._handoff(ctx, conn, live)
        fence = self._fence_proof(ctx, writes)
        if fenced and not ctx.inputs.old_primary:
            fence = fenced
        _say_proof(ctx, fence)
        return f"promote ({handoff}; {fence})"

    def _journaled_fences(self, ctx: Ctx) -> str:
        """Refuse when a fence this step waits for did not take effect, whatever the lints said.

        Returns the proof the journal gives ("" when it gives none). A dry run's fences
        have not run, so there it only says what the run will need.
        """
        if ctx.dry_run:
            return ""
        fences = ctx.fences()
        unproven = [f for f in fences if not f.status.proven]
        if ctx.inputs.force:
            if unproven:
                ctx.log(
                    f"force is set: promoting although fence step {unproven[0].step_id} "
                    f"{_ENDED[unproven[0].status]}"
                )
            return ""
        if unproven:
            bad = unproven[0]
            fencing = f" (fencing {bad.target})" if bad.target else ""
            raise StepError(
                f"refusing to promote: fence step {bad.step_id}{fencing} {_ENDED[bad.status]} "
                f"(status {bad.status.value}), so nothing proves the old primary cannot take "
                "writes — a fence that failed is no fence. Fix what stopped the fence, then "
                f"run it again: give this run up (drctl abort {ctx.run_id} --reason …) and run "
                "the runbook anew; or, only if you know the old primary cannot take writes, "
                "set force: true on this step and acknowledge DR001."
            )
        if not ctx.inputs.old_primary:
            return _named_fence(ctx, fences)
        return "fenced by " + ", ".join(f.step_id for f in fences) if fences else ""

    def preflight(self, ctx: Ctx) -> str | None:
        """Before the first fence: a reachable standby on the old primary's timeline, within
        ``max_lag_bytes`` of WAL not received (after up to ``catchup_seconds``)."""
        inputs = ctx.inputs
        return preflight(
            ctx,
            old_primary=inputs.old_primary,
            max_lag_bytes=inputs.max_lag_bytes,
            catchup_seconds=inputs.catchup_seconds,
            accept_data_loss=inputs.accept_data_loss,
        )

    def _old_primary_now(self, ctx: Ctx) -> tuple[bool | None, Mark | None]:
        """One fresh session to the old primary: whether it takes writes (None: no answer,
        or not asked under ``force``) and its own write position while it answers as a
        primary (the handoff's mark, past any fence's)."""
        name = ctx.inputs.old_primary
        if not name:
            return None, None
        old = ctx.target_named(name, PostgresTarget)
        force = ctx.inputs.force
        try:
            refused, position = probe_writes(old, ctx, "old primary", try_write=not force)
        except Unreachable:
            return None, None
        mark = live_mark(name, position) if position is not None else None
        return (None if force else not refused), mark

    def _handoff(self, ctx: Ctx, standby: Any, live: Mark | None) -> str:
        """Wait (bounded) until the standby holds the old primary's last WAL, else refuse.

        The mark is this run's proven fence's ``final_lsn``, or the old primary's own
        position while it answers (an advisory fence lets sessions write past it), else
        the furthest any step saw (a lower bound). Received and replayed up to it is the
        proof; WAL not received is what promoting loses, and the refusal names it.
        """
        inputs = ctx.inputs
        name = ctx.target_name or "the standby"
        mark = fence_mark(ctx, inputs.old_primary)
        if live is not None and (mark is None or live.lsn > mark.lsn):
            mark = live
        if mark is None and inputs.old_primary:
            mark = seen_mark(ctx.facts(), inputs.old_primary)
        last: list[Position] = []

        def holds() -> Position | None:
            # Each read is its own autocommit statement: as fresh as a new session's.
            last.append(read_position(standby))
            p = last[-1]
            end = mark.lsn if mark is not None else p.received
            return p if p.received >= end and (p.paused or p.replayed >= end) else None

        # With accept_data_loss one reading decides; otherwise the standby gets its time.
        within = 0.0 if inputs.accept_data_loss else inputs.catchup_seconds
        polled = ctx.poll(holds, every=0.05, within=within)
        proof = Handoff(mark, last[-1], best_ahead(ctx, inputs.candidates, last[-1]))
        facts = proof.as_record()
        ctx.record("handoff", facts)
        for key, value in facts.items():
            ctx.output(key, value)
        ctx.output("lag_bytes", proof.loss_bytes if mark is not None else None)
        if inputs.old_primary and mark is not None:
            ctx.output(WAL_SEEN, {inputs.old_primary: lsn_text(mark.lsn)})
        if proof.loss_bytes > inputs.max_lag_bytes:
            text = _loss_text(proof, name, inputs.max_lag_bytes, polled.waited)
            if not inputs.accept_data_loss:
                raise StepError(
                    f"refusing to promote: {text}. Set accept_data_loss: true to promote "
                    "anyway (the journal keeps the gap)"
                )
            ctx.log(f"promoting with data loss, accept_data_loss is set: {text}")
        elif mark is not None and not polled.done and not inputs.accept_data_loss:
            raise StepError(
                f"refusing to promote: {name} received the old primary's WAL up to "
                f"{lsn_text(mark.lsn)} ({mark.source}) but has not replayed it after "
                f"{polled.waited:.1f}s: {proof.unreplayed} bytes received and not yet replayed "
                "(not lost, but the handoff is not proven). Raise catchup_seconds, or find "
                "what holds replay back"
            )
        if mark is None:
            ctx.log(
                "the old primary's last WAL position is unknown (no fence recorded it, it "
                "does not answer, no step saw it): what promoting loses cannot be counted"
            )
            return f"handoff unknown; lag {proof.figures()}"
        if not mark.exact:
            ctx.log(
                f"RPO at least {proof.loss_bytes} bytes: the old primary's end is unknown; "
                f"{mark.source}"
            )
            return f"RPO at least {proof.loss_bytes} bytes ({mark.source}); lag {proof.figures()}"
        return f"lag {proof.figures()}; {name} holds the old primary's WAL to {mark.source}"

    def _fence_proof(self, ctx: Ctx, state: bool | None) -> str:
        """The proof the old primary is fenced; ``state``: whether a fresh session could
        write there just now (None: it did not answer)."""
        inputs = ctx.inputs
        if not inputs.old_primary:
            return "no old primary named"
        if inputs.force:
            ctx.log("force is set: not checking that the old primary is fenced")
            return "fence not checked (force)"
        old = ctx.target_named(inputs.old_primary, PostgresTarget)
        if state is True:
            if ctx.dry_run:  # the fence step before this one has not run in a dry run
                return f"{inputs.old_primary} still accepts writes now: it must be fenced by then"
            raise StepError(_still_writable(ctx, inputs.old_primary))
        if state is False:
            return f"{inputs.old_primary} refuses writes (live probe)"
        journaled = _journaled_proof_of(ctx, inputs.old_primary)
        if journaled:
            return journaled
        status_unknown: StepError | None = None
        if old.data_dir:
            try:
                if not pg_ctl_status(ctx, local_node(old, "old primary", ctx)):
                    return f"{inputs.old_primary} is stopped (pg_ctl status)"
            except StepError as exc:
                status_unknown = exc
        why = (
            f"; whether it is stopped is unknown too: {status_unknown.message}"
            if status_unknown is not None
            else ""
        )
        raise StepError(
            f"refusing to promote: the old primary {inputs.old_primary} does not answer, so it "
            f"cannot be shown to be fenced — it may still take writes behind a partition{why}. "
            "Fence it through a path that does not need it to answer — a fence step before "
            f"this one with fences: {inputs.old_primary} (aws.ec2_stop, aws.ec2_isolate, or a "
            "shell step with roles: [fence] that cuts its clients) — or stop it for certain; "
            "only if you know it cannot take writes, set force: true."
        ) from status_unknown

    def apply(self, ctx: Ctx) -> None:
        from drctl.providers.patroni.guard import refuse_unless_paused

        refuse_unless_paused(ctx, "promote it")  # live, right before acting (DR006)
        inputs = ctx.inputs
        dsn = ctx.target
        # One session for all of it, its statement timeout long enough for the wait below.
        with connect(dsn, ctx, what="standby", cap=inputs.wait_seconds + 5.0) as conn:
            # One statement for what is asked before the promotion: it is on its way.
            recovery, paused, *where = conn.execute(
                "SELECT pg_is_in_recovery(), pg_is_in_recovery() AND "
                f"pg_get_wal_replay_pause_state() <> 'not paused', {TIMELINE}"
            ).fetchone()
            if not recovery:
                ctx.log("already primary")
                ctx.output("timeline", timeline_of(conn, *where))
                forget_upstream(ctx, conn)
                return
            ctx.record("timeline_before", timeline_of(conn, *where))
            # check() ran just before apply in this attempt: lag and fence were proven there.
            # pg_promote(wait => true) checks for the end of recovery only every 100 ms;
            # asking without waiting and polling every 10 ms saves most of that tick.
            if paused:
                # Received WAL is not lost, but only replay puts it in the new primary.
                conn.execute("SELECT pg_wal_replay_resume()")
                ctx.log("replay was paused: resumed, so the promotion replays what it received")
            if not scalar(conn, "SELECT pg_promote(false)"):
                raise StepError("pg_promote refused to signal the promotion")
            ctx.record("promote_signalled", True)
            left = ctx.poll(
                lambda: True if not scalar(conn, "SELECT pg_is_in_recovery()") else None,
                every=0.01,
                within=inputs.wait_seconds,
            )
            if not left.done:
                raise StepError(f"the standby did not leave recovery within {inputs.wait_seconds}s")
            ctx.output("timeline", current_timeline(conn))
            forget_upstream(ctx, conn)

    def verify(self, ctx: Ctx) -> bool:
        with connect(ctx.target, ctx, what="new primary") as conn:
            if scalar(conn, "SELECT pg_is_in_recovery()"):
                return False
            before = ctx.recorded.get("timeline_before")
            if before is not None and current_timeline(conn) <= int(before):
                return False
            # A drctl killed between the promotion and its clean-up finishes it here.
            forget_upstream(ctx, conn)
            with conn.transaction():
                conn.execute(CREATE_PROBE)
                conn.execute(
                    f"INSERT INTO {PROBE_TABLE} (run_id, step, nonce) VALUES (%s, %s, 'promote')",
                    (ctx.run_id, ctx.step_id),
                )
        return True


def _still_writable(ctx: Ctx, old_primary: str) -> str:
    """The refusal when the old primary takes writes, with every way out from here.

    A fence this run journaled as succeeded is skipped by every resume, so when someone
    lifted it since, each resume refuses again: say how to re-apply it, or start anew.
    """
    lifted = [f.step_id for f in ctx.fences() if f.status.proven]
    if not lifted:
        return (
            f"refusing to promote: the old primary {old_primary} still accepts writes "
            "(fence it first, or set force: true)"
        )
    fence = lifted[-1]
    return (
        f"refusing to promote: the old primary {old_primary} accepts writes again although "
        f"fence step {fence} succeeded earlier in this run (was the fence lifted since?). "
        f"Ways out: re-apply the fence with drctl resume {ctx.run_id} --reapply {fence}; or "
        f"give this run up (drctl abort {ctx.run_id} --reason …) and run the runbook anew; "
        "or, only if you know the old primary cannot take writes, set force: true."
    )


def forget_upstream(ctx: Ctx, conn: object) -> None:
    """Drop the old primary_conninfo (and slot) a new primary keeps in postgresql.auto.conf.

    Harmless to a primary, but a stale upstream there is what a later rejoin or restart
    as a standby would stream from: the old primary. ALTER SYSTEM RESET removes the line.
    """
    import psycopg

    conninfo = scalar(conn, "SHOW primary_conninfo")
    slot = scalar(conn, "SHOW primary_slot_name")
    if not conninfo and not slot:
        return
    try:
        conn.execute("ALTER SYSTEM RESET primary_conninfo")  # type: ignore[attr-defined]
        conn.execute("ALTER SYSTEM RESET primary_slot_name")  # type: ignore[attr-defined]
        conn.execute("SELECT pg_reload_conf()")  # type: ignore[attr-defined]
    except psycopg.Error as exc:  # no ALTER SYSTEM right: the promotion stands, say so
        ctx.log(f"warning: the old primary_conninfo stays in postgresql.auto.conf: {exc}")
        return
    ctx.log("old primary_conninfo removed from postgresql.auto.conf")


def _loss_text(proof: Handoff, name: str, limit: int, waited: float) -> str:
    """What promoting ``name`` loses, in bytes, and what is received and not lost."""
    parts = []
    mark, missing = proof.mark, proof.not_received
    if mark is not None and missing:
        least = "" if mark.exact else "at least "
        parts.append(
            f"{name} has not received {least}{missing} bytes of the old primary's WAL (it "
            f"received up to {lsn_text(proof.position.received)}; the old primary ended at "
            f"{'or past ' if not mark.exact else ''}{lsn_text(mark.lsn)}, {mark.source})"
        )
    if proof.ahead is not None and proof.behind_ahead:
        parts.append(
            f"{proof.ahead.name} received {proof.behind_ahead} bytes more than {name} (up to "
            f"{lsn_text(proof.ahead.received)}, {proof.ahead.known_from}): {name} is not the "
            "most advanced candidate"
        )
    return (
        "; ".join(parts) + f"; {proof.unreplayed} more bytes are received and not yet replayed "
        f"(not lost: promotion replays them); limit {limit} bytes, waited {waited:.1f}s"
    )
