"""The compiler pipeline: runbook file + params → Plan, or every error found.

load (positions kept) → params bound → step types and targets resolved → templates
checked and rendered → ``for_each`` expanded → inputs validated → dependency graph
→ safety lints → Plan with a stable hash. Offline and deterministic: no network,
no credentials, no client library imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from drctl.compiler.graph import CycleError, ancestor_bits, has, topological_order
from drctl.compiler.lints import TITLES, Finding, LintSubject, graph_lints
from drctl.compiler.params import ParamInput, bind_params
from drctl.compiler.plan import (
    ApprovalPolicy,
    CompiledGuard,
    CompiledStep,
    FailurePolicy,
    LintFinding,
    OnFailure,
    Plan,
    Retries,
    Rollback,
    Settings,
    TargetRef,
    TripAction,
    plan_hash,
)
from drctl.compiler.secret_scan import scan
from drctl.compiler.templating import TemplateProblem, analyze, is_template, render
from drctl.diagnostics import (
    E_CYCLE,
    E_DUPLICATE_ID,
    E_FOR_EACH,
    E_GUARD,
    E_REQUIRES,
    E_STEP_INPUTS,
    E_STEP_REFERENCE,
    E_TARGET,
    E_TEMPLATE_NAME,
    E_TEMPLATE_SYNTAX,
    E_UNKNOWN_FIELD,
    E_UNKNOWN_STEP_TYPE,
    Diagnostic,
)
from drctl.errors import RunbookInvalid, StepTypeError
from drctl.runbook import model
from drctl.runbook.loader import LoadedRunbook, LocatedStep, load_runbook
from drctl.runbook.model import Fallback, StepSpec
from drctl.runbook.source import Loc
from drctl.runbook.suggest import did_you_mean
from drctl.runbook.targets import TargetModel
from drctl.runbook.validation import to_diagnostics
from drctl.steps.base import Role, StepInputs, StepType
from drctl.steps.registry import get_step_type

#: The default and the largest ``settings.max_steps`` (kept in step with the model's bounds).
MAX_STEPS = 10_000
MAX_STEPS_CEILING = 50_000

_JINJA_GLOBALS = frozenset({"range", "lipsum", "dict", "cycler", "joiner", "namespace", "loop"})


def compile_runbook(
    path: str, given: ParamInput | None = None, *, placeholders: bool = False
) -> Plan:
    """Compile the runbook at ``path``; raises RunbookInvalid with every problem found.

    ``placeholders`` (used by ``drctl validate``) lets required params be missing.
    """
    return _Compiler(load_runbook(path), given or ParamInput(), placeholders).run()


@dataclass(frozen=True)
class _Derived:
    """What a step type derives from a step's validated inputs (and its target's name)."""

    roles: frozenset[Role]
    description: str
    verifies: bool
    undoable: bool
    forced: bool
    accepts_data_loss: bool

    @classmethod
    def of(cls, step_type: StepType, inputs: StepInputs, target: str | None) -> _Derived:
        return cls(
            roles=step_type.step_roles(inputs),
            description=step_type.describe(inputs, target),
            verifies=step_type.verifies(inputs),
            undoable=step_type.undoable(inputs),
            forced=getattr(inputs, "force", False) is True,
            accepts_data_loss=getattr(inputs, "accept_data_loss", False) is True,
        )


@dataclass
class _Instance:
    step: CompiledStep
    spec: StepSpec
    loc: Loc
    subject: LintSubject
    step_refs: dict[str, Loc] = field(default_factory=dict)


class _Compiler:
    def __init__(self, loaded: LoadedRunbook, given: ParamInput, placeholders: bool) -> None:
        self.loaded = loaded
        self.given = given
        self.placeholders = placeholders
        self.srcmap = loaded.document.map
        self.diags: list[Diagnostic] = list(loaded.diagnostics)
        self._seen: set[tuple[str, str, str]] = set()
        self.header = loaded.header
        raw = loaded.document.data if isinstance(loaded.document.data, dict) else {}
        raw_targets = raw.get("targets")
        self.target_names = set(raw_targets) if isinstance(raw_targets, dict) else set()
        self.params: dict[str, Any] = {}
        self.targets_ctx: dict[str, dict[str, Any]] = {}
        #: Step instances the for_each lists seen so far expand to (see _fan_out_fits).
        self.planned = 0

    def error(
        self, code: str, message: str, loc: Loc, *, key: bool = False, hint: str | None = None
    ) -> None:
        marker = (code, repr(loc), message)
        if marker in self._seen:
            return  # the same problem in every fan-out instance is one problem
        self._seen.add(marker)
        self.diags.append(self.srcmap.diagnostic(code, message, loc, key=key, hint=hint))

    # -- pipeline -------------------------------------------------------------

    def run(self) -> Plan:
        header = self.header
        if header is not None:
            self.params, _, errs = bind_params(
                header.params,
                self.given,
                self.loaded.path,
                self.srcmap,
                placeholders=self.placeholders,
            )
            self.diags.extend(errs)
        self._render_targets()
        self.targets_ctx = {
            name: _template_view(name, t) for name, t in sorted(self.loaded.targets.items())
        }
        self._check_duplicate_ids()
        instances: list[_Instance] = []
        by_base: dict[str, list[str]] = {}
        for located in self.loaded.steps:
            made = self._compile_step(located, fallback=False)
            instances.extend(made)
            by_base.setdefault(located.spec.id, []).extend(i.step.id for i in made)
        fallbacks: list[_Instance] = []
        for located in self.loaded.fallbacks:
            fallbacks.extend(self._compile_step(located, fallback=True))
        fallback_ids = {f.spec.id for f in self.loaded.fallbacks} | self.loaded.broken_ids
        guards = self._guards(self.loaded.guards)

        ordered, deps = self._graph(instances, by_base)
        findings = self._check_refs_and_lint(ordered, deps, by_base, fallback_ids)
        if any(d.severity.value == "error" for d in self.diags):
            raise RunbookInvalid(self.diags)
        assert header is not None
        lint_by_step: dict[str, list[str]] = {}
        for f in findings:
            if f.step is not None:
                lint_by_step.setdefault(f.step, []).append(f.code)
        steps = tuple(
            _with(
                i.step,
                requires=tuple(deps[i.step.id]),
                lints=tuple(lint_by_step.get(i.spec.id, ())),
            )
            for i in ordered
        )
        plan = Plan(
            name=header.metadata.name,
            description=header.metadata.description,
            source=self.loaded.path,
            params=dict(sorted(self.params.items())),
            objectives={"rto": header.objectives.rto, "rpo": header.objectives.rpo},
            settings=_settings(header.settings),
            targets={
                n: t.model_dump(exclude_none=True) for n, t in sorted(self.loaded.targets.items())
            },
            steps=steps,
            fallbacks=tuple(f.step for f in fallbacks),
            lints=tuple(findings),
            guards=guards,
        )
        return _with_hash(plan)

    def _guards(self, guards: list[tuple[model.GuardSpec, Loc]]) -> tuple[CompiledGuard, ...]:
        """``guards:`` (of the runbook or of one step): each compiled as a step (inputs,
        target, templates over params), and refused unless its step type only reads."""
        out = []
        ids = {s.spec.id for s in (*self.loaded.steps, *self.loaded.fallbacks)}
        seen: set[str] = set()
        for guard, loc in guards:
            if guard.id in ids or guard.id in seen:
                self.error(
                    E_DUPLICATE_ID,
                    f"duplicate id {guard.id!r}: guards share steps' ids",
                    (*loc, "id"),
                )
                continue
            seen.add(guard.id)
            made = self._compile_step(LocatedStep(guard.as_step(), loc), fallback=True)
            if not made:
                continue
            step = made[0].step
            if step.mutates:
                self.error(
                    E_GUARD,
                    f"guard {guard.id}: {guard.type} changes something; a guard only reads",
                    (*loc, "type"),
                    hint="use a read-only step type (postgres.sql, http, dns.resolve, shell "
                    "with mutates: false, …)",
                )
                continue
            if step.deferred:
                self.error(
                    E_GUARD,
                    f"guard {guard.id}: its inputs read steps' outputs; a guard reads from "
                    "the run's start, before any step ran",
                    (*loc, "with"),
                )
                continue
            out.append(
                CompiledGuard(
                    step=step,
                    every=guard.every,
                    trip_after=guard.trip_after,
                    on_trip=TripAction(guard.on_trip),
                    error_trips=guard.on_error == "trip",
                )
            )
        return tuple(out)

    def _render_targets(self) -> None:
        """Target fields may be templates over params (a port, a data directory)."""
        for name, target in list(self.loaded.targets.items()):
            fields = target.model_dump(exclude_none=True, warnings=False)
            rendered: dict[str, Any] = {}
            failed = False
            for key, value in fields.items():
                if isinstance(value, str) and is_template(value):
                    loc = ("targets", name, key)
                    out = self._render_value(value, {"params": self.params}, loc, "", {})
                    if isinstance(out, _Deferred):
                        self.error(
                            E_TEMPLATE_NAME,
                            f"targets.{name}.{key}: a target cannot read steps' outputs",
                            loc,
                        )
                        failed = True
                    elif out is _FAILED:
                        failed = True
                    else:
                        rendered[key] = _field_value(out)
            if rendered and not failed:
                self._validate_rendered_target(name, target, {**fields, **rendered}, rendered)

    def _validate_rendered_target(
        self, name: str, target: TargetModel, fields: dict[str, Any], rendered: dict[str, Any]
    ) -> None:
        """Check a target once its templates are rendered, at the templates' places."""
        from dataclasses import replace

        model = type(target)
        try:
            self.loaded.targets[name] = model.model_validate(fields)
        except ValidationError as exc:
            for found in to_diagnostics(exc, model, fields, self.srcmap, ("targets", name)):
                d = found
                key = d.message.split(":", 1)[0].rsplit(".", 1)[-1]
                if key in rendered:
                    shown = repr(rendered[key])
                    shown = shown if len(shown) <= 60 else shown[:57] + "..."
                    d = replace(d, message=f"{d.message} (its template rendered {shown})")
                marker = (d.code, d.location, d.message)
                if marker not in self._seen:
                    self._seen.add(marker)
                    self.diags.append(d)

    def _check_duplicate_ids(self) -> None:
        seen: dict[str, Loc] = {}
        for located in (*self.loaded.steps, *self.loaded.fallbacks):
            sid = located.spec.id
            if sid in seen:
                first = self.srcmap.position(seen[sid])
                where = f" (first at line {first.line})" if first else ""
                self.error(
                    E_DUPLICATE_ID, f"duplicate step id {sid!r}{where}", (*located.loc, "id")
                )
            else:
                seen[sid] = located.loc

    # -- one step -------------------------------------------------------------

    def _step_type(self, type_name: str, loc: Loc) -> StepType | None:
        try:
            return get_step_type(type_name)
        except StepTypeError as exc:
            self.error(E_UNKNOWN_STEP_TYPE, f"{exc.message}", loc, hint=exc.hint)
            return None

    def _check_target(self, step_type: StepType, target: str | None, loc: Loc) -> None:
        kinds = step_type.target_types
        if target is None:
            if step_type.target_required:
                self.error(
                    E_TARGET,
                    f"step type {step_type.name!r} needs a target of type {' or '.join(sorted(kinds))}",
                    loc,
                )
            return
        tloc = (*loc, "target")
        if target not in self.target_names:
            self.error(
                E_TARGET,
                f"unknown target {target!r}",
                tloc,
                hint=did_you_mean(target, self.target_names)
                or (
                    "declared: " + ", ".join(sorted(self.target_names))
                    if self.target_names
                    else "declare it under targets:"
                ),
            )
            return
        model = self.loaded.targets.get(target)
        if model is None:
            return  # the target itself is invalid and already reported
        if not kinds:
            self.error(E_TARGET, f"step type {step_type.name!r} takes no target", tloc)
        elif model.type not in kinds:
            self.error(
                E_TARGET,
                f"step type {step_type.name!r} acts on {' or '.join(sorted(kinds))} targets; "
                f"{target!r} is a {model.type} target",
                tloc,
            )

    def _items(self, spec: StepSpec, loc: Loc) -> list[tuple[str | None, Any]] | None:
        if spec.for_each is None:
            return [(None, None)]
        floc = (*loc, "for_each")
        values: Any = spec.for_each
        if isinstance(values, str):
            context = {"params": self.params, "targets": self.targets_ctx}
            rendered = self._render_value(values, context, floc, spec.as_, {})
            if rendered is _FAILED:
                return None
            if isinstance(rendered, _Deferred):
                self.error(
                    E_FOR_EACH,
                    "for_each must be known at plan time; it cannot read steps' outputs",
                    floc,
                )
                return None
            values = rendered
        if not isinstance(values, list):
            self.error(E_FOR_EACH, f"for_each must give a list, got {type(values).__name__}", floc)
            return None
        if not self._fan_out_fits(len(values), floc):
            return None
        out: list[tuple[str | None, Any]] = []
        seen: set[str] = set()
        for index, item in enumerate(values):
            key = item.get("id", item.get("name", index)) if isinstance(item, dict) else item
            key_text = str(key)
            if not key_text or any(c in key_text for c in "[]\n"):
                self.error(
                    E_FOR_EACH, f"for_each item {key_text!r} cannot name a step instance", floc
                )
                return None
            if key_text in seen:
                self.error(
                    E_FOR_EACH,
                    f"for_each gives {key_text!r} twice; instance ids must be unique",
                    floc,
                )
                return None
            seen.add(key_text)
            out.append((key_text, item))
        return out

    def _fan_out_fits(self, count: int, loc: Loc) -> bool:
        """Refuse, before expanding it, a fan-out that takes the plan past ``max_steps``.

        Compiling costs memory per step and dependency checks grow with the square of
        the step count (see docs/limits.md), so the bound is checked up front.
        """
        limit = self.header.settings.max_steps if self.header is not None else MAX_STEPS
        planned = self.planned + count - 1
        if planned + len(self.loaded.steps) + len(self.loaded.fallbacks) <= limit:
            self.planned = planned
            return True
        self.error(
            E_FOR_EACH,
            f"for_each gives {count} items: the plan would have more than {limit} steps",
            loc,
            hint=f"split the runbook, or raise the limit with 'settings: {{max_steps: N}}' "
            f"(at most {MAX_STEPS_CEILING}; see docs/limits.md for the memory it takes)",
        )
        return False

    def _compile_step(self, located: LocatedStep, *, fallback: bool) -> list[_Instance]:
        spec, loc = located.spec, located.loc
        step_type = self._step_type(spec.type, (*loc, "type"))
        if step_type is not None:
            self._check_target(step_type, spec.target, loc)
        items = self._items(spec, loc)
        if step_type is None or items is None:
            return []
        settings = self.header.settings if self.header is not None else None
        timeout = (
            spec.timeout
            if spec.timeout is not None
            else (settings.step_timeout if settings else 300.0)
        )
        retries = _retries(spec.retries)
        on_failure = (
            OnFailure(FailurePolicy.FALLBACK, spec.on_failure.run)
            if isinstance(spec.on_failure, Fallback)
            else OnFailure(FailurePolicy(spec.on_failure))
        )
        out = []
        # Shards whose rendered inputs are alike (``with`` not reading the loop variable)
        # are validated and described once: what a step type derives from its inputs
        # depends on nothing else.
        last: tuple[str, _Derived] | None = None
        for key, item in items:
            context: dict[str, Any] = {"params": self.params, "targets": self.targets_ctx}
            if key is not None:
                context[spec.as_] = item
            step_refs: dict[str, Loc] = {}
            deferred: list[str] = []
            inputs_raw = self._render_tree(
                spec.with_, context, (*loc, "with"), spec.as_, step_refs, deferred
            )
            # repr, not ==: 1, 1.0 and True are equal but may validate differently.
            same = repr(inputs_raw) if not deferred else None
            derived = last[1] if last is not None and same == last[0] else None
            if derived is None:
                inputs = self._validate_inputs(step_type, inputs_raw, (*loc, "with"), deferred)
                if inputs is not None:
                    derived = _Derived.of(step_type, inputs, spec.target)
                    if same is not None:
                        last = (same, derived)
            when = self._render_when(spec, context, loc, step_refs)
            description = spec.description
            if description is not None and is_template(description):
                rendered = self._render_value(
                    description, context, (*loc, "description"), spec.as_, step_refs
                )
                description = rendered.text if isinstance(rendered, _Deferred) else str(rendered)
            rollback = self._rollback(spec, context, loc, step_refs)
            if derived is None:
                continue
            roles = derived.roles
            sid = spec.id if key is None else f"{spec.id}[{key}]"
            compiled = CompiledStep(
                id=sid,
                base_id=spec.id,
                type=spec.type,
                target=self._target_ref(spec.target),
                description=description or derived.description,
                inputs=inputs_raw,
                deferred=tuple(sorted(deferred)),
                requires=(),
                approve=spec.approve is not False,
                approval=_approval(spec.approve),
                when=when,
                timeout=timeout,
                retries=retries,
                on_failure=on_failure,
                rollback=rollback,
                roles=tuple(sorted(r.value for r in roles)),
                mutates=any(r.value == "mutating" for r in roles),
                verifies=derived.verifies,
                can_undo=derived.undoable or rollback is not None,
                item=item,
                loop_var=spec.as_ if key is not None else None,
                fallback=fallback,
            )
            subject = LintSubject(
                id=sid,
                base_id=spec.id,
                roles=roles,
                verifies=derived.verifies,
                forced=derived.forced,
                accepts_data_loss=derived.accepts_data_loss,
                continues_on_failure=on_failure.policy is FailurePolicy.CONTINUE,
                when=when,
            )
            if spec.guards:
                own = [(g, (*loc, "guards", i)) for i, g in enumerate(spec.guards)]
                compiled = _with(compiled, guards=self._guards(own))
            out.append(_Instance(compiled, spec, loc, subject, step_refs))
        return out

    def _validate_inputs(
        self, step_type: StepType, raw: Any, loc: Loc, deferred: list[str]
    ) -> StepInputs | None:
        model = step_type.Inputs
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            diags = to_diagnostics(exc, model, raw, self.srcmap, loc, code=E_STEP_INPUTS)
            prefix = ".".join(str(p) for p in loc)
            paths = _dedupe_locs(exc, raw)

            def run_time(err: str) -> bool:
                return any(err == p or err.startswith(p + ".") for p in deferred)

            # An unknown field is wrong whatever its value; other errors on a value
            # filled in at run time (a template reading steps' outputs) are excused.
            excused = {
                err.split(".")[1]
                for d, err in zip(diags, paths, strict=False)
                if d.code != E_UNKNOWN_FIELD and run_time(err) and err.count(".") >= 1
            }
            real = [
                d
                for d, err in zip(diags, paths, strict=False)
                if d.code == E_UNKNOWN_FIELD or not run_time(err)
            ]
            typed = None
            if not real and isinstance(raw, dict):
                # Describe and lint the step with those fields at their defaults: the
                # step types' describe/roles/verifies need validated values.
                try:
                    typed = model.model_validate({k: v for k, v in raw.items() if k not in excused})
                except ValidationError:
                    real = diags  # the step cannot be checked without them: say why
            for d in real:
                marker = (d.code, prefix + (d.location or ""), d.message)
                if marker not in self._seen:
                    self._seen.add(marker)
                    self.diags.append(d)
            return typed

    def _render_when(
        self, spec: StepSpec, context: dict[str, Any], loc: Loc, refs: dict[str, Loc]
    ) -> bool | str | None:
        if spec.when is None or isinstance(spec.when, bool):
            return spec.when
        text = spec.when if is_template(spec.when) else "{{ " + spec.when + " }}"
        value = self._render_value(text, context, (*loc, "when"), spec.as_, refs)
        if isinstance(value, _Deferred):
            return value.text
        if value is _FAILED:
            return None
        return bool(value)

    def _rollback(
        self, spec: StepSpec, context: dict[str, Any], loc: Loc, refs: dict[str, Loc]
    ) -> Rollback | None:
        rb = spec.rollback
        if rb is None:
            return None
        rloc = (*loc, "rollback")
        rb_type = self._step_type(rb.type, (*rloc, "type"))
        if rb_type is None:
            return None
        self._check_target(rb_type, rb.target, rloc)
        deferred: list[str] = []
        raw = self._render_tree(rb.with_, context, (*rloc, "with"), spec.as_, refs, deferred)
        inputs = self._validate_inputs(rb_type, raw, (*rloc, "with"), deferred)
        if inputs is None:
            return None
        return Rollback(
            type=rb.type,
            target=self._target_ref(rb.target),
            inputs=raw,
            description=rb.description or rb_type.describe(inputs, rb.target),
            timeout=rb.timeout,
        )

    def _target_ref(self, name: str | None) -> TargetRef | None:
        if name is None:
            return None
        target = self.loaded.targets.get(name)
        return TargetRef(name, target.type if target is not None else "")

    # -- templates ------------------------------------------------------------

    def _render_tree(
        self,
        value: Any,
        context: dict[str, Any],
        loc: Loc,
        as_name: str,
        refs: dict[str, Loc],
        deferred: list[str],
    ) -> Any:
        if isinstance(value, str):
            if not is_template(value):
                return value
            out = self._render_value(value, context, loc, as_name, refs)
            if isinstance(out, _Deferred):
                deferred.append(_dotted_from(loc))
                return out.text
            return value if out is _FAILED else out
        if isinstance(value, dict):
            return {
                k: self._render_tree(v, context, (*loc, k), as_name, refs, deferred)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [
                self._render_tree(v, context, (*loc, i), as_name, refs, deferred)
                for i, v in enumerate(value)
            ]
        return value

    def _render_value(
        self, text: str, context: dict[str, Any], loc: Loc, as_name: str, refs: dict[str, Loc]
    ) -> Any:
        try:
            info = analyze(text)
        except TemplateProblem as exc:
            self.error(E_TEMPLATE_SYNTAX, exc.message, loc)
            return _FAILED
        ok = True
        for ref in info.references:
            ok = (
                self._check_reference(ref.parts, loc, as_name if as_name in context else None, refs)
                and ok
            )
        if not ok:
            return _FAILED
        if info.deferred:
            return _Deferred(text)
        try:
            return render(text, context)
        except TemplateProblem as exc:
            self.error(E_TEMPLATE_NAME, exc.message, loc)
            return _FAILED

    def _check_reference(
        self, parts: tuple[str, ...], loc: Loc, as_name: str | None, refs: dict[str, Loc]
    ) -> bool:
        head = parts[0]
        if head == "params":
            if len(parts) > 1 and self.header is not None and parts[1] not in self.header.params:
                self.error(
                    E_TEMPLATE_NAME,
                    f"unknown parameter params.{parts[1]}",
                    loc,
                    hint=did_you_mean(parts[1], self.header.params) or "declare it under params:",
                )
                return False
            # A param that is not bound (missing, bad value, or a broken header) is
            # reported already; rendering would only add "'dict object' has no attribute".
            return len(parts) < 2 or parts[1] in self.params
        if head == "targets":
            if len(parts) > 1 and parts[1] not in self.target_names:
                self.error(
                    E_TEMPLATE_NAME,
                    f"unknown target targets.{parts[1]}",
                    loc,
                    hint=did_you_mean(parts[1], self.target_names),
                )
                return False
            target = self.loaded.targets.get(parts[1]) if len(parts) > 1 else None
            if target is not None and len(parts) > 2:
                name = parts[2]
                if name in target.secret_fields:
                    self.error(
                        E_TEMPLATE_NAME,
                        f"targets.{parts[1]}.{name} is secret; templates never see secrets",
                        loc,
                        hint="steps receive their target's secrets at run time; pass the reference, not the value",
                    )
                    return False
                visible = self.targets_ctx.get(parts[1], {})
                if name not in visible:
                    self.error(
                        E_TEMPLATE_NAME,
                        f"targets.{parts[1]} has no field {name!r}"
                        + (" set" if name in type(target).model_fields else ""),
                        loc,
                        hint=did_you_mean(name, visible),
                    )
                    return False
            return True
        if head == "steps":
            if len(parts) > 2 and parts[2] != "outputs":
                self.error(
                    E_TEMPLATE_NAME,
                    f"use steps.{parts[1]}.outputs.NAME to read a step's outputs",
                    loc,
                )
                return False
            if len(parts) > 1:
                refs.setdefault(parts[1], loc)
            return True
        if head == as_name or head in _JINJA_GLOBALS:
            return True
        names = ["params", "targets", "steps", *([as_name] if as_name else [])]
        self.error(
            E_TEMPLATE_NAME,
            f"unknown name {head!r} in template",
            loc,
            hint=did_you_mean(head, names) or "templates can read: " + ", ".join(names),
        )
        return False

    # -- graph and lints ------------------------------------------------------

    def _graph(
        self, instances: list[_Instance], by_base: dict[str, list[str]]
    ) -> tuple[list[_Instance], dict[str, list[str]]]:
        deps: dict[str, list[str]] = {}
        # The default requirement is the runbook step written just before, so every
        # fan-out instance waits for it and the next step waits for every instance.
        previous_of: dict[str, str | None] = {}
        prev: str | None = None
        for located in self.loaded.steps:
            previous_of.setdefault(located.spec.id, prev)
            prev = located.spec.id
        all_ids = set(by_base) | self.loaded.broken_ids
        for inst in instances:
            spec = inst.spec
            previous = previous_of.get(spec.id)
            wanted = (
                list(spec.requires)
                if spec.requires is not None
                else ([previous] if previous else [])
            )
            resolved: list[str] = []
            for j, req in enumerate(wanted):
                if req in by_base:
                    resolved.extend(by_base[req])
                elif any(req in ids for ids in by_base.values()):
                    resolved.append(req)
                elif req in self.loaded.broken_ids:
                    continue
                else:
                    self.error(
                        E_REQUIRES,
                        f"step {spec.id!r} requires unknown step {req!r}",
                        (*inst.loc, "requires", j) if spec.requires is not None else inst.loc,
                        hint=did_you_mean(req, all_ids),
                    )
            deps[inst.step.id] = list(dict.fromkeys(resolved))
        ids = [i.step.id for i in instances]
        try:
            order = topological_order(ids, deps)
        except CycleError as exc:
            first = next(i for i in instances if i.step.id == exc.cycle[0])
            self.error(
                E_CYCLE, "dependency cycle: " + " → ".join(exc.cycle), (*first.loc, "requires")
            )
            return instances, deps
        pos = {sid: k for k, sid in enumerate(order)}
        return sorted(instances, key=lambda i: pos[i.step.id]), deps

    def _check_refs_and_lint(
        self,
        ordered: list[_Instance],
        deps: dict[str, list[str]],
        by_base: dict[str, list[str]],
        fallback_ids: set[str],
    ) -> list[LintFinding]:
        ids = [i.step.id for i in ordered]
        try:
            ancestors = ancestor_bits(ids, deps)
        except KeyError:
            return []  # a cycle made the order partial; already reported
        pos = {sid: k for k, sid in enumerate(ids)}
        known = set(by_base) | {i for v in by_base.values() for i in v}
        for inst in ordered:
            for ref, loc in inst.step_refs.items():
                if ref in self.loaded.broken_ids:
                    continue
                if ref not in known:
                    self.error(
                        E_STEP_REFERENCE,
                        f"template reads steps.{ref}, which is not a step",
                        loc,
                        hint=did_you_mean(ref, by_base),
                    )
                    continue
                targets = by_base.get(ref, [ref])
                if not any(has(ancestors[inst.step.id], pos[t]) for t in targets if t in pos):
                    self.error(
                        E_STEP_REFERENCE,
                        f"step {inst.spec.id!r} reads outputs of {ref!r}, which does not run before it",
                        loc,
                        hint=f"add {ref!r} to requires",
                    )
            on_failure = inst.spec.on_failure
            if isinstance(on_failure, Fallback) and on_failure.run not in fallback_ids:
                self.error(
                    E_REQUIRES,
                    f"on_failure runs {on_failure.run!r}, which is not a step under fallbacks:",
                    (*inst.loc, "on_failure", "run"),
                    hint=did_you_mean(on_failure.run, fallback_ids),
                )
        findings = graph_lints([i.subject for i in ordered], ancestors)
        findings.extend(self._secret_findings())
        return self._acknowledge(findings, {i.spec.id: i for i in ordered})

    def _secret_findings(self) -> list[Finding]:
        out = []
        for loc, reason in scan(self.loaded.document.data):
            step = None
            if len(loc) >= 2 and loc[0] in ("steps", "fallbacks") and isinstance(loc[1], int):
                items = self.loaded.document.data[loc[0]]
                if isinstance(items[loc[1]], dict):
                    step = items[loc[1]].get("id")
            where = ".".join(str(p) for p in loc)
            out.append(
                Finding(
                    "DR005",
                    step if isinstance(step, str) else "",
                    f"{where}: {reason}; use ${{env:NAME}} or ${{file:path}}",
                    loc,
                )
            )
        return out

    def _acknowledge(
        self, findings: list[Finding], by_base: dict[str, _Instance]
    ) -> list[LintFinding]:
        global_ack = set(self.header.acknowledge) if self.header is not None else set()
        out = []
        for f in findings:
            inst = by_base.get(f.base_id)
            step_ack = set(inst.spec.acknowledge) if inst is not None else set()
            acknowledged = f.code in global_ack or f.code in step_ack
            out.append(LintFinding(f.code, f.message, f.base_id or None, acknowledged))
            if not acknowledged:
                loc = f.loc if f.loc is not None else (inst.loc if inst is not None else ())
                self.error(
                    f.code,
                    f"{TITLES[f.code]}: {f.message}",
                    loc,
                    hint=f"fix it, or acknowledge it with 'acknowledge: [{f.code}]' on the step",
                )
        return sorted(out, key=lambda x: (x.code, x.step or "", x.message))


class _Deferred:
    """A template that reads steps' outputs: kept as written for the engine."""

    def __init__(self, text: str) -> None:
        self.text = text


_FAILED = object()


def _field_value(out: Any) -> Any:
    """A rendered target field as the model reads it: text, or a list or map as it is."""
    if isinstance(out, dict | list):
        return out
    if isinstance(out, bool):
        return "true" if out else "false"
    return str(out)


def _template_view(name: str, target: TargetModel) -> dict[str, Any]:
    data = target.model_dump(exclude_none=True, warnings=False)
    view = {k: v for k, v in data.items() if k not in target.secret_fields}
    view["name"] = name
    return view


def _dotted_from(loc: Loc) -> str:
    # Paths inside ``with`` as the validation errors name them, e.g. ``with.max_bytes``.
    idx = loc.index("with") if "with" in loc else 0
    return ".".join(str(p) for p in loc[idx:])


def _dedupe_locs(exc: ValidationError, raw: Any) -> list[str]:
    """The dotted ``with.`` path of each distinct error location, in to_diagnostics order."""
    from drctl.runbook.validation import _real_loc

    seen: list[str] = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in ("with", *_real_loc(raw, tuple(err["loc"]))))
        if path not in seen:
            seen.append(path)
    return seen


def _approval(approve: bool | model.ApproveSpec) -> ApprovalPolicy | None:
    if not isinstance(approve, model.ApproveSpec):
        return None
    return ApprovalPolicy(approve.count, approve.not_by_starter, approve.expires)


def _settings(settings: model.Settings) -> Settings:
    return Settings(
        state=settings.state,
        lock=settings.lock,
        step_timeout=settings.step_timeout,
        concurrency=settings.concurrency,
        identity_env=settings.identity_env,
    )


def _retries(retries: model.Retries | None) -> Retries:
    if retries is None:
        return Retries()
    return Retries(
        attempts=retries.attempts,
        delay=retries.delay,
        backoff=retries.backoff,
        max_delay=retries.max_delay,
    )


def _with(step: CompiledStep, **changes: Any) -> CompiledStep:
    from dataclasses import replace

    return replace(step, **changes)


def _with_hash(plan: Plan) -> Plan:
    from dataclasses import replace

    return replace(plan, hash=plan_hash(plan))
