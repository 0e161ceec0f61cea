"""Refusing to act twice: ``settings.cooldown`` against the last finished run on a lock key.

The last run is read from the state store, so the cooldown holds across machines and
directories that share it (Orchestrator's recovery block, kept where every operator
sees it). Overriding it takes a reason, journaled with the run.
"""

from __future__ import annotations

from drctl.compiler.plan import Plan
from drctl.engine import events as ev
from drctl.errors import CooldownActive
from drctl.runbook.durations import format_duration
from drctl.state.base import StateStore, iso


def check_cooldown(
    store: StateStore, plan: Plan, now: float, *, override: str | None, by: str
) -> ev.CooldownOverridden | None:
    """Raise CooldownActive within the cooldown; with ``override`` (a reason), the event to journal.

    Only a run that changes something is held back: a plan without mutating steps
    cannot flap anything.
    """
    cooldown = plan.settings.cooldown
    if not cooldown or not any(s.mutates for s in (*plan.steps, *plan.fallbacks)):
        return None
    last = store.last_finished(plan.lock_key)
    if last is None or last.finished_at is None:
        return None
    left = last.finished_at + cooldown - now
    if left <= 0:
        return None
    if override is None:
        ago = format_duration(round(max(0.0, now - last.finished_at)))
        raise CooldownActive(
            f"lock {plan.lock_key} is cooling down: run {last.id} ({last.name}, {last.status}) "
            f"by {last.user}@{last.host} finished at {iso(last.finished_at)} ({ago} ago), and "
            f"settings.cooldown is {format_duration(cooldown)}; a new run may start after "
            f"{iso(last.finished_at + cooldown)} (in {format_duration(round(left))})",
            hint="check why it ran so recently; to run anyway: "
            "--override-cooldown --reason TEXT (journaled)",
        )
    return ev.CooldownOverridden(
        last_run=last.id, finished_at=last.finished_at, cooldown=cooldown, by=by, reason=override
    )
