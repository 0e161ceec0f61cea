"""``patroni.pause`` and ``patroni.resume``: maintenance mode, seen by every member."""

from __future__ import annotations

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.patroni.base import EVERY, PatroniContext, PatroniStep, Views, api, views
from drctl.steps.base import Role, StepInputs, published


class PauseInputs(StepInputs):
    wait_seconds: float = Field(
        default=30.0, gt=0, le=600,
        description="How long every member gets to see the change before the step fails.",
    )  # fmt: skip


Ctx = PatroniContext[PauseInputs]


def set_paused(ctx: Ctx, paused: bool) -> Views:
    """``PATCH /config {"pause": …}`` and wait until every member's own view has it."""
    answer = api(ctx).first("PATCH", "/config", {"pause": paused})
    if not answer.ok:
        raise StepError(
            f"Patroni refused to {'pause' if paused else 'resume'} (HTTP {answer.status}): "
            f"{answer.text.strip()!r:.300}"
        )
    return wait_seen(ctx, paused)


def wait_seen(ctx: Ctx, paused: bool) -> Views:
    last: list[Views] = []

    def seen() -> Views | None:
        last.append(views(ctx))
        return last[-1] if not last[-1].pause_seen(paused) else None

    polled = ctx.poll(seen, every=EVERY, within=ctx.inputs.wait_seconds, retry_on=(Unreachable,))
    if polled.value is not None:
        return polled.value
    if not last:
        raise polled.error or StepError("Patroni did not answer")
    off = last[-1].pause_seen(paused)
    raise StepError(
        f"Patroni's /config says pause={str(paused).lower()}, but after "
        f"{polled.waited:.1f}s {', '.join(off)} still {'run' if paused else 'are paused'} "
        f"in their own view. Members: {last[-1].cluster.lines()}"
    )


class Pause(PatroniStep[PauseInputs]):
    """Pause Patroni (maintenance mode): it stops failing over, promoting or restarting.

    Sends ``PATCH /config {"pause": true}`` with the target's credentials, then waits up
    to ``wait_seconds`` until every member's own ``GET /patroni`` says it is paused — the
    ``/config`` answer alone only says the DCS holds the new setting, not that each
    member's HA loop has seen it. ``verify``: every member's own view is paused.
    ``undo`` resumes the cluster, unless it was paused already before the step.
    While paused, postgres steps on a target ``managed_by`` this cluster may act.
    """

    name = "patroni.pause"
    outputs = published(
        {
            "paused": "Whether the cluster is paused (maintenance mode).",
        }
    )
    Inputs = PauseInputs
    roles = frozenset({Role.MUTATING, Role.HA_PAUSE})

    def describe(self, inputs: PauseInputs, target: str | None) -> str:
        return f"pause Patroni on {target} (maintenance mode) and check every member sees it"

    def check(self, ctx: Ctx) -> str | None:
        seen = views(ctx)
        if not seen.pause_seen(True):
            return "already paused"
        return f"pause the cluster ({seen.cluster.lines()})"

    def apply(self, ctx: Ctx) -> None:
        before = views(ctx)
        ctx.record("was_paused", not before.pause_seen(True))
        seen = set_paused(ctx, True)
        ctx.output("paused", True)
        ctx.log(f"paused in the view of {', '.join(sorted(seen.nodes))}")

    def verify(self, ctx: Ctx) -> bool:
        return not views(ctx).pause_seen(True)

    def undo(self, ctx: Ctx) -> None:
        if ctx.recorded.get("was_paused"):
            ctx.log("the cluster was paused before this step: leaving it paused")
            return
        set_paused(ctx, False)


def split(seen: Views) -> str | None:
    """Why handing the cluster back to Patroni now would undo a change; None if it would not.

    Patroni keeps the leader lock where it was until the old leader's HA loop sees its
    PostgreSQL stopped (up to ``loop_wait``); resumed before that, it restarts the old
    leader as primary and demotes the server promoted by hand — the writes taken there
    are lost. So the lock must sit on the one member that runs as primary.
    """
    leader = seen.cluster.leader
    primaries = sorted(
        n
        for n, v in seen.nodes.items()
        if v is not None and v.role == "primary" and v.state == "running"
    )
    if leader is None:
        return f"no member holds Patroni's leader lock (running as primary: {', '.join(primaries) or 'none'})"
    others = [n for n in primaries if n != leader.name]
    if others:
        return (
            f"{leader.name} holds Patroni's leader lock but {', '.join(others)} runs as primary: "
            f"resumed now, Patroni would demote {', '.join(others)}"
        )
    if leader.name not in primaries:
        return f"{leader.name} holds Patroni's leader lock but does not run as primary"
    return None


class Resume(PatroniStep[PauseInputs]):
    """Resume Patroni: hand the cluster back to its HA manager after maintenance.

    First waits, up to ``wait_seconds``, until Patroni's leader lock is on the one member
    that runs as primary: after a promote done by hand while paused, the old leader's
    Patroni lets go of the lock only on its next loop, and resumed before that it would
    start the old leader again as primary and demote the new one (losing the writes taken
    there). Refuses, naming the members, if that does not happen. Then sends
    ``PATCH /config {"pause": false}`` and waits up to ``wait_seconds`` until no member's
    own ``GET /patroni`` says it is paused. ``verify``: no member's view is paused.
    """

    name = "patroni.resume"
    outputs = published(
        {
            "paused": "Whether the cluster is paused (maintenance mode).",
        }
    )
    Inputs = PauseInputs
    roles = frozenset({Role.MUTATING, Role.HA_RESUME})

    def describe(self, inputs: PauseInputs, target: str | None) -> str:
        return f"resume Patroni on {target} and check no member is paused"

    def check(self, ctx: Ctx) -> str | None:
        seen = views(ctx)
        if not seen.pause_seen(False):
            return "not paused: nothing to resume"
        return f"resume the cluster ({seen.cluster.lines()})"

    def apply(self, ctx: Ctx) -> None:
        last: list[str | None] = []

        def agreed() -> bool | None:
            last.append(split(views(ctx)))
            return True if last[-1] is None else None

        polled = ctx.poll(
            agreed, every=EVERY, within=ctx.inputs.wait_seconds, retry_on=(Unreachable,)
        )
        if not polled.done:
            why = last[-1] if last else (polled.error.message if polled.error else "no answer")
            raise StepError(
                f"refusing to resume Patroni after {polled.waited:.1f}s: {why}. Members: "
                f"{views(ctx).cluster.lines()}"
            )
        seen = set_paused(ctx, False)
        ctx.output("paused", False)
        ctx.log(f"running again in the view of {', '.join(sorted(seen.nodes))}")

    def verify(self, ctx: Ctx) -> bool:
        return not views(ctx).pause_seen(False)
