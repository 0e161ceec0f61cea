"""``patroni.restart`` and ``patroni.reinit``: one member's PostgreSQL, through Patroni."""

from __future__ import annotations

from pydantic import Field

from drctl.errors import StepError, Unreachable
from drctl.providers.patroni.api import ClusterView, MemberView, NodeView
from drctl.providers.patroni.base import EVERY, PatroniContext, PatroniStep, api, refusal
from drctl.steps.base import Role, StepInputs


class MemberInputs(StepInputs):
    member: str = Field(description="The Patroni name of the member.")
    wait_seconds: float = Field(
        default=120.0, gt=0, le=3600,
        description="How long the member gets to run (a replica: stream) again.",
    )  # fmt: skip


class RestartInputs(MemberInputs):
    pending_only: bool = Field(
        default=False,
        description="Restart only if Patroni says the member is pending restart (restart_pending).",
    )


class ReinitInputs(MemberInputs):
    force: bool = Field(
        default=False, description="Reinitialize even while the member's PostgreSQL runs (force)."
    )


def _member(ctx: PatroniContext[MemberInputs]) -> tuple[ClusterView, MemberView, str]:
    view = api(ctx).cluster()
    member = view.member(ctx.inputs.member)
    if member is None or member.base_url is None:
        raise StepError(f"no member {ctx.inputs.member!r} with a REST API. Members: {view.lines()}")
    return view, member, member.base_url


def _back(
    ctx: PatroniContext[MemberInputs], url: str, before: str | None, replica: bool
) -> bool | None:
    """True once the member runs again (a replica streams) with a postmaster newer than ``before``."""
    node: NodeView = api(ctx).node(url)
    if node.started is None or node.started == before or node.state != "running":
        return None
    if replica and node.replication_state != "streaming":
        return None
    return True


def _wait_back(ctx: PatroniContext[MemberInputs], what: str) -> None:
    url = str(ctx.recorded["url"])
    before = ctx.recorded.get("started")
    replica = bool(ctx.recorded.get("replica"))
    polled = ctx.poll(lambda: _back(ctx, url, before, replica), every=EVERY,
                      within=ctx.inputs.wait_seconds, retry_on=(Unreachable,))  # fmt: skip
    if not polled.done:
        raise StepError(
            f"{ctx.inputs.member} is not {'streaming' if replica else 'running'} again with a new "
            f"postmaster {polled.waited:.1f}s after the {what}. Members: {api(ctx).cluster().lines()}"
        )


def _verified(ctx: PatroniContext[MemberInputs]) -> bool:
    if "url" not in ctx.recorded:
        return False
    url = str(ctx.recorded["url"])
    replica = bool(ctx.recorded.get("replica"))
    polled = ctx.poll(lambda: _back(ctx, url, ctx.recorded.get("started"), replica),
                      every=EVERY, within=ctx.inputs.wait_seconds, retry_on=(Unreachable,))  # fmt: skip
    return polled.done


class Restart(PatroniStep[RestartInputs]):
    """Restart one member's PostgreSQL through Patroni, and prove it came back.

    ``POST /restart`` on the member (with ``restart_pending`` when ``pending_only``);
    Patroni restarts it and answers when done, or refuses (its text and the members'
    states are shown). ``verify``: the member's postmaster started after the step began,
    it runs, and a replica streams again — waited for up to ``wait_seconds``. With
    ``pending_only`` and nothing pending, nothing is restarted and the step succeeds.
    """

    name = "patroni.restart"
    Inputs = RestartInputs
    roles = frozenset({Role.MUTATING})

    def describe(self, inputs: RestartInputs, target: str | None) -> str:
        when = " if it is pending restart" if inputs.pending_only else ""
        return f"restart {inputs.member} of Patroni cluster {target}{when}, then verify it is back"

    def check(self, ctx: PatroniContext[RestartInputs]) -> str | None:
        _, member, _ = _member(ctx)
        if ctx.inputs.pending_only and not member.pending_restart:
            return f"{member.name} is not pending restart: nothing to do"
        return f"restart {member.line()}"

    def apply(self, ctx: PatroniContext[RestartInputs]) -> None:
        _, member, url = _member(ctx)
        if ctx.inputs.pending_only and not member.pending_restart:
            ctx.log(f"{member.name} is not pending restart")
            ctx.record("skipped", True)
            return
        node = api(ctx).node(url)
        ctx.record("url", url)
        ctx.record("started", node.started)
        ctx.record("replica", not member.is_leader)
        body = {"restart_pending": True} if ctx.inputs.pending_only else {}
        answer = api(ctx).request(url, "POST", "/restart", body)
        if answer.status != 200:
            raise refusal("restart", answer.status, answer.text, api(ctx).cluster())
        ctx.log(f"Patroni: {answer.text.strip()}")
        _wait_back(ctx, "restart")

    def verify(self, ctx: PatroniContext[RestartInputs]) -> bool:
        return bool(ctx.recorded.get("skipped")) or _verified(ctx)


class Reinit(PatroniStep[ReinitInputs]):
    """Reinitialize one replica through Patroni: its data wiped and cloned from the leader.

    ``POST /reinitialize`` on the member (``force`` to do it while its PostgreSQL runs);
    Patroni refuses on the leader. Then waits up to ``wait_seconds`` for the member to
    run and stream again with a new postmaster. ``verify``: the same, after the step
    began. The member's own data is discarded: everything it has comes from the leader.
    """

    name = "patroni.reinit"
    Inputs = ReinitInputs
    roles = frozenset({Role.MUTATING})

    def describe(self, inputs: ReinitInputs, target: str | None) -> str:
        return f"reinitialize replica {inputs.member} of Patroni cluster {target} from the leader"

    def check(self, ctx: PatroniContext[ReinitInputs]) -> str | None:
        _, member, _ = _member(ctx)
        if member.is_leader:
            raise StepError(f"{member.name} is the leader: only a replica can be reinitialized")
        return f"reinitialize {member.line()}"

    def apply(self, ctx: PatroniContext[ReinitInputs]) -> None:
        view, member, url = _member(ctx)
        if member.is_leader:
            raise StepError(f"{member.name} is the leader: only a replica can be reinitialized")
        node = api(ctx).node(url)
        ctx.record("url", url)
        ctx.record("started", node.started)
        ctx.record("replica", True)
        answer = api(ctx).request(url, "POST", "/reinitialize", {"force": ctx.inputs.force})
        if answer.status != 200:
            raise refusal("reinitialize", answer.status, answer.text, view)
        ctx.log(f"Patroni: {answer.text.strip()}")
        _wait_back(ctx, "reinitialize")

    def verify(self, ctx: PatroniContext[ReinitInputs]) -> bool:
        return _verified(ctx)
