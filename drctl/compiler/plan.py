"""The Plan: what a runbook compiles to, and what every later stage reads.

A plan is plain data (JSON-able inputs, sorted keys), so that the same runbook and
params give a byte-identical plan and the same hash on any machine and any
``PYTHONHASHSEED``. The hash leaves out where the runbook file lives: moving a file
does not change what it does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from drctl.compiler.secret_scan import mask

PLAN_FORMAT = 1


@dataclass(frozen=True)
class LintFinding:
    """A safety lint that fired on a step (or the whole runbook), and whether it was acknowledged."""

    code: str
    message: str
    step: str | None
    acknowledged: bool


@dataclass(frozen=True)
class CompiledStep:
    """One step of the plan, after templating and fan-out."""

    id: str
    base_id: str
    type: str
    target: str | None
    description: str
    inputs: dict[str, Any]
    #: Input paths (dotted) whose templates read earlier steps' outputs: rendered at run time.
    deferred: tuple[str, ...]
    requires: tuple[str, ...]
    approve: bool
    when: bool | str | None
    timeout: float
    retries: dict[str, Any]
    on_failure: str | dict[str, str]
    rollback: dict[str, Any] | None
    roles: tuple[str, ...]
    mutates: bool
    verifies: bool
    can_undo: bool
    item: Any = None
    #: The template name the for_each item is bound to (``as``), for run-time rendering.
    loop_var: str | None = None
    lints: tuple[str, ...] = ()
    fallback: bool = False

    def masked_inputs(self) -> dict[str, Any]:
        """The inputs as they may be shown (literal secrets as ``***``)."""
        masked: dict[str, Any] = mask(None, self.inputs)
        return masked


@dataclass(frozen=True)
class Plan:
    """A compiled runbook: ordered steps with rendered inputs, lints, and a stable hash."""

    name: str
    description: str
    source: str
    params: dict[str, Any]
    objectives: dict[str, float | None]
    settings: dict[str, Any]
    targets: dict[str, dict[str, Any]]
    steps: tuple[CompiledStep, ...]
    fallbacks: tuple[CompiledStep, ...]
    lints: tuple[LintFinding, ...]
    hash: str = field(default="")

    @cached_property
    def _masked(self) -> Plan:
        def step(s: CompiledStep) -> CompiledStep:
            inputs = mask(None, s.inputs)
            rollback = s.rollback
            if rollback is not None:
                rollback = {**rollback, "with": mask(None, rollback["with"])}
            if inputs == s.inputs and rollback == s.rollback:
                return s
            return replace(s, inputs=inputs, rollback=rollback)

        return replace(
            self,
            params={k: mask(k, v) for k, v in self.params.items()},
            targets=mask(None, self.targets),
            steps=tuple(step(s) for s in self.steps),
            fallbacks=tuple(step(s) for s in self.fallbacks),
        )

    def masked(self) -> Plan:
        """This plan with literal secrets (lint DR005) replaced by ``***``.

        The in-memory plan keeps literal values so the engine can run it; every
        rendered or stored form of a plan is made from this masked copy (computed once).
        """
        return self._masked

    def content(self) -> dict[str, Any]:
        """Everything that decides what the plan does (the hashed part), secrets masked."""
        shown = self.masked()
        # Built by hand: dataclasses.asdict deep-copies every input and was most of the
        # cost of compiling a 1,000-step fan-out. Nothing here is mutated afterwards.
        return {
            "name": shown.name,
            "description": shown.description,
            "params": shown.params,
            "objectives": shown.objectives,
            "settings": shown.settings,
            "targets": shown.targets,
            "steps": [_step_dict(s) for s in shown.steps],
            "fallbacks": [_step_dict(s) for s in shown.fallbacks],
            "lints": [
                {
                    "code": x.code,
                    "message": x.message,
                    "step": x.step,
                    "acknowledged": x.acknowledged,
                }
                for x in shown.lints
            ],
            "format": PLAN_FORMAT,
        }

    def to_dict(self) -> dict[str, Any]:
        data = self.content()
        data["source"] = self.source
        data["hash"] = self.hash
        return data

    def step(self, step_id: str) -> CompiledStep:
        for s in (*self.steps, *self.fallbacks):
            if s.id == step_id:
                return s
        raise KeyError(step_id)


_STEP_FIELDS = tuple(f.name for f in fields(CompiledStep))


def _step_dict(step: CompiledStep) -> dict[str, Any]:
    return {name: getattr(step, name) for name in _STEP_FIELDS}


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def plan_hash(plan: Plan) -> str:
    digest = hashlib.sha256(canonical_json(plan.content()).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """Rebuild a Plan from ``to_dict()`` output (a stored plan, for diffs on resume)."""

    def step(d: dict[str, Any]) -> CompiledStep:
        d = dict(d)
        for key in ("deferred", "requires", "roles", "lints"):
            d[key] = tuple(d.get(key) or ())
        return CompiledStep(**d)

    return Plan(
        name=data["name"],
        description=data["description"],
        source=data.get("source", ""),
        params=data["params"],
        objectives=data["objectives"],
        settings=data["settings"],
        targets=data["targets"],
        steps=tuple(step(s) for s in data["steps"]),
        fallbacks=tuple(step(s) for s in data["fallbacks"]),
        lints=tuple(LintFinding(**lint) for lint in data["lints"]),
        hash=data.get("hash", ""),
    )
