"""Resolving a plan's secret references at execution time, all at once, up front.

Every reference is resolved before the first step runs, so a missing variable or
file stops the run before anything changes. Each value is registered with the
Redactor the moment it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from drctl.compiler.plan import Plan
from drctl.compiler.secret_scan import literal_secret, scan
from drctl.engine.redact import MIN_SECRET_LENGTH, Redactor
from drctl.errors import UsageError
from drctl.runbook.secrets import SecretUnavailable, find_refs, iter_strings, resolve
from drctl.runbook.targets import TARGET_TYPES, TargetModel


class Secrets:
    """Resolved references by their text (``${env:X}`` → value); values never leave here unredacted."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def apply(self, value: Any) -> Any:
        """``value`` with every reference replaced by its secret."""
        if isinstance(value, str):
            if "${" not in value:
                return value
            for ref in find_refs(value):
                value = value.replace(ref.text, self._values[ref.text])
            return value
        if isinstance(value, dict):
            return {k: self.apply(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.apply(v) for v in value]
        return value

    def target(self, name: str, fields: Mapping[str, Any]) -> TargetModel:
        """A plan's target as its own model, secret references resolved (for steps at run time).

        The compiler validated the same fields with the same model, so this fails only
        on a stored plan edited by hand; the error never quotes a value (it may be secret).
        """
        try:
            return TARGET_TYPES[str(fields["type"])].model_validate(self.apply(dict(fields)))
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            # Not "from exc": pydantic's error quotes the input, which may be a secret.
            raise UsageError(f"targets.{name}.{where}: {first['msg']}") from None


def resolve_plan_secrets(
    plan: Plan, redactor: Redactor, environ: Mapping[str, str] | None = None
) -> Secrets:
    """Resolve every reference in the plan; raises UsageError naming all that fail.

    A reference read only in a target's plain fields (an ssh target's ``user:
    ${env:USER}``, a ``data_dir``) is configuration, not a secret: its value is not
    masked, or every ``root`` in every message would be. Anywhere else — a secret field,
    a step's inputs, a param — its value is masked wherever it appears.
    """
    texts: set[str] = set()
    holders: list[Any] = [plan.targets, plan.params]
    guarded = (*plan.guards, *(g for s in plan.steps for g in s.guards))
    for step in (*plan.steps, *plan.fallbacks, *(g.step for g in guarded)):
        holders.append(step.inputs)
        if step.rollback is not None:
            holders.append(step.rollback.inputs)
    for holder in holders:
        for text in iter_strings(holder):
            if "${" in text:
                texts.update(ref.text for ref in find_refs(text))
        # Literal secrets (acknowledged DR005) are masked like resolved ones.
        for loc, _ in scan(holder):
            value: Any = holder
            for part in loc:
                value = value[part]
            if isinstance(value, str):
                redactor.add(value)
    # Configuration only: read in the targets' plain fields and nowhere else.
    elsewhere = {
        ref.text
        for holder in (_secret_fields(plan.targets), *holders[1:])
        for text in iter_strings(holder)
        if "${" in text
        for ref in find_refs(text)
    }
    plain = _plain_refs(plan.targets) - elsewhere
    texts -= plain
    values: dict[str, str] = {}
    problems: list[str] = []
    for text in sorted(plain):
        try:
            values[text] = resolve(text, dict(environ) if environ is not None else None)[1][0]
        except SecretUnavailable as exc:
            problems.append(str(exc))
    for text in sorted(texts):
        try:
            _, found = resolve(text, dict(environ) if environ is not None else None)
        except SecretUnavailable as exc:
            problems.append(str(exc))
            continue
        secret = found[0]
        if len(secret) < MIN_SECRET_LENGTH:
            problems.append(
                f"{text}: the value is shorter than {MIN_SECRET_LENGTH} characters and could not be masked"
            )
            continue
        redactor.add(secret)
        values[text] = secret
    if problems:
        raise UsageError(
            "cannot resolve secret references: " + "; ".join(problems),
            hint="set the variables or create the files before running; nothing was changed",
        )
    return Secrets(values)


def _is_secret_field(kind: str, key: str) -> bool:
    model = TARGET_TYPES.get(kind)
    return (model is not None and key in model.secret_fields) or literal_secret(
        key, "x"
    ) is not None


def _secret_fields(targets: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The targets' fields whose values are secrets (the rest is configuration)."""
    return {
        name: {k: v for k, v in fields.items() if _is_secret_field(str(fields.get("type")), k)}
        for name, fields in targets.items()
    }


def _plain_refs(targets: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """References read in the targets' plain (non-secret) fields."""
    found: set[str] = set()
    for fields in targets.values():
        for key, value in fields.items():
            if _is_secret_field(str(fields.get("type")), key):
                continue
            for text in iter_strings(value):
                if "${" in text:
                    found.update(ref.text for ref in find_refs(text))
    return found
