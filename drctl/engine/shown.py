"""What a person is shown of a step: its texts rendered with the values known at that moment.

There is one way to render, the compiler's sandboxed templating; this module only
decides what to show when a template cannot be rendered yet. A text is never shown
in braces: each ``{{ expression }}`` that reads a step which has not run says so in
words ("known once position-a has run"), and one that fails says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from drctl.compiler.plan import Plan
from drctl.compiler.templating import TemplateProblem, analyze, is_template, render
from drctl.runbook.targets import TARGET_TYPES

_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
#: A step id read in a (possibly cut) expression: ``steps.x`` or ``steps['x']``.
_STEP_NAME = re.compile(r"""steps(?:\.|\[\s*['"])([A-Za-z0-9_-]+)""")


def targets_view(plan: Plan) -> dict[str, dict[str, Any]]:
    """The plan's targets as templates see them: non-secret fields and their name."""
    view = {}
    for name, t in plan.targets.items():
        kind = TARGET_TYPES.get(t["type"])
        hidden = kind.secret_fields if kind is not None else frozenset()
        view[name] = {k: v for k, v in t.items() if k not in hidden} | {"name": name}
    return view


def plan_context(plan: Plan, outputs: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a template of ``plan`` can read before a step runs: params, targets, outputs so far."""
    return {
        "params": plan.params,
        "targets": targets_view(plan),
        "steps": steps_view(outputs or {}),
    }


def steps_view(outputs: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``steps.<id>.outputs`` for the steps done; a lone fan-out shard also under its base id."""
    steps: dict[str, Any] = {}
    by_base: dict[str, list[str]] = {}
    for sid, out in list(outputs.items()):
        steps[sid] = {"outputs": out}
        by_base.setdefault(sid.split("[", 1)[0], []).append(sid)
    for base, ids in by_base.items():
        if len(ids) == 1 and base not in steps:
            steps[base] = steps[ids[0]]
    return steps


def text(value: str, context: dict[str, Any]) -> str:
    """``value`` rendered for a person; what cannot be rendered yet is said in words."""
    if not is_template(value):
        return value
    try:
        return _as_text(render(value, context))
    except TemplateProblem as exc:
        whole = exc
    if "{%" in value or "{#" in value:
        return _unknown(value, context, whole)
    # Expression by expression: the params part of a text is known before its steps' part.
    out = _EXPRESSION.sub(lambda m: _expression(m.group(0), context), value)
    cut = out.find("{{")
    if cut >= 0:
        # A text shortened for a one-line description can end inside an expression.
        refs = sorted(set(_STEP_NAME.findall(out[cut:])) - set(context.get("steps", {})))
        out = out[:cut] + (f"(known once {', '.join(refs)} {_verb(refs)} run)" if refs else "…")
    return out


def value(raw: Any, context: dict[str, Any]) -> Any:
    """``raw`` (a step's inputs) with every template rendered for a person, as ``text`` does.

    A template that is one expression keeps its value's type when it renders.
    """
    if isinstance(raw, str):
        if not is_template(raw):
            return raw
        try:
            return render(raw, context)
        except TemplateProblem:
            return text(raw, context)
    if isinstance(raw, dict):
        return {k: value(v, context) for k, v in raw.items()}
    if isinstance(raw, list):
        return [value(v, context) for v in raw]
    return raw


def condition(when: str, context: dict[str, Any]) -> str:
    """Why a step's ``when`` is false, in words, with the values it read."""
    template = when if is_template(when) else "{{ " + when + " }}"
    try:
        info = analyze(template)
    except TemplateProblem:
        return "its when condition is false"
    shown: list[str] = []
    for ref in info.references:
        name = _dotted(ref.parts)
        if name in shown or ref.parts[0] not in context:
            continue
        try:
            got = render("{{ " + _expression_of(ref.parts) + " }}", context)
        except TemplateProblem:
            continue
        shown.append(f"{name} = {_as_text(got)!r}" if isinstance(got, str) else f"{name} = {got}")
        if len(shown) == 4:
            break
    values = f" ({', '.join(shown)})" if shown else ""
    return f"when {bare(when)} is false{values}"


def bare(when: str) -> str:
    """A ``when`` condition as its expression, without the braces around it."""
    return _EXPRESSION.sub(lambda m: m.group(0)[2:-2].strip(" -"), when).strip()


def reads(value: str) -> frozenset[str]:
    """The step ids a text's templates read (found in the text, so a cut one works too)."""
    return frozenset(_STEP_NAME.findall(value))


def _expression(template: str, context: dict[str, Any]) -> str:
    try:
        return _as_text(render(template, context))
    except TemplateProblem as exc:
        return _unknown(template, context, exc)


def _unknown(template: str, context: dict[str, Any], problem: TemplateProblem) -> str:
    try:
        refs = sorted(analyze(template).step_refs)
    except TemplateProblem:
        return "(cannot be shown: its template is not valid)"
    done = context.get("steps", {})
    waiting = [r for r in refs if r not in done]
    if waiting:
        return f"(known once {', '.join(waiting)} {_verb(waiting)} run)"
    return f"(cannot be shown: {problem.message.removeprefix('template: ')})"


def _verb(names: list[str]) -> str:
    return "has" if len(names) == 1 else "have"


def _as_text(got: Any) -> str:
    return got if isinstance(got, str) else str(got)


def _dotted(parts: tuple[str, ...]) -> str:
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() or not p.isidentifier() else f".{p}"
    return out


def _expression_of(parts: tuple[str, ...]) -> str:
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f"[{p!r}]"
    return out
