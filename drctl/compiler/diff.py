"""Plan-level differences between two compiled runbooks, for review.

Steps are matched by id. A step present in both plans is "moved" when it is not
part of the longest run of steps kept in the same relative order.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from drctl.compiler.plan import CompiledStep, Plan


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for k in sorted(value, key=str):
            out.update(_flatten(value[k], f"{prefix}.{k}"))
    else:
        out[prefix] = value
    return out


@dataclass(frozen=True)
class Change:
    """One field that differs: where, the old value and the new one (None when absent)."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class StepChange:
    id: str
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class PlanDiff:
    old_hash: str
    new_hash: str
    header: tuple[Change, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    moved: tuple[str, ...] = ()
    changed: tuple[StepChange, ...] = ()
    gates_added: tuple[str, ...] = ()
    gates_removed: tuple[str, ...] = ()
    lints_added: tuple[str, ...] = ()
    lints_removed: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return not (
            self.header
            or self.added
            or self.removed
            or self.moved
            or self.changed
            or self.gates_added
            or self.gates_removed
            or self.lints_added
            or self.lints_removed
        )


_STEP_FIELDS = (
    "type",
    "target",
    "description",
    "requires",
    "approve",
    "when",
    "timeout",
    "retries",
    "on_failure",
    "rollback",
    "roles",
)


def _step_fields(step: CompiledStep) -> dict[str, Any]:
    data: dict[str, Any] = {}
    wire = step.to_json()
    for name in _STEP_FIELDS:
        value = wire[name]
        data.update(_flatten(list(value) if isinstance(value, tuple) else value, name))
    data.update(_flatten(step.inputs, "with"))
    return data


def _compare(old: dict[str, Any], new: dict[str, Any]) -> tuple[Change, ...]:
    keys = sorted(set(old) | set(new))
    return tuple(Change(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k))


def _is_gate(step: CompiledStep) -> bool:
    return step.approve or "gate" in step.roles


def _lint_keys(plan: Plan) -> set[str]:
    return {
        f"{lint.code} {lint.step or '(runbook)'}{'' if lint.acknowledged else ' (unacknowledged)'}: {lint.message}"
        for lint in plan.lints
    }


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    old, new = old.masked(), new.masked()
    header_old = {"name": old.name, "description": old.description}
    header_new = {"name": new.name, "description": new.description}
    old_wire, new_wire = old.content(), new.content()
    for key in ("params", "objectives", "settings", "targets"):
        header_old.update(_flatten(old_wire[key], key))
        header_new.update(_flatten(new_wire[key], key))

    old_steps = {s.id: s for s in (*old.steps, *old.fallbacks)}
    new_steps = {s.id: s for s in (*new.steps, *new.fallbacks)}
    old_order = [s.id for s in old.steps]
    new_order = [s.id for s in new.steps]
    common_old = [i for i in old_order if i in new_steps]
    common_new = [i for i in new_order if i in old_steps]
    matcher = difflib.SequenceMatcher(None, common_old, common_new, autojunk=False)
    kept: set[str] = set()
    for block in matcher.get_matching_blocks():
        kept.update(common_old[block.a : block.a + block.size])

    changed = []
    for sid in new_order + [s.id for s in new.fallbacks]:
        if sid in old_steps:
            changes = _compare(_step_fields(old_steps[sid]), _step_fields(new_steps[sid]))
            if changes:
                changed.append(StepChange(sid, changes))

    old_gates = {s.id for s in old.steps if _is_gate(s)}
    new_gates = {s.id for s in new.steps if _is_gate(s)}
    old_lints, new_lints = _lint_keys(old), _lint_keys(new)
    return PlanDiff(
        old_hash=old.hash,
        new_hash=new.hash,
        header=_compare(header_old, header_new),
        added=tuple(i for i in new_order + [s.id for s in new.fallbacks] if i not in old_steps),
        removed=tuple(i for i in old_order + [s.id for s in old.fallbacks] if i not in new_steps),
        moved=tuple(i for i in common_new if i not in kept),
        changed=tuple(changed),
        gates_added=tuple(sorted(new_gates - old_gates)),
        gates_removed=tuple(sorted(old_gates - new_gates)),
        lints_added=tuple(sorted(new_lints - old_lints)),
        lints_removed=tuple(sorted(old_lints - new_lints)),
    )
