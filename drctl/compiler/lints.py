"""Safety lints DR001–DR005: the mistakes that turn a failover into an outage.

Lints read step roles (declared by step types), never type names, so a plugin's
promote step is held to the same rules as the built-in one. A lint is an error
unless the runbook acknowledges it, on the step or for the whole runbook.

Each rule's exact logic is in ``LOGIC`` (the exit-codes page prints it). In short:

DR001  promote with no fence before it that must have taken effect: one neither under
       ``on_failure: continue`` nor behind a ``when:`` the promote does not share, and,
       for a promote whose target is decided at run time, one that cannot fence the
       target the promote takes; or a forced promote; a step that is a fence and a promote
       at once (Patroni's switchover demotes the leader first) is its own fence
DR002  promote with no lag / data-loss check before it that runs whenever the promote
       does (or accept_data_loss)
DR003  traffic repointed without depending on the promote
DR004  mutating step with no verification: its own verify, or a verify step after it,
       running whenever it does, on the same target or naming it in ``verifies:``
DR005  a literal secret in the runbook
DR006  a mutating postgres step (fence, promote, rejoin, follow) on a target
       ``managed_by`` a Patroni cluster with no ``patroni.pause`` of that cluster before
       it; a warning when no ``patroni.resume`` of it follows (the cluster stays paused)
DR007  a lag check before a promote allows more lag (bytes of WAL not received) than the
       promote itself does: a standby between the two limits passes the check, and the
       promote refuses it only after the fence — with no writable primary left
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    "DR007": "lag check before a promote allows more lag than the promote does",
}

#: Each rule's exact logic, as the exit-codes page states it. "Before" means a step the
#: checked step depends on (through ``requires``, transitively); a step "runs whenever"
#: another does when it has no ``when:``, ``when: true``, or the very same ``when:`` (an
#: instance of a fan-out over run-time targets runs only if listed: a ``when:`` of its own).
LOGIC = {
    "DR001": (
        "Fires on a step with the promote role unless it is not forced and some step with the "
        "fence role before it is sound: it is not under `on_failure: continue`, it runs "
        "whenever the promote does, and — when the promote's target is decided at run time — "
        "it cannot fence the target the promote takes (its target is not the promote's "
        "run-time target, nor any of the targets the promote may take). A forced promote "
        "always fires it."
    ),
    "DR002": (
        "Fires on a step with the promote role that does not set `accept_data_loss`, unless "
        "some step with the lag-check role (a lag check, `postgres.choose_primary`) before it "
        "runs whenever it does; and on every step that sets `accept_data_loss`."
    ),
    "terms": (
        "A step is *before* another when the other depends on it through `requires` "
        "(transitively). A step *runs whenever* another does when it has no `when:`, "
        "`when: true`, or the very same `when:` as the other; an instance of a `for_each` "
        "over targets decided at run time runs only if its target is listed, which counts "
        "as a `when:` of its own."
    ),
    "DR003": (
        "Fires on a step with the traffic role (a DNS change) that does not depend on every "
        "step with the promote role."
    ),
    "DR004": (
        "Fires on a step with the mutating role whose own `verify` proves nothing, unless a "
        "step with the verify role after it runs whenever it does and either acts on the same "
        "target (the same name; for a target decided at run time, the same template; for a "
        "step with no target, another with none) or names it in `verifies:`. Each instance "
        "of a fan-out is checked on its own target."
    ),
    "DR006": (
        "Fires on a mutating postgres step (fence, promote, rejoin, follow) on a target "
        "`managed_by` a Patroni cluster unless a `patroni.pause` of that cluster is before "
        "it; a warning (not an error) when no `patroni.resume` of it follows."
    ),
    "DR005": (
        "Fires on a literal value in a field whose name says it is secret (`password`, "
        "`token`, `tsig_secret`, …), a password in a URL or a DSN's `password=`, or a known "
        "credential shape (an AWS key id, a private key, a GitHub or Slack token), anywhere "
        "in the runbook; a secret reference or a template is never literal."
    ),
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
    #: Every target the step can take (one, the run-time choices, or none).
    targets: tuple[str, ...] = ()
    #: Equal for two steps exactly when they act on the same target at run time
    #: ("" for a step with no target).
    target_key: str = ""
    #: Base ids of the steps this step names in ``verifies:``.
    names_verified: frozenset[str] = frozenset()
    #: Bytes of WAL not received it lets through (StepType.lag_limit); None: no limit.
    lag_limit: int | None = None
    #: The target the step acts on, and the Patroni target that one is ``managed_by``.
    target: str | None = None
    managed_by: str | None = None

    @property
    def run_time_target(self) -> bool:
        return self.target_key.startswith("from:")


def _runs_whenever(support: LintSubject, step: LintSubject) -> bool:
    """Whether ``support`` runs on every path on which ``step`` runs, as far as ``when`` says."""
    return support.when is None or support.when is True or support.when == step.when


def _unsound_fence(fence: LintSubject, promote: LintSubject) -> str | None:
    """Why ``fence`` may not have taken effect when ``promote`` runs; None if it must have."""
    if fence.continues_on_failure:
        return (
            f"fence step {fence.id!r} has on_failure: continue, so the run goes on (and "
            "promotes) when it fails"
        )
    if not _runs_whenever(fence, promote):
        return (
            f"fence step {fence.id!r} runs only when {fence.when!r}, a condition "
            f"{promote.base_id} does not share, so it may be skipped while the promote runs"
        )
    if promote.run_time_target:
        if fence.target_key == promote.target_key:
            return f"fence step {fence.id!r} fences the very target {promote.base_id} promotes"
        shared = sorted(set(fence.targets) & set(promote.targets))
        if shared:
            return (
                f"fence step {fence.id!r} may fence {', '.join(shared)}, which "
                f"{promote.base_id} may promote (its target is decided at run time)"
            )
    return None


def _looser_checks(
    order: Sequence[LintSubject],
    checks: Sequence[int],
    anc: int,
    promote: LintSubject,
    add: Callable[[str, LintSubject, str], None],
) -> None:
    """DR007: a lag check the promote waits for that lets more lag through than it does."""
    limit = promote.lag_limit
    if limit is None or promote.accepts_data_loss:
        return
    for i in checks:
        check = order[i]
        if has(anc, i) and check.lag_limit is not None and check.lag_limit > limit:
            add(
                "DR007",
                check,
                f"{check.base_id}: allows {check.lag_limit} bytes of lag but {promote.base_id} "
                f"allows {limit}: a standby between the two passes the check and is refused "
                "by the promote only after the fence; use the promote's limit",
            )


@dataclass(frozen=True)
class Finding:
    """One lint's finding about a step: an error unless ``warning``."""

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


