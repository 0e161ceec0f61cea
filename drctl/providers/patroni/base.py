"""``PatroniStep``: the target, the API and the per-member views every Patroni step shares."""

from __future__ import annotations

from dataclasses import dataclass

from drctl.errors import StepError, Unreachable
from drctl.providers.patroni.api import ClusterView, NodeView, PatroniApi
from drctl.runbook.targets import PatroniTarget
from drctl.steps.base import I, StepContext, StepType

#: The context a Patroni step type with inputs ``I`` gets.
PatroniContext = StepContext[I, PatroniTarget]

#: How often the steps ask Patroni again while waiting for a change.
EVERY = 0.25


def api(ctx: StepContext[I, PatroniTarget]) -> PatroniApi:
    return PatroniApi(ctx.target, ctx.remaining())


@dataclass(frozen=True)
class Views:
    """The cluster view, and each member's view of itself (None: it did not answer)."""

    cluster: ClusterView
    nodes: dict[str, NodeView | None]

    def pause_seen(self, paused: bool) -> list[str]:
        """The members whose own view is not ``paused`` (or that did not answer)."""
        return [n for n, v in sorted(self.nodes.items()) if v is None or v.paused is not paused]


def views(ctx: StepContext[I, PatroniTarget]) -> Views:
    """The cluster and every member's own status, asked now."""
    return views_of(api(ctx), ctx)


def views_of(client: PatroniApi, ctx: StepContext) -> Views:
    """The cluster and every member's own status, through ``client``; misses logged on ``ctx``."""
    cluster = client.cluster()
    nodes: dict[str, NodeView | None] = {}
    for name, url in client.member_urls(cluster).items():
        try:
            nodes[name] = client.node(url)
        except Unreachable as exc:
            ctx.log(f"member {name} does not answer: {exc.message}")
            nodes[name] = None
    return Views(cluster, nodes)


def refusal(action: str, status: int, text: str, cluster: ClusterView) -> StepError:
    """Patroni's refusal, with the members' states that explain it."""
    said = " ".join(text.split()) or "(no text)"
    return StepError(
        f"Patroni refused the {action} (HTTP {status}): {said!r:.300}. Members: {cluster.lines()}"
    )


class PatroniStep(StepType[I, PatroniTarget]):
    """Base of the ``patroni.*`` step types: a required ``patroni`` target."""

    target_types = frozenset({"patroni"})
    target_required = True

    def warm_up(self) -> None:
        import ssl  # noqa: F401
        import urllib.error
        import urllib.request  # noqa: F401
