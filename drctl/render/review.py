"""``drctl review``: every runbook changed in a pull request, as one markdown document.

One summary table first (runbook, change, result), then a section per runbook: the
problems of an invalid one, the plan of an added one, the plan diff (and the new plan,
folded) of a modified one. Same inputs, same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from drctl.compiler.diff import PlanDiff, diff_plans
from drctl.compiler.plan import Plan
from drctl.diagnostics import Diagnostic
from drctl.render import diagnostics as render_diagnostics
from drctl.render import diff as render_diff
from drctl.render import plan as render_plan
from drctl.visible import visible


class ChangeKind(StrEnum):
    added = "added"
    modified = "modified"
    renamed = "renamed"
    deleted = "deleted"


@dataclass(frozen=True)
class Version:
    """One side of a change: the label it is shown under, its plan or its problems."""

    label: str
    plan: Plan | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    stand_ins: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.plan is not None


@dataclass(frozen=True)
class RunbookChange:
    """A runbook the change touches; ``new`` is None when deleted, ``old`` when added.

    ``path`` is where it is now (where it was, when deleted); ``old_path`` where it was.
    """

    path: str
    kind: ChangeKind
    old: Version | None
    new: Version | None
    old_path: str | None = None

    @property
    def invalid(self) -> bool:
        """The version after the change does not compile (a broken base version is not held
        against a change that fixes it)."""
        return self.new is not None and not self.new.valid

    @property
    def diff(self) -> PlanDiff | None:
        if self.old is None or self.new is None or self.old.plan is None or self.new.plan is None:
            return None
        return diff_plans(self.old.plan, self.new.plan)


def as_markdown(base: str, merge_base: str, changes: Sequence[RunbookChange]) -> str:
    changes = sorted(changes, key=lambda c: c.path)
    out = ["## drctl review", ""]
    where = f"against `{base}` (merge base `{merge_base[:12]}`)"
    if not changes:
        out += [f"No runbook changed {where}.", ""]
        return visible("\n".join(out))
    invalid = [c for c in changes if c.invalid]
    state = f"{len(invalid)} invalid" if invalid else "all valid"
    out += [f"{_count(len(changes), 'runbook')} changed {where}: {state}.", ""]
    out.append("| runbook | change | result |")
    out.append("|---|---|---|")
    out.extend(f"| `{c.path}` | {_kind(c)} | {_result(c)} |" for c in changes)
    out.append("")
    if invalid:
        out.append("> [!CAUTION]")
        out.append(
            f"> {_count(len(invalid), 'runbook')} will not compile: "
            + ", ".join(f"`{c.path}`" for c in invalid)
        )
        out.append("")
    for change in changes:
        out += ["---", ""]
        out.extend(_section(change))
    return visible("\n".join(out))


def _kind(change: RunbookChange) -> str:
    if change.kind is ChangeKind.renamed and change.old_path is not None:
        return f"renamed from `{change.old_path}`"
    return change.kind.value


def _result(change: RunbookChange) -> str:
    if change.new is None:
        return "🗑️ deleted"
    if not change.new.valid:
        return f"❌ invalid: {_count(_errors(change.new), 'error')}"
    diff = change.diff
    parts = ["✅ valid"]
    if change.old is not None and not change.old.valid:
        parts.append("base version was invalid")
    elif diff is not None:
        parts.append("plan unchanged" if diff.equal else "plan changed: " + _summary(diff))
        if _safety(diff):
            parts.append("⚠️ safety-relevant changes")
    if change.new.plan is not None and change.new.plan.lints:
        codes = sorted({lint.code for lint in change.new.plan.lints})
        parts.append("acknowledged lints " + ", ".join(codes))
    return "; ".join(parts)


def _summary(diff: PlanDiff) -> str:
    parts = [
        f"{len(items)} {label}"
        for label, items in (
            ("added", diff.added),
            ("removed", diff.removed),
            ("moved", diff.moved),
            ("changed", diff.changed),
        )
        if items
    ]
    return ", ".join(parts) or "runbook fields only"


def _safety(diff: PlanDiff) -> bool:
    return bool(diff.lints_added or diff.lints_removed or diff.gates_added or diff.gates_removed)


def _section(change: RunbookChange) -> list[str]:
    title = f"### `{change.path}` ({_kind(change)})"
    out = [title, ""]
    new, old = change.new, change.old
    if new is None:
        out += ["This runbook is deleted by the change.", ""]
        return out
    if not new.valid:
        out += [f"❌ **Invalid** — {_count(_errors(new), 'error')}:", ""]
        out.extend(_code_block(render_diagnostics.as_text(new.diagnostics)))
        out.append("")
        return out
    assert new.plan is not None
    stand_ins = sorted(set(new.stand_ins) | set(old.stand_ins if old is not None else ()))
    if stand_ins:
        names = ", ".join(f"`{n}`" for n in stand_ins)
        out += [f"Planned with stand-ins for required params {names}.", ""]
    diff = change.diff
    if old is not None and diff is not None:
        out.append(render_diff.as_markdown(diff, old.label, new.label, level=4))
        out += ["<details><summary>The plan after the change</summary>", ""]
        out.append(render_plan.as_markdown(new.plan, level=4))
        out += ["</details>", ""]
        return out
    if old is not None:
        out += [
            f"The base version `{old.label}` does not compile "
            f"({_count(_errors(old), 'error')}), so there is no plan diff:",
            "",
        ]
        out.extend(_code_block(render_diagnostics.as_text(old.diagnostics)))
        out.append("")
    out.append(render_plan.as_markdown(new.plan, level=4))
    return out


def _errors(version: Version) -> int:
    return sum(1 for d in version.diagnostics if d.severity.value == "error") or len(
        version.diagnostics
    )


def _code_block(text: str) -> list[str]:
    fence = "```"
    while fence in text:
        fence += "`"
    return [fence + "text", *text.rstrip("\n").split("\n"), fence]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
