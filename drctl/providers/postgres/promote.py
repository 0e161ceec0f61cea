"""``postgres.promote``: turn the standby into the primary, refusing to lose data by accident."""

from __future__ import annotations

from pydantic import Field

from drctl.errors import StepError
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.lag import Lag, measure
from drctl.providers.postgres.session import (
    connect,
    local_node,
    pg_ctl_status,
    scalar,
    writable,
)
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import FenceStatus, Role, StepInputs

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


def current_timeline(conn: object) -> int:
    """The timeline a server is on now (in recovery: the one it receives)."""
    if scalar(conn, "SELECT pg_is_in_recovery()"):
        received = scalar(conn, "SELECT received_tli FROM pg_stat_wal_receiver")
        if received:
            return int(received)
        return int(scalar(conn, "SELECT timeline_id FROM pg_control_checkpoint()"))
    return int(str(scalar(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())"))[:8], 16)


Ctx = PostgresContext[PromoteInputs]


class Promote(PostgresStep[PromoteInputs]):
    """Promote the standby with ``SELECT pg_promote(false)``, after proving it is safe.

    After signalling the promotion it polls ``pg_is_in_recovery()`` every 10 ms until the
    standby leaves recovery, for up to ``wait_seconds`` (the step fails after that).

    Refuses (the step fails) when the standby is more than ``max_lag_bytes`` behind
    after waiting ``catchup_seconds``, unless ``accept_data_loss: true``; and when the
    ``old_primary`` still accepts writes or cannot be shown to be fenced (it does not
    answer and is not a local server known to be stopped), unless ``force: true``.
    It also reads this run's journal, whatever the lints said: a fence step it waits for
    that failed (even under ``on_failure: continue``), was skipped or is in doubt makes
    it refuse, naming that step; without ``old_primary`` it refuses unless a fence step it
    waits for succeeded, since it cannot know otherwise which server it replaces.
    ``verify``: not in recovery, on a newer timeline than before, and a write succeeds.
    Running it on a server that is already primary does nothing.
    """

    name = "postgres.promote"
    Inputs = PromoteInputs
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

    def check(self, ctx: Ctx) -> str | None:
        with connect(ctx.target.dsn, ctx, what="standby", read_only=True) as conn:
            if not scalar(conn, "SELECT pg_is_in_recovery()"):
                return "already primary: nothing to promote"
        fenced = self._journaled_fences(ctx)
        lag = self._lag_within_limit(ctx)
        fence = self._fence_proof(ctx)
        if fenced and not ctx.inputs.old_primary:
            fence = fenced
        return f"promote (lag {lag.bytes} bytes; {fence})"

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
        if not fences and not ctx.inputs.old_primary:
            raise StepError(
                "refusing to promote: no old_primary is named and no fence step of this run "
                "ran before this step, so there is no telling which server this replaces or "
                "that it is fenced. Name old_primary, add a fence step this step requires, or "
                "set force: true (lint DR001)."
            )
        return "fenced by " + ", ".join(f.step_id for f in fences) if fences else ""

    def _lag_within_limit(self, ctx: Ctx) -> Lag:
        inputs = ctx.inputs
        primary = (
            ctx.target_named(inputs.old_primary, PostgresTarget).dsn if inputs.old_primary else None
        )
        last: list[Lag] = []

        def drained() -> Lag | None:
            last.append(measure(ctx, ctx.target.dsn, primary))
            return last[-1] if last[-1].bytes <= inputs.max_lag_bytes else None

        # With accept_data_loss one measurement decides; otherwise wait for the lag to drain.
        within = 0.0 if inputs.accept_data_loss else inputs.catchup_seconds
        polled = ctx.poll(drained, every=0.2, within=within)
        lag, waited = last[-1], polled.waited
        ctx.output("lag_bytes", lag.bytes)
        if lag.bytes > inputs.max_lag_bytes:
            if not inputs.accept_data_loss:
                raise StepError(
                    f"refusing to promote: the standby is {lag.bytes} bytes behind "
                    f"(limit {inputs.max_lag_bytes}, waited {waited:.1f}s); promoting now loses "
                    "those writes. Set accept_data_loss: true to promote anyway."
                )
            ctx.log(f"promoting {lag.bytes} bytes behind: accept_data_loss is set")
        return lag

    def _fence_proof(self, ctx: Ctx) -> str:
        inputs = ctx.inputs
        if not inputs.old_primary:
            return "no old primary named"
        if inputs.force:
            ctx.log("force is set: not checking that the old primary is fenced")
            return "fence not checked (force)"
        old = ctx.target_named(inputs.old_primary, PostgresTarget)
        state = writable(old.dsn, ctx, "old primary")
        if state is True:
            if ctx.dry_run:  # the fence step before this one has not run in a dry run
                return f"{inputs.old_primary} still accepts writes now: it must be fenced by then"
            raise StepError(
                f"refusing to promote: the old primary {inputs.old_primary} still accepts writes "
                "(fence it first, or set force: true)"
            )
        if state is False:
            return f"{inputs.old_primary} refuses writes"
        status_unknown: StepError | None = None
        if old.data_dir:
            try:
                if not pg_ctl_status(ctx, local_node(old, "old primary", ctx)):
                    return f"{inputs.old_primary} is stopped"
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
            "Stop it for certain, or set force: true."
        ) from status_unknown

    def apply(self, ctx: Ctx) -> None:
        from drctl.providers.patroni.guard import refuse_unless_paused

        refuse_unless_paused(ctx, "promote it")  # live, right before acting (DR006)
        inputs = ctx.inputs
        dsn = ctx.target.dsn
        with connect(dsn, ctx, what="standby") as conn:
            if not scalar(conn, "SELECT pg_is_in_recovery()"):
                ctx.log("already primary")
                ctx.output("timeline", current_timeline(conn))
                return
            ctx.record("timeline_before", current_timeline(conn))
        # check() ran just before apply in this attempt: lag and fence were proven there.
        with connect(dsn, ctx, what="standby", cap=inputs.wait_seconds + 5.0) as conn:
            # pg_promote(wait => true) checks for the end of recovery only every 100 ms;
            # asking without waiting and polling every 10 ms saves most of that tick.
            if not scalar(conn, "SELECT pg_promote(false)"):
                raise StepError("pg_promote refused to signal the promotion")
            left = ctx.poll(
                lambda: True if not scalar(conn, "SELECT pg_is_in_recovery()") else None,
                every=0.01,
                within=inputs.wait_seconds,
            )
            if not left.done:
                raise StepError(f"the standby did not leave recovery within {inputs.wait_seconds}s")
            ctx.output("timeline", current_timeline(conn))

    def verify(self, ctx: Ctx) -> bool:
        with connect(ctx.target.dsn, ctx, what="new primary") as conn:
            if scalar(conn, "SELECT pg_is_in_recovery()"):
                return False
            before = ctx.recorded.get("timeline_before")
            if before is not None and current_timeline(conn) <= int(before):
                return False
            with conn.transaction():
                conn.execute(CREATE_PROBE)
                conn.execute(
                    f"INSERT INTO {PROBE_TABLE} (run_id, step, nonce) VALUES (%s, %s, 'promote')",
                    (ctx.run_id, ctx.step_id),
                )
        return True