def graph_lints(  # noqa: PLR0915 (every rule in one pass over the plan order)
    order: Sequence[LintSubject], ancestors: Mapping[str, int]
) -> list[Finding]:
    """DR001–DR004 and DR006 over steps in plan order; one finding per (code, runbook step)."""
    pos = {s.id: i for i, s in enumerate(order)}
    at_role: dict[Role, list[int]] = {}
    for i, s in enumerate(order):
        for role in s.roles:
            at_role.setdefault(role, []).append(i)
    with_role = {role: bitset(at) for role, at in at_role.items()}
    promotes = [s for s in order if Role.PROMOTE in s.roles]
    # For DR004: the steps verify steps depend on (transitively), by what the verify step
    # checks (its target, or a step it names) and under which ``when``.
    by_target: dict[tuple[str, bool | str | None], int] = {}
    by_name: dict[tuple[str, bool | str | None], int] = {}
    for s in order:
        if Role.VERIFY in s.roles:
            key = (s.target_key, True if s.when is None else s.when)
            by_target[key] = by_target.get(key, 0) | ancestors[s.id]
            for name in s.names_verified:
                nkey = (name, True if s.when is None else s.when)
                by_name[nkey] = by_name.get(nkey, 0) | ancestors[s.id]

    def verified_later(s: LintSubject) -> bool:
        whens: tuple[bool | str | None, ...] = (True,) if s.when in (None, True) else (True, s.when)
        bits = 0
        for w in whens:
            bits |= by_target.get((s.target_key, w), 0) | by_name.get((s.base_id, w), 0)
        return has(bits, pos[s.id])

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
            checks = [order[i] for i in at_role.get(Role.LAG_CHECK, ()) if has(anc, i)]
            if not s.accepts_data_loss and not checks:
                add("DR002", s, f"{s.base_id}: promotes with no replication-lag check before it")
            elif not s.accepts_data_loss and not any(_runs_whenever(c, s) for c in checks):
                add(
                    "DR002",
                    s,
                    f"{s.base_id}: every replication-lag check before it runs only under a "
                    f"when: it does not share ({', '.join(repr(c.id) for c in checks)})",
                )
            _looser_checks(order, at_role.get(Role.LAG_CHECK, []), anc, s, add)
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
        if Role.MUTATING in s.roles and not s.verifies and not verified_later(s):
            # Worded as 0.1.0 did: lint messages are part of the plan hash.
            add("DR004", s, f"{s.base_id}: changes something and nothing verifies it")
        if s.managed_by and Role.MUTATING in s.roles:
            finding = _unpaused(s, order, at_role, ancestors, pos[s.id])
            if finding is not None:
                found.setdefault(("DR006", s.base_id), finding)
    return sorted(found.values(), key=lambda f: (f.code, f.base_id))
