"""The live check before a postgres step acts on a server Patroni manages.

A postgres target with ``managed_by: <patroni target>`` belongs to that Patroni
cluster: fencing, promoting, rejoining or repointing it behind Patroni's back races
Patroni's own HA loop (it restarts a stopped server, demotes a second primary, rewinds
or re-clones a node it disagrees with). So those steps call ``refuse_unless_paused``
right before they act, and go on only when every member's own view says paused.
"""

from __future__ import annotations

from drctl.errors import StepError, Unreachable
from drctl.runbook.targets import PatroniTarget, PostgresTarget
from drctl.steps.base import StepContext, StepInputs


def refuse_unless_paused(ctx: StepContext[StepInputs, PostgresTarget], action: str) -> None:
    """Raise a StepError unless the target is unmanaged or its Patroni cluster is paused.

    ``action`` names what the step would do ("promote", "fence"…), for the refusal.
    """
    name = ctx.target.managed_by
    if not name:
        return
    # Here, not at the top: every postgres step calls this, most for an unmanaged server.
    from drctl.providers.patroni.api import PatroniApi
    from drctl.providers.patroni.base import views_of

    cluster = ctx.target_named(name, PatroniTarget)
    try:
        seen = views_of(PatroniApi(cluster, ctx.remaining()), ctx)
    except Unreachable as exc:
        raise StepError(
            f"refusing to {action}: this server is managed by Patroni ({name}), and no member "
            f"of it answers, so nothing shows it is paused ({exc.message}). Pause it first "
            "(patroni.pause), or, if Patroni is gone for good, drop managed_by from the target"
        ) from exc
    running = seen.pause_seen(True)
    if running or not seen.cluster.paused:
        who = ", ".join(running) or "the cluster's configuration"
        raise StepError(
            f"refusing to {action}: this server is managed by Patroni ({name}), which is not "
            f"paused (in the view of {who}); acting behind its back races its HA loop. Pause "
            f"it first with a patroni.pause step (lint DR006), or move the leader with "
            f"patroni.switchover. Members: {seen.cluster.lines()}"
        )
    ctx.log(f"Patroni ({name}) is paused in every member's view: acting on a managed server")
