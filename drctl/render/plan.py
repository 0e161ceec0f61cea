"""A Plan as text (terminal), markdown (pull-request comment) or JSON."""

from __future__ import annotations

import json

from drctl.compiler.lints import TITLES
from drctl.compiler.plan import CompiledGuard, CompiledStep, Plan, expression_text
from drctl.engine import shown
from drctl.render.values import flatten, inline, md_cell
from drctl.runbook.durations import format_duration
from drctl.visible import visible


def as_json(plan: Plan) -> str:
    return visible(json.dumps(plan.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _gate(step: CompiledStep) -> str:
    return "approval required" if step.approve or "gate" in step.roles else ""


def _flags(step: CompiledStep) -> list[str]:
    flags = []
    if _gate(step):
        flags.append("gate")
    if step.mutates:
        flags.append("mutates")
    if step.when is False:
        flags.append("skipped (when is false)")
    elif isinstance(step.when, str):
        flags.append(f"when {shown.bare(step.when)} (at run time)")
    return flags


def _objectives(plan: Plan) -> str:
    parts = []
    for key in ("rto", "rpo"):
        value = plan.objectives.get(key)
        if value is not None:
            parts.append(f"{key.upper()} {format_duration(value)}")
    return ", ".join(parts) or "none"


def _fence_proofs(plan: Plan) -> dict[str, str]:
    """For each promote step, the fences on its path a promote may take as proof."""
    by_id = {s.id: s for s in (*plan.steps, *plan.fallbacks)}
    proofs = {}
    for step in plan.steps:
        if "promote" not in step.roles:
            continue
        path: set[str] = set()
        todo = list(step.requires)
        while todo:  # bounded: each step id is visited once
            sid = todo.pop()
            if sid not in path and sid in by_id:
                path.add(sid)
                todo.extend(by_id[sid].requires)
        fences = [
            f"{s.id} (fences {s.fenced_target})" if s.fenced_target else s.id
            for s in plan.steps
            if s.id in path and "fence" in s.roles
        ]
        old = step.inputs.get("old_primary")
        on_path = ", ".join(fences) if fences else "none"
        proofs[step.id] = (
            f"fence proof: a live probe of {old}, or a verified fence step on its path "
            f"fencing it; fence steps on its path: {on_path}"
            if isinstance(old, str)
            else f"fence proof: a verified fence step on its path that fences a named "
            f"server; fence steps on its path: {on_path}"
        )
    return proofs


def _details(step: CompiledStep, proof: str | None = None) -> list[str]:
    lines = []
    if proof:
        lines.append(proof)
    if step.requires:
        lines.append("requires: " + ", ".join(step.requires))
    if step.fences is not None:
        lines.append(f"fences: {step.fences} (a promote may take its verified success as proof)")
    if step.item_from is not None:
        lines.append(
            f"runs only if {step.item} is among {expression_text(step.item_from)} at run time "
            f"(one of {', '.join(step.target_choices)}); skipped otherwise"
        )
    for key, value in flatten(step.inputs).items():
        marker = (
            "  (at run time)"
            if any(
                key == d or key.startswith(d + ".")
                for d in (x.removeprefix("with.") for x in step.deferred)
            )
            else ""
        )
        lines.append(f"with.{key}: {inline(value)}{marker}")
    retries = step.retries
    extras = [f"timeout {format_duration(step.timeout)}"]
    if retries.attempts > 1:
        extras.append(f"retries {retries.attempts}× every {format_duration(retries.delay)}")
    on_failure = step.on_failure.describe()
    if on_failure != "abort":
        extras.append(f"on failure: {on_failure}")
    if step.rollback is not None:
        extras.append(f"rollback: {step.rollback.description}")
    elif step.can_undo:
        extras.append("undoable")
    lines.append("; ".join(extras))
    if step.lints:
        lines.append("lints: " + ", ".join(step.lints) + " (acknowledged)")
    lines.extend(f"guard while it runs: {_guard(g)}" for g in step.guards)
    return lines


def _guard(g: CompiledGuard) -> str:
    """One guard in words: what it reads, how often, and what a trip does."""
    s = g.step
    target = f" → {s.target}" if s.target else ""
    errors = "an unanswered reading counts" if g.error_trips else "unanswered readings ignored"
    return (
        f"{s.id}  {s.type}{target}: {s.description}; every {format_duration(g.every)}, "
        f"{g.on_trip.value} after {g.trip_after} failed reading{'s' if g.trip_after != 1 else ''} "
        f"in a row ({errors})"
    )


def as_text(plan: Plan) -> str:
    plan = plan.masked()
    out = [f"Plan: {plan.name}  ({plan.source})"]
    if plan.description:
        out.append(f"  {plan.description}")
    out.append(f"Hash: {plan.hash}")
    if plan.params:
        out.append("Params: " + ", ".join(f"{k}={inline(v)}" for k, v in plan.params.items()))
    out.append(f"Objectives: {_objectives(plan)}")
    if plan.targets:
        out.append("Targets: " + ", ".join(f"{n} ({t['type']})" for n, t in plan.targets.items()))
    out.append("")
    width = len(str(len(plan.steps)))
    proofs = _fence_proofs(plan)
    # Descriptions with the params filled in; what reads step outputs is said in words.
    known = shown.plan_context(plan)
    for n, step in enumerate(plan.steps, 1):
        target = f" → {step.target_text()}" if step.target_text() else ""
        flags = _flags(step)
        tail = f"  [{', '.join(flags)}]" if flags else ""
        out.append(f"{n:>{width}}. {step.id}  {step.type}{target}{tail}")
        pad = " " * (width + 2)
        out.append(f"{pad}{shown.text(step.description, known)}")
        out.extend(f"{pad}{line}" for line in _details(step, proofs.get(step.id)))
    if plan.fallbacks:
        out.append("")
        out.append("Fallbacks (run only when a step's on_failure names them):")
        for step in plan.fallbacks:
            target = f" → {step.target}" if step.target else ""
            out.append(f"  - {step.id}  {step.type}{target}: {step.description}")
    if plan.guards:
        out.append("")
        out.append("Guards (read from the run's start to its end; a trip stops the run):")
        out.extend(f"  - {_guard(g)}" for g in plan.guards)
    out.append("")
    if plan.lints:
        out.append("Safety lints:")
        for lint in plan.lints:
            state = "acknowledged" if lint.acknowledged else "warning" if lint.warning else "ERROR"
            out.append(f"  {lint.code} [{state}] {lint.message}")
    else:
        out.append("Safety lints: none fired")
    gates = sum(1 for s in plan.steps if _gate(s))
    out.append(
        f"{len(plan.steps)} steps, {sum(1 for s in plan.steps if s.mutates)} mutating, {gates} gate{'s' if gates != 1 else ''}."
    )
    return visible("\n".join(out) + "\n")


def as_markdown(plan: Plan, *, level: int = 3) -> str:
    """The plan as a pull-request comment; ``level`` is the heading level (3 = ``###``)."""
    plan = plan.masked()
    out = [f"{'#' * level} drctl plan: `{plan.name}`", ""]
    if plan.description:
        out += [plan.description, ""]
    out.append(f"- **Source:** `{plan.source}`")
    out.append(f"- **Plan hash:** `{plan.hash}`")
    out.append(f"- **Objectives:** {_objectives(plan)}")
    if plan.params:
        out.append(
            "- **Params:** " + ", ".join(f"`{k}={inline(v)}`" for k, v in plan.params.items())
        )
    gates = [s.id for s in plan.steps if _gate(s)]
    out.append("- **Gates:** " + (", ".join(f"`{g}`" for g in gates) if gates else "none"))
    out.append("")
    if plan.lints:
        out.append("**Safety lints**")
        out.append("")
        for lint in plan.lints:
            state = (
                "acknowledged" if lint.acknowledged else "warning" if lint.warning else "**error**"
            )
            out.append(f"- ⚠️ `{lint.code}` {TITLES[lint.code]} — {md_cell(lint.message)} ({state})")
        out.append("")
    out.append("| # | step | type | target | does | flags |")
    out.append("|---|---|---|---|---|---|")
    known = shown.plan_context(plan)
    for n, step in enumerate(plan.steps, 1):
        does = md_cell(shown.text(step.description, known))
        out.append(
            f"| {n} | `{step.id}` | `{step.type}` | {md_cell(step.target_text())} | {does} | {', '.join(_flags(step))} |"
        )
    out.append("")
    out.append("<details><summary>Step details</summary>")
    out.append("")
    proofs = _fence_proofs(plan)
    for n, step in enumerate(plan.steps, 1):
        out.append(f"**{n}. `{step.id}`**")
        out.append("")
        out.append("```")
        out.extend(_details(step, proofs.get(step.id)))
        out.append("```")
        out.append("")
    if plan.fallbacks:
        out.append("**Fallbacks**")
        out.append("")
        for step in plan.fallbacks:
            out.append(f"- `{step.id}` (`{step.type}`): {md_cell(step.description)}")
        out.append("")
    if plan.guards:
        out.append("**Guards**")
        out.append("")
        out.extend(f"- {md_cell(_guard(g))}" for g in plan.guards)
        out.append("")
    out.append("</details>")
    return visible("\n".join(out) + "\n")
