"""A PlanDiff as text, markdown (pull-request comment) or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict

from drctl.compiler.diff import Change, PlanDiff
from drctl.render.values import inline, md_cell
from drctl.visible import visible


def _value(value: object) -> str:
    return "(none)" if value is None else inline(value)


def _change(c: Change) -> str:
    return f"{c.field}: {_value(c.old)} → {_value(c.new)}"


def as_json(diff: PlanDiff, old_source: str, new_source: str) -> str:
    data = asdict(diff)
    data.pop("extra")
    data.update({"equal": diff.equal, "old": old_source, "new": new_source})
    return visible(
        json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    )


def as_text(diff: PlanDiff, old_source: str, new_source: str) -> str:
    out = [f"--- {old_source}  {diff.old_hash}", f"+++ {new_source}  {diff.new_hash}"]
    if diff.equal:
        out.append("plans are identical")
        return visible("\n".join(out) + "\n")
    for c in diff.header:
        out.append(f"~ {_change(c)}")
    out.extend(f"+ step {i}" for i in diff.added)
    out.extend(f"- step {i}" for i in diff.removed)
    out.extend(f"↕ step {i} moved" for i in diff.moved)
    for sc in diff.changed:
        out.append(f"~ step {sc.id}")
        out.extend(f"    {_change(c)}" for c in sc.changes)
    out.extend(f"+ gate {g}" for g in diff.gates_added)
    out.extend(f"- gate {g}" for g in diff.gates_removed)
    out.extend(f"+ lint {lint}" for lint in diff.lints_added)
    out.extend(f"- lint {lint}" for lint in diff.lints_removed)
    return visible("\n".join(out) + "\n")


def as_markdown(diff: PlanDiff, old_source: str, new_source: str, *, level: int = 3) -> str:
    """The diff as a pull-request comment; ``level`` is the heading level (3 = ``###``)."""
    out = [f"{'#' * level} drctl diff: `{old_source}` → `{new_source}`", ""]
    if diff.equal:
        out += ["No change to the plan.", ""]
        return visible("\n".join(out))
    summary = []
    for label, items in (("added", diff.added), ("removed", diff.removed), ("moved", diff.moved)):
        if items:
            summary.append(f"{len(items)} {label}")
    if diff.changed:
        summary.append(f"{len(diff.changed)} changed")
    out.append("**Steps:** " + (", ".join(summary) if summary else "no step changes"))
    out.append("")
    if diff.lints_added or diff.lints_removed or diff.gates_added or diff.gates_removed:
        out.append("> [!WARNING]")
        out.append("> Safety-relevant changes:")
        out.extend(f"> - ⚠️ lint added: {md_cell(x)}" for x in diff.lints_added)
        out.extend(f"> - lint removed: {md_cell(x)}" for x in diff.lints_removed)
        out.extend(f"> - approval gate added: `{g}`" for g in diff.gates_added)
        out.extend(f"> - ⚠️ approval gate removed: `{g}`" for g in diff.gates_removed)
        out.append("")
    if diff.header:
        out.append("| runbook field | old | new |")
        out.append("|---|---|---|")
        out.extend(
            f"| `{c.field}` | {md_cell(_value(c.old))} | {md_cell(_value(c.new))} |"
            for c in diff.header
        )
        out.append("")
    for label, items in (("Added", diff.added), ("Removed", diff.removed), ("Moved", diff.moved)):
        if items:
            out.append(f"**{label}:** " + ", ".join(f"`{i}`" for i in items))
            out.append("")
    if diff.changed:
        out.append("<details><summary>Changed steps</summary>")
        out.append("")
        for sc in diff.changed:
            out.append(f"**`{sc.id}`**")
            out.append("")
            out.append("| field | old | new |")
            out.append("|---|---|---|")
            out.extend(
                f"| `{c.field}` | {md_cell(_value(c.old))} | {md_cell(_value(c.new))} |"
                for c in sc.changes
            )
            out.append("")
        out.append("</details>")
        out.append("")
    out.append(f"<sub>old `{diff.old_hash}` → new `{diff.new_hash}`</sub>")
    return visible("\n".join(out) + "\n")
