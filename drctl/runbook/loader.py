"""Loading a runbook file: YAML with positions → typed model, with every error positioned.

The header and each step are validated apart, so one broken step does not hide the
errors in the others; the compiler goes on with what did validate and reports
everything at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drctl.diagnostics import E_SCHEMA, E_SECRET_REF, E_TARGET, Diagnostic
from drctl.runbook.model import GuardSpec, RunbookHeader, StepSpec
from drctl.runbook.secrets import SecretRefSyntaxError, find_refs
from drctl.runbook.source import Loc, SourceDocument, load_yaml, read_text
from drctl.runbook.suggest import did_you_mean
from drctl.runbook.targets import TARGET_TYPES, TargetModel
from drctl.runbook.validation import validate_model


@dataclass(frozen=True)
class LocatedStep:
    """A validated step and where it sits in the document (``steps[3]``, ``fallbacks[0]``)."""

    spec: StepSpec
    loc: Loc


@dataclass
class LoadedRunbook:
    """What could be read from a runbook file, and the problems found doing so."""

    path: str
    document: SourceDocument
    header: RunbookHeader | None
    targets: dict[str, TargetModel]
    steps: list[LocatedStep]
    fallbacks: list[LocatedStep]
    #: The runbook's ``guards:`` (stop conditions), each read as a step.
    guards: list[tuple[GuardSpec, Loc]] = field(default_factory=list)
    #: Ids of steps that failed validation, so later checks don't cascade on them.
    broken_ids: set[str] = field(default_factory=set)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def load_runbook(path: str) -> LoadedRunbook:
    """Read and validate ``path``; raises RunbookInvalid only for unreadable or non-YAML input."""
    document = load_yaml(read_text(path), path)
    return load_document(document, path)


def load_document(document: SourceDocument, path: str) -> LoadedRunbook:
    srcmap = document.map
    diags: list[Diagnostic] = list(document.problems)
    data = document.data
    loaded = LoadedRunbook(path, document, None, {}, [], [], diagnostics=diags)
    if not isinstance(data, dict):
        diags.append(
            srcmap.diagnostic(
                E_SCHEMA, "a runbook is a mapping with apiVersion, kind, metadata, steps", ()
            )
        )
        return loaded
    diags.extend(_secret_ref_errors(data, (), srcmap))

    header_data = {k: v for k, v in data.items() if k not in ("steps", "fallbacks", "guards")}
    header, errs = validate_model(RunbookHeader, header_data, srcmap, ())
    diags.extend(errs)
    loaded.header = header if isinstance(header, RunbookHeader) else None

    targets = data.get("targets")
    if isinstance(targets, dict):
        for name, spec in targets.items():
            target = _load_target(str(name), spec, srcmap, diags)
            if target is not None:
                loaded.targets[str(name)] = target
        diags.extend(_managed_by_errors(targets, srcmap))

    for section, out in (("steps", loaded.steps), ("fallbacks", loaded.fallbacks)):
        raw = data.get(section)
        if raw is None:
            if section == "steps":
                diags.append(srcmap.diagnostic(E_SCHEMA, "runbook: missing field 'steps'", ()))
            continue
        if not isinstance(raw, list):
            diags.append(
                srcmap.diagnostic(E_SCHEMA, f"{section}: expected a list of steps", (section,))
            )
            continue
        if section == "steps" and not raw:
            diags.append(
                srcmap.diagnostic(E_SCHEMA, "steps: a runbook needs at least one step", (section,))
            )
        for i, item in enumerate(raw):
            spec, errs = validate_model(StepSpec, item, srcmap, (section, i))
            if isinstance(spec, StepSpec):
                out.append(LocatedStep(spec, (section, i)))
            else:
                diags.extend(errs)
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    loaded.broken_ids.add(item["id"])
    _load_guards(data.get("guards"), srcmap, loaded)
    return loaded


def _managed_by_errors(targets: dict[Any, Any], srcmap: Any) -> list[Diagnostic]:
    """A postgres target's ``managed_by`` must name a ``patroni`` target of the runbook."""
    out = []
    kinds = {str(n): s.get("type") if isinstance(s, dict) else None for n, s in targets.items()}
    for name, spec in targets.items():
        ref = spec.get("managed_by") if isinstance(spec, dict) else None
        if not isinstance(ref, str) or "{{" in ref or "{%" in ref:
            continue  # absent, a type error the model reports, or checked once rendered
        loc: Loc = ("targets", str(name), "managed_by")
        if ref not in kinds:
            out.append(srcmap.diagnostic(
                E_TARGET, f"targets.{name}.managed_by: no target named {ref!r}", loc,
                hint=did_you_mean(ref, kinds) or "name the patroni target of its cluster",
            ))  # fmt: skip
        elif kinds[ref] != "patroni":
            out.append(srcmap.diagnostic(
                E_TARGET, f"targets.{name}.managed_by: {ref!r} is a {kinds[ref]} target, not patroni",
                loc, hint="managed_by names the patroni target of the cluster that runs this server",
            ))  # fmt: skip
    return out


