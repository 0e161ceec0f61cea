"""Gates other people open: who someone is, what an approval names, and the count.

An approval (``approval_given`` in the run's journal) names the plan hash and a digest of
the gate as it was shown (its rendered description and masked inputs), so an approval of
one plan or one rendering never opens another. At the gate the executor counts the
approvals that name the current plan and rendering, are younger than the policy's
``expires``, come from distinct people, and (with ``not_by_starter``) not from the
person who started the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drctl.compiler.plan import ApprovalPolicy, Settings
from drctl.engine import events as ev
from drctl.state.base import Event, RunRecord, StateStore


@dataclass(frozen=True)
class Identity:
    """A person as approvals name them, and the host they approve from."""

    name: str
    host: str
    #: Where the name came from: ``$VAR`` (an identity the runbook names) or ``os user``.
    source: str


def identity(settings: Settings, environ: Mapping[str, str] | None = None) -> Identity:
    """Whoever runs drctl here: the runbook's identity variable if set, else user@host."""
    from drctl.engine.runs import who

    me = who()
    env = os.environ if environ is None else environ
    named = settings.identity_env
    if named and env.get(named, "").strip():
        return Identity(env[named].strip(), me.host, f"${named}")
    return Identity(f"{me.user}@{me.host}", me.host, "os user")


def gate_digest(step: str, description: str, inputs: Any, plan_hash: str) -> str:
    """What an approval names besides the plan: the gate exactly as it is shown."""
    text = json.dumps(
        {"step": step, "description": description, "inputs": inputs, "plan": plan_hash},
        sort_keys=True,
        default=str,
    )
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Tally:
    """The approvals that count for a gate now, and those that no longer do."""

    approvers: tuple[str, ...]
    expired: tuple[str, ...]
    #: Approvals of another plan or another rendering of the gate.
    stale: tuple[str, ...]
    count: int

    @property
    def enough(self) -> bool:
        return len(self.approvers) >= self.count

    def words(self) -> str:
        given = ", ".join(self.approvers) or "none"
        out = f"{len(self.approvers)} of {self.count} approvals ({given})"
        if self.expired:
            out += f"; expired: {', '.join(self.expired)}"
        if self.stale:
            out += f"; void (another plan or gate text): {', '.join(self.stale)}"
        return out


def starter(events: Sequence[Event]) -> str:
    """Who started the run, as approvals name people."""
    for event in events:
        if event.kind == ev.RUN_STARTED:
            fact = ev.RunStarted.read(event)
            return fact.identity or f"{fact.user}@{fact.host}"
    return ""


def tally(
    events: Sequence[Event],
    step: str,
    plan_hash: str,
    digest: str,
    policy: ApprovalPolicy,
    now: float,
) -> Tally:
    """Count the approvals of gate ``step`` that open it now (see the module docstring)."""
    started_by = starter(events)
    good: dict[str, None] = {}
    expired: dict[str, None] = {}
    stale: dict[str, None] = {}
    for event in events:
        if event.kind != ev.APPROVAL_GIVEN or event.step != step:
            continue
        fact = ev.ApprovalGiven.read(event)
        if policy.not_by_starter and fact.by == started_by:
            continue  # refused when given; never counted
        if fact.plan_hash != plan_hash or fact.digest != digest:
            stale[fact.by] = None
        elif policy.expires is not None and now - event.ts > policy.expires:
            expired[fact.by] = None
        else:
            good[fact.by] = None
    return Tally(
        approvers=tuple(good),
        expired=tuple(b for b in expired if b not in good),
        stale=tuple(b for b in stale if b not in good and b not in expired),
        count=policy.count,
    )


def who_may(policy: ApprovalPolicy, started_by: str) -> str:
    """Who may approve, in words."""
    people = "people" if policy.count > 1 else "person"
    other = f" other than {started_by}" if policy.not_by_starter else ""
    expires = f", each good for {policy.expires:g}s" if policy.expires is not None else ""
    return f"{policy.count} {people}{other}{expires}"


@dataclass(frozen=True)
class Given:
    """What ``drctl approve`` approved, and where the gate stands after it."""

    step: str
    description: str
    plan_hash: str
    tally: Tally


def approve(
    store: StateStore, run: RunRecord, step_id: str, me: Identity, comment: str, now: float
) -> Given:
    """Journal ``me``'s approval of gate ``step_id`` of ``run``, as the run last showed it.

    Raises UsageError when the run is not waiting at that gate, ApprovalRefused (journaled
    too) when the approval cannot count.
    """
    import time

    from drctl.errors import ApprovalRefused, UsageError

    plan = run.plan()
    gates = [s.id for s in plan.steps if s.approve or "gate" in s.roles]
    if step_id not in gates:
        raise UsageError(
            f"run {run.id} has no gate {step_id!r}",
            hint=f"its gates: {', '.join(gates) or 'none'}",
        )
    events = store.events(run.id)
    shown = [e for e in events if e.kind == ev.APPROVAL_NEEDED and e.step == step_id]
    if not shown:
        raise UsageError(
            f"run {run.id} has not reached gate {step_id} yet: there is nothing to approve",
            hint="an approval names the gate as the run shows it; approve once it waits there",
        )
    needed = ev.ApprovalNeeded.read(shown[-1])
    policy = plan.step(step_id).approval or ApprovalPolicy()
    started_by = starter(events)
    if policy.not_by_starter and me.name == started_by:
        reason = f"{me.name} started the run; this gate needs {who_may(policy, started_by)}"
        refused = ev.ApprovalRefused(step=step_id, by=me.name, host=me.host, reason=reason)
        store.append(
            run.id, Event(refused.kind, time.time(), step_id, None, refused.to_json()), None
        )
        raise ApprovalRefused(f"approval of {step_id} refused: {reason}")
    before = tally(events, step_id, needed.plan_hash, needed.digest, policy, now)
    if me.name in before.approvers:
        raise ApprovalRefused(f"{me.name} has approved {step_id} already; {before.words()}")
    given = ev.ApprovalGiven(
        step=step_id, by=me.name, host=me.host, plan_hash=needed.plan_hash,
        digest=needed.digest, comment=comment, how="drctl approve",
    )  # fmt: skip
    store.append(run.id, Event(given.kind, now, step_id, None, given.to_json()), None)
    after = tally(store.events(run.id), step_id, needed.plan_hash, needed.digest, policy, now)
    return Given(step_id, needed.description, needed.plan_hash, after)
