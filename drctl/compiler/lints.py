"""Safety lints DR001–DR005: the mistakes that turn a failover into an outage.

Lints read step roles (declared by step types), never type names, so a plugin's
promote step is held to the same rules as the built-in one. A lint is an error
unless the runbook acknowledges it, on the step or for the whole runbook.

DR001  promote with no fence of the old primary before it that cannot be skipped (one
       under ``on_failure: continue`` or behind a ``when:`` the promote does not share
       does not count), or a forced promote; a step that is a fence and a promote at
       once (Patroni's switchover demotes the leader first) is its own fence
DR002  promote with no lag / data-loss check before it (or accept_data_loss)
DR003  traffic repointed without depending on the promote
DR004  mutating step with no verification (its own verify, or a verify step after it)
DR005  a literal secret in the runbook
DR006  a mutating postgres step (fence, promote, rejoin, follow) on a target
       ``managed_by`` a Patroni cluster with no ``patroni.pause`` of that cluster before
       it; a warning when no ``patroni.resume`` of it follows (the cluster stays paused)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drctl.compiler.graph import bitset, has
from drctl.steps.base import Role

TITLES = {
    "DR001": "promote without a fence of the old primary before it that cannot be skipped",
    "DR002": "promote without a replication-lag or data-loss check before it",
    "DR003": "traffic repointed before the promote it depends on",
    "DR004": "mutating step without verification",
    "DR005": "literal secret in the runbook",
    "DR006": "change to a Patroni-managed server while Patroni is not paused",
}


@dataclass(frozen=True)
class LintSubject:
    """What the lints need to know about one compiled step."""

    id: str
    base_id: str
    roles: frozenset[Role]
    verifies: bool
    forced: bool
    accepts_data_loss: bool
    #: ``on_failure: continue``: the run goes on when this step fails.
    continues_on_failure: bool = False
    #: The step's ``when`` as compiled: None or True runs it always.
    when: bool | str | None = None
    #: The target the step acts on, and the Patroni target that one is ``managed_by``.
    target: str | None = None
    managed_by: str | None = None


def _unsound_fence(fence: LintSubject, promote: LintSubject) -> str | None:
    """Why ``fence`` may not have taken effect when ``promote`` runs; None if it must have."""
    if fence.continues_on_failure:
        return (
            f"fence step {fence.id!r} has on_failure: continue, so the run goes on (and "
            "promotes) when it fails"
        )
    if fence.when is not None and fence.when is not True and fence.when != promote.when:
        return (
            f"fence step {fence.id!r} runs only when {fence.when!r}, a condition "
            f"{promote.base_id} does not share, so it may be skipped while the promote runs"
        )
    return None


@dataclass(frozen=True)
class Finding:
    code: str
    base_id: str
    message: str
    #: Where in the document, when more precise than the step (a literal secret's value).
    loc: tuple[str | int, ...] | None = None
    #: Shown in the plan, never an error.
    warning: bool = False


def _unpaused(
    s: LintSubject,
    order: Sequence[LintSubject],
    at_role: dict[Role, list[int]],
    ancestors: Mapping[str, int],
    at: int,
) -> Finding | None:
    """DR006 for one step on a managed target: no pause of its cluster before it (an error),
    or no resume of it after (a warning)."""
    cluster = s.managed_by
    pauses = [i for i in at_role.get(Role.HA_PAUSE, []) if order[i].target == cluster]
    if not any(has(ancestors[s.id], i) for i in pauses):
        return Finding(
            "DR006", s.base_id,
            f"{s.base_id}: changes {s.target}, which Patroni cluster {cluster} manages, with no "
            f"patroni.pause of {cluster} before it: Patroni would fight the change (run time "
            "refuses it too while the cluster is not paused)",
        )  # fmt: skip
    resumes = [i for i in at_role.get(Role.HA_RESUME, []) if order[i].target == cluster]
    if not any(has(ancestors[order[i].id], at) for i in resumes):
        return Finding(
            "DR006", s.base_id,
            f"{s.base_id}: no patroni.resume of {cluster} follows, so the cluster stays paused "
            "(no automatic failover) after the run",
            warning=True,
        )  # fmt: skip
    return None


def graph_lints(order: Sequence[LintSubject], ancestors: Mapping[str, int]) -> list[Finding]:
    """DR001–DR004 and DR006 over steps in plan order; one finding per (code, runbook step)."""
    pos = {s.id: i for i, s in enumerate(order)}
    at_role: dict[Role, list[int]] = {}
    for i, s in enumerate(order):
        for role in s.roles:
            at_role.setdefault(role, []).append(i)
    with_role = {role: bitset(at) for role, at in at_role.items()}
    promotes = [s for s in order if Role.PROMOTE in s.roles]
    # Every step that some verify step depends on, transitively: those are verified later.
    verified_later = 0
    for s in order:
        if Role.VERIFY in s.roles:
            verified_later |= ancestors[s.id]
    found: dict[tuple[str, str], Finding] = {}

    def add(code: str, s: LintSubject, message: str) -> None:
        found.setdefault((code, s.base_id), Finding(code, s.base_id, message))

    for s in order:
        anc = ancestors[s.id]
        if Role.PROMOTE in s.roles:
            if s.forced:
                add(
                    "DR001",
                    s,
                    f"{s.base_id}: forced promote skips the check that the old primary is fenced",
                )
            elif Role.FENCE in s.roles:
                pass  # it fences the old primary itself (Patroni demotes before it promotes)
            elif not anc & with_role.get(Role.FENCE, 0):
                add("DR001", s, f"{s.base_id}: promotes with no fence step before it")
            else:
                fences = [order[i] for i in at_role[Role.FENCE] if has(anc, i)]
                why = [_unsound_fence(f, s) for f in fences]
                if all(w is not None for w in why):
                    add(
                        "DR001",
                        s,
                        f"{s.base_id}: promotes with no fence before it that cannot be skipped: "
                        + "; ".join(w for w in why if w is not None),
                    )
            if not s.accepts_data_loss and not anc & with_role.get(Role.LAG_CHECK, 0):
                add("DR002", s, f"{s.base_id}: promotes with no replication-lag check before it")
        if s.accepts_data_loss:
            # Any step that may drop acknowledged writes (a promote past its lag limit, a
            # forced replica-set reconfig) must say so in the runbook.
            add("DR002", s, f"{s.base_id}: accept_data_loss may lose acknowledged writes")
        if Role.TRAFFIC in s.roles:
            for p in promotes:
                if not has(anc, pos[p.id]):
                    add(
                        "DR003",
                        s,
                        f"{s.base_id}: repoints traffic but does not depend on promote step {p.id!r}",
                    )
                    break
        if Role.MUTATING in s.roles and not s.verifies and not has(verified_later, pos[s.id]):
            add("DR004", s, f"{s.base_id}: changes something and nothing verifies it")
        if s.managed_by and Role.MUTATING in s.roles:
            finding = _unpaused(s, order, at_role, ancestors, pos[s.id])
            if finding is not None:
                found.setdefault(("DR006", s.base_id), finding)
    return sorted(found.values(), key=lambda f: (f.code, f.base_id))