def _load_guards(raw: Any, srcmap: Any, loaded: LoadedRunbook) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        loaded.diagnostics.append(
            srcmap.diagnostic(E_SCHEMA, "guards: expected a list of guards", ("guards",))
        )
        return
    for i, item in enumerate(raw):
        guard, errs = validate_model(GuardSpec, item, srcmap, ("guards", i))
        if isinstance(guard, GuardSpec):
            loaded.guards.append((guard, ("guards", i)))
        else:
            loaded.diagnostics.extend(errs)


def _load_target(name: str, spec: Any, srcmap: Any, diags: list[Diagnostic]) -> TargetModel | None:
    loc: Loc = ("targets", name)
    if not isinstance(spec, dict):
        diags.append(srcmap.diagnostic(E_SCHEMA, f"targets.{name}: expected a mapping", loc))
        return None
    kind = spec.get("type")
    if not isinstance(kind, str):
        diags.append(srcmap.diagnostic(E_SCHEMA, f"targets.{name}: missing field 'type'", loc))
        return None
    model = TARGET_TYPES.get(kind)
    if model is None:
        diags.append(
            srcmap.diagnostic(
                E_TARGET,
                f"targets.{name}.type: unknown target type {kind!r}",
                (*loc, "type"),
                hint=did_you_mean(kind, TARGET_TYPES)
                or "known: " + ", ".join(sorted(TARGET_TYPES)),
            )
        )
        return None
    # A field written as a template (``port: "{{ params.port }}"``) is checked after the
    # compiler renders it; here only the fields written literally are.
    # An unknown key is refused whatever its value: a misspelt ``known_hots: "{{ … }}"``
    # must not leave the real field at its default.
    templated = {
        k
        for k, v in spec.items()
        if isinstance(v, str) and ("{{" in v or "{%" in v) and k in model.model_fields
    }
    literal = {k: v for k, v in spec.items() if k not in templated}
    target, errs = validate_model(model, literal, srcmap, loc)
    missing_templated = [
        d for d in errs if any(d.message.endswith(f"missing field {k!r}") for k in templated)
    ]
    errs = [d for d in errs if d not in missing_templated]
    diags.extend(errs)
    if errs:
        return None
    if isinstance(target, TargetModel) and not templated:
        return target
    return model.model_construct(**spec)


def _secret_ref_errors(value: Any, loc: Loc, srcmap: Any) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    stack: list[tuple[Any, Loc]] = [(value, loc)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            if "${" in node:
                try:
                    find_refs(node)
                except SecretRefSyntaxError as exc:
                    out.append(srcmap.diagnostic(E_SECRET_REF, str(exc), at))
        elif isinstance(node, dict):
            stack.extend((v, (*at, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*at, i)) for i, v in enumerate(node))
    return out
