"""The compiler pipeline: runbook file + params → Plan, or every error found.

load (positions kept) → params bound → step types and targets resolved → templates
checked and rendered → ``for_each`` expanded → inputs validated → dependency graph
→ safety lints → Plan with a stable hash. Offline and deterministic: no network,
no credentials, no client library imported.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
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
    E_STEP_TIMEOUT,
    E_TARGET,
    E_TEMPLATE_NAME,
    E_TEMPLATE_SYNTAX,
    E_UNKNOWN_FIELD,
    E_UNKNOWN_STEP_TYPE,
    W_STALE_ACKNOWLEDGE,
    Diagnostic,
    Severity,
)
from drctl.errors import RunbookInvalid, StepTypeError
from drctl.runbook import model
from drctl.runbook.durations import format_duration
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
#: A step's timeout when the runbook writes none, unless its own waits need more.
DEFAULT_STEP_TIMEOUT = 300.0
#: Kept beyond a step's own waits for its connections and checks around them.
WAIT_MARGIN = 60.0
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
    #: The step's own waits (``with`` field, seconds), and which of them the runbook wrote.
    waits: tuple[tuple[str, float], ...] = ()
    written: frozenset[str] = frozenset()
    lag_limit: int | None = None

    @classmethod
    def of(cls, step_type: StepType, inputs: StepInputs, target: str | None) -> _Derived:
        waits = step_type.own_waits(inputs)
        return cls(
            waits=tuple(waits.items()),
            written=frozenset(waits) & inputs.model_fields_set,
            roles=step_type.step_roles(inputs),
            description=step_type.describe(inputs, target),
            verifies=step_type.verifies(inputs),
            undoable=step_type.undoable(inputs),
            forced=getattr(inputs, "force", False) is True,
            accepts_data_loss=getattr(inputs, "accept_data_loss", False) is True,
            lag_limit=step_type.lag_limit(inputs),
        )


@dataclass
class _Instance:
    #: The step instance's id (``base[key]`` in a fan-out).
    id: str
    #: Makes its CompiledStep once its requirements and lints are known: built once,
    #: not copied field by field with each (most of compiling a long runbook was that).
    make: Callable[..., CompiledStep]
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
        self.stand_ins: tuple[str, ...] = ()
        self.targets_ctx: dict[str, dict[str, Any]] = {}
        #: Step instances the for_each lists seen so far expand to (see _fan_out_fits).
        self.planned = 0
        #: Outputs of compiled steps that name targets, with the targets each can name.
        self.target_outputs: dict[str, Mapping[str, tuple[str, ...]]] = {}
        #: What each step type derived from validated inputs, by (type, inputs and target
        #: as repr): steps written alike (a fan-out's shards, a run of waits) share it.
        self._derived: dict[tuple[str, str], tuple[StepInputs, _Derived]] = {}
        #: Step types by name, each looked up (an import, a new instance) once.
        self._types: dict[str, StepType] = {}

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
            self.params, stand_ins, errs = bind_params(
                header.params,
                self.given,
                self.loaded.path,
                self.srcmap,
                placeholders=self.placeholders,
            )
            self.diags.extend(errs)
            self.stand_ins = tuple(sorted(stand_ins))
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
            by_base.setdefault(located.spec.id, []).extend(i.id for i in made)
        fallbacks: list[_Instance] = []
        for located in self.loaded.fallbacks:
            fallbacks.extend(self._compile_step(located, fallback=True))
        fallback_ids = {f.spec.id for f in self.loaded.fallbacks} | self.loaded.broken_ids
        guards = self._guards(self.loaded.guards)

        ordered, deps = self._graph(instances, by_base)
        findings = self._check_refs_and_lint(ordered, deps, by_base, fallback_ids)
        rendered = {
            name: self._render_setting(getattr(header.settings, name), name)
            for name in ("state", "lock")
            if header is not None
        }
        if any(d.severity.value == "error" for d in self.diags):
            raise RunbookInvalid(self.diags)
        assert header is not None
        lint_by_step: dict[str, list[str]] = {}
        for f in findings:
            if f.step is not None and not f.warning:
                lint_by_step.setdefault(f.step, []).append(f.code)
        steps = tuple(
            i.make(requires=tuple(deps[i.id]), lints=tuple(lint_by_step.get(i.spec.id, ())))
            for i in ordered
        )
        plan = Plan(
            name=header.metadata.name,
            description=header.metadata.description,
            source=self.loaded.path,
            params=dict(sorted(self.params.items())),
            objectives={"rto": header.objectives.rto, "rpo": header.objectives.rpo},
            settings=_settings(header.settings, **rendered),
            targets={
                n: t.model_dump(exclude_none=True) for n, t in sorted(self.loaded.targets.items())
            },
            steps=steps,
            fallbacks=tuple(f.make(requires=()) for f in fallbacks),
            lints=tuple(findings),
            warnings=tuple(d for d in self.diags if d.severity is Severity.WARNING),
            stand_ins=self.stand_ins,
            guards=guards,
        )
        return plan.hashed()

    def _render_setting(self, value: str | None, name: str) -> str | None:
        """A ``settings`` value that may be a template over params and targets.

        Settings hold before any step runs, so a template reading steps' outputs is an
        error, as is one that renders empty; a template is never used as it is written.
        """
        if value is None or not is_template(value):
            return value
        loc: Loc = ("settings", name)
        out = self._render_value(
            value, {"params": self.params, "targets": self.targets_ctx}, loc, "", {}
        )
        if isinstance(out, _Deferred):
            self.error(
                E_TEMPLATE_NAME,
                f"settings.{name} cannot read steps' outputs: it is needed before any step runs",
                loc,
                hint="use params or targets in it",
            )
            return None
        if out is _FAILED:
            return None
        text = str(out).strip()
        if not text:
            self.error(E_TEMPLATE_NAME, f"settings.{name} renders empty", loc)
            return None
        return text

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
            step = made[0].make(requires=())
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
        known = self._types.get(type_name)
        if known is not None:
            return known
        try:
            found = self._types[type_name] = get_step_type(type_name)
            return found
        except StepTypeError as exc:
            self.error(E_UNKNOWN_STEP_TYPE, f"{exc.message}", loc, hint=exc.hint)
            return None

    def _check_target(
        self,
        step_type: StepType,
        target: str | None,
        loc: Loc,
        *,
        tloc: Loc | None = None,
        shown: str = "",
    ) -> bool:
        """Report a missing, unknown or mistyped target at ``tloc``; True when it is fine.

        ``shown`` says where the name came from (a template, a run-time choice).
        """
        kinds = step_type.target_types
        if target is None:
            if step_type.target_required:
                self.error(
                    E_TARGET,
                    f"step type {step_type.name!r} needs a target of type {' or '.join(sorted(kinds))}",
                    loc,
                )
                return False
            return True
        tloc = tloc if tloc is not None else (*loc, "target")
        if target not in self.target_names:
            self.error(
                E_TARGET,
                f"unknown target {target!r}{shown}",
                tloc,
                hint=did_you_mean(target, self.target_names)
                or (
                    "declared: " + ", ".join(sorted(self.target_names))
                    if self.target_names
                    else "declare it under targets:"
                ),
            )
            return False
        model = self.loaded.targets.get(target)
        if model is None:
            return False  # the target itself is invalid and already reported
        if not kinds:
            self.error(E_TARGET, f"step type {step_type.name!r} takes no target", tloc)
            return False
        if model.type not in kinds:
            self.error(
                E_TARGET,
                f"step type {step_type.name!r} acts on {' or '.join(sorted(kinds))} targets; "
                f"{target!r} is a {model.type} target{shown}",
                tloc,
            )
            return False
        return True

    def _step_target(
        self,
        step_type: StepType,
        spec: StepSpec,
        context: dict[str, Any],
        loc: Loc,
        refs: dict[str, Loc],
        run_time_item: bool,
    ) -> _TargetPlan | None:
        """The step's target: named, rendered from a template, or decided at run time.

        None when it is wrong (reported). A template over params or the for_each item
        is rendered here; one over steps' outputs is left for the engine, with the
        targets it may name (``target_one_of``, or what the output's step type declares).
        """
        text = spec.target
        if text is None or not is_template(text):
            if spec.target_one_of is not None and not run_time_item:
                self.error(
                    E_TARGET,
                    "target_one_of is for a target (or for_each) decided at run time; "
                    "this step's target is fixed",
                    (*loc, "target_one_of"),
                    hint="make target a template over steps' outputs, or remove target_one_of",
                )
                return None
            # A fan-out over run-time targets binds the item to a target name it checks.
            return _TargetPlan(text)
        tloc = (*loc, "target")
        out = self._render_value(text, context, tloc, spec.as_, refs)
        if out is _FAILED:
            return None
        if isinstance(out, _Deferred):
            choices = self._choices(spec, text, loc, "target")
            if choices is None:
                return None
            ok = True
            for j, name in enumerate(choices):
                where = (*loc, "target_one_of", j) if spec.target_one_of is not None else tloc
                ok = self._check_target(
                    step_type, name, loc, tloc=where,
                    shown=f" (one of the targets {_words(text)} may name)",
                ) and ok  # fmt: skip
            return _TargetPlan(None, text, choices) if ok else None
        if not isinstance(out, str) or not out:
            self.error(
                E_TARGET,
                f"target must render to a target name, got {type(out).__name__} {out!r}",
                tloc,
            )
            return None
        if not self._check_target(step_type, out, loc, shown=f" (its template rendered {out!r})"):
            return None
        if spec.target_one_of is not None and out not in spec.target_one_of:
            self.error(
                E_TARGET,
                f"target renders {out!r}, which is not in target_one_of",
                tloc,
                hint="target_one_of: " + ", ".join(spec.target_one_of),
            )
            return None
        return _TargetPlan(out)

    def _choices(self, spec: StepSpec, text: str, loc: Loc, field: str) -> tuple[str, ...] | None:
        """The targets a run-time ``target``/``for_each`` may name; None when unknown (reported)."""
        if spec.target_one_of is not None:
            return tuple(dict.fromkeys(spec.target_one_of))
        read = _output_read(text)
        if read is not None:
            declared = self.target_outputs.get(read[0], {}).get(read[1])
            if declared is not None:
                return declared
        self.error(
            E_TARGET,
            f"{field} is decided at run time from {_words(text)}, and the compiler cannot "
            "tell which targets that may name",
            (*loc, field),
            hint="list them: 'target_one_of: [NAME, ...]' on the step (an output whose step "
            "type declares its targets, such as postgres.choose_primary's target and "
            "others, needs none)",
        )
        return None

    def _items(
        self, spec: StepSpec, loc: Loc
    ) -> tuple[list[tuple[str | None, Any]], str | None] | None:
        """The fan-out's (key, item) pairs, and the run-time list template for a fan-out
        over targets decided at run time (None otherwise)."""
        if spec.for_each is None:
            return [(None, None)], None
        floc = (*loc, "for_each")
        values: Any = spec.for_each
        if isinstance(values, str):
            context = {"params": self.params, "targets": self.targets_ctx}
            rendered = self._render_value(values, context, floc, spec.as_, {})
            if rendered is _FAILED:
                return None
            if isinstance(rendered, _Deferred):
                # A fan-out over targets decided at run time: one instance per target
                # it may name, each run only when its target is in the list then.
                choices = self._choices(spec, values, loc, "for_each")
                if choices is None or not self._fan_out_fits(len(choices), floc):
                    return None
                return [(name, name) for name in choices], values
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
        return out, None

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

    def _compile_step(  # noqa: PLR0915 (one pass over a step's fields, each checked in turn)
        self, located: LocatedStep, *, fallback: bool
    ) -> list[_Instance]:
        spec, loc = located.spec, located.loc
        step_type = self._step_type(spec.type, (*loc, "type"))
        if step_type is not None and (spec.target is None or not is_template(spec.target)):
            self._check_target(step_type, spec.target, loc)
        fanned = self._items(spec, loc)
        if step_type is None or fanned is None:
            return []
        items, item_from = fanned
        settings = self.header.settings if self.header is not None else None
        # Where the step's timeout comes from, when the runbook wrote one.
        limit: tuple[float, str, Loc] | None = None
        if spec.timeout is not None:
            limit = (spec.timeout, "its timeout", (*loc, "timeout"))
        elif settings is not None and "step_timeout" in settings.model_fields_set:
            limit = (settings.step_timeout, "settings.step_timeout", ("settings", "step_timeout"))
        retries = _retries(spec.retries)
        on_failure = (
            OnFailure(FailurePolicy.FALLBACK, spec.on_failure.run)
            if isinstance(spec.on_failure, Fallback)
            else _POLICIES[spec.on_failure]
        )
        out = []
        for key, item in items:
            context: dict[str, Any] = {"params": self.params, "targets": self.targets_ctx}
            if key is not None:
                context[spec.as_] = item
            step_refs: dict[str, Loc] = {}
            deferred: list[str] = []
            if item_from is not None:
                self._render_value(item_from, context, (*loc, "for_each"), spec.as_, step_refs)
            target = self._step_target(
                step_type, spec, context, loc, step_refs, item_from is not None
            )
            inputs_raw = self._render_tree(
                spec.with_, context, (*loc, "with"), spec.as_, step_refs, deferred
            )
            # Steps whose rendered inputs are alike (shards whose ``with`` does not read
            # the loop variable, steps written alike) are validated and described once:
            # what a step type derives from its inputs depends on nothing else.
            # repr, not ==: 1, 1.0 and True are equal but may validate differently.
            # The target too: a fan-out over targets describes each instance by its own.
            same = (
                (spec.type, repr((inputs_raw, target.words() if target else None)))
                if not deferred
                else None
            )
            known = self._derived.get(same) if same is not None else None
            derived: _Derived | None = None
            inputs: StepInputs | None
            if known is not None:
                inputs, derived = known
            else:
                inputs = self._validate_inputs(step_type, inputs_raw, (*loc, "with"), deferred)
                if inputs is not None:
                    derived = _Derived.of(
                        step_type, inputs, target.words() if target is not None else spec.target
                    )
                    if same is not None:
                        self._derived[same] = (inputs, derived)
            if inputs is not None:
                named = step_type.target_outputs(inputs)
                if named:
                    self.target_outputs.setdefault(spec.id, named)
            when = self._render_when(spec, context, loc, step_refs)
            description = spec.description
            if description is not None and is_template(description):
                rendered = self._render_value(
                    description, context, (*loc, "description"), spec.as_, step_refs
                )
                description = rendered.text if isinstance(rendered, _Deferred) else str(rendered)
            rollback = self._rollback(spec, context, loc, step_refs)
            if derived is None or target is None:
                continue
            timeout = self._timeout(derived, limit, loc, deferred)
            roles = derived.roles
            if spec.fences is not None and not self._check_fences(spec, roles, loc):
                continue
            sid = spec.id if key is None else f"{spec.id}[{key}]"
            make = functools.partial(
                _step,
                id=sid,
                base_id=spec.id,
                type=spec.type,
                target=self._target_ref(target.name),
                description=description or derived.description,
                inputs=inputs_raw,
                deferred=tuple(sorted(deferred)),
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
                fences=None if spec.fences is None else self._target_ref(spec.fences),
                target_from=target.template,
                target_choices=target.choices
                if target.template is not None
                else tuple(k for k, _ in items if k is not None)
                if item_from is not None
                else (),
                item_from=item_from,
            )
            subject = LintSubject(
                id=sid,
                base_id=spec.id,
                roles=roles,
                verifies=derived.verifies,
                forced=derived.forced,
                accepts_data_loss=derived.accepts_data_loss,
                continues_on_failure=on_failure.policy is FailurePolicy.CONTINUE,
                # An instance of a run-time fan-out runs only if listed: a condition too.
                when=when
                if item_from is None
                else f"{key} is among {_words(item_from)}"
                if when in (None, True)
                else f"({when}) and {key} is among {_words(item_from)}",
                targets=target.choices
                if target.template is not None
                else ((target.name,) if target.name is not None else ()),
                # A run-time template read inside a fan-out may name another target per item.
                target_key=target.key()
                + (f"[{key}]" if key is not None and target.template is not None else ""),
                names_verified=frozenset(spec.verifies or ()),
                # A limit rendered from earlier steps' outputs is not known offline.
                lag_limit=None if deferred else derived.lag_limit,
                target=spec.target,
                managed_by=getattr(self.loaded.targets.get(spec.target or ""), "managed_by", None),
            )
            if spec.guards:
                own = [(g, (*loc, "guards", i)) for i, g in enumerate(spec.guards)]
                make = functools.partial(make, guards=self._guards(own))
            out.append(_Instance(sid, make, spec, loc, subject, step_refs))
        return out

    def _check_fences(self, spec: StepSpec, roles: frozenset[Role], loc: Loc) -> bool:
        """``fences:`` names a declared target, on a step that fences (else an error there)."""
        floc = (*loc, "fences")
        if Role.FENCE not in roles:
            self.error(
                E_TARGET,
                f"step {spec.id!r} ({spec.type}) is not a fence step, so it cannot fence "
                f"{spec.fences!r}",
                floc,
                hint="fences: belongs on a step with the fence role (postgres.fence, "
                "aws.ec2_stop, aws.ec2_isolate, or a shell step with roles: [fence])",
            )
            return False
        if spec.fences not in self.target_names:
            self.error(
                E_TARGET,
                f"unknown target {spec.fences!r}",
                floc,
                hint=did_you_mean(spec.fences or "", self.target_names)
                or "fences: names one of the runbook's targets",
            )
            return False
        return True

    def _timeout(
        self,
        derived: _Derived,
        limit: tuple[float, str, Loc] | None,
        loc: Loc,
        deferred: list[str],
    ) -> float:
        """The step's timeout; its own written waits longer than a written timeout are an error.

        With no timeout written (``timeout:`` or ``settings.step_timeout``), the default
        is DEFAULT_STEP_TIMEOUT, or the step's own waits (defaults included) plus
        WAIT_MARGIN when that is longer: a default never cuts a step's own wait.
        """
        total = sum(seconds for _, seconds in derived.waits)
        if limit is None:
            return max(DEFAULT_STEP_TIMEOUT, total + WAIT_MARGIN)
        seconds, what, where = limit
        written = [
            (name, value)
            for name, value in derived.waits
            if name in derived.written and f"with.{name}" not in deferred
        ]
        own = sum(value for _, value in written)
        if written and own > seconds:
            at = self.srcmap.position(where)
            place = f" at {self.loaded.path}:{at.line}:{at.column}" if at is not None else ""
            names = " + ".join(f"with.{name} ({format_duration(value)})" for name, value in written)
            self.error(
                E_STEP_TIMEOUT,
                f"{names} is longer than {what} ({format_duration(seconds)}{place}): the step "
                "would be cut off before its own wait ends",
                (*loc, "with", written[0][0]),
                hint=f"raise {what} above {format_duration(own)}, or shorten the wait",
            )
        return seconds

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
            deps[inst.id] = list(dict.fromkeys(resolved))
        ids = [i.id for i in instances]
        try:
            order = topological_order(ids, deps)
        except CycleError as exc:
            first = next(i for i in instances if i.id == exc.cycle[0])
            self.error(
                E_CYCLE, "dependency cycle: " + " → ".join(exc.cycle), (*first.loc, "requires")
            )
            return instances, deps
        pos = {sid: k for k, sid in enumerate(order)}
        return sorted(instances, key=lambda i: pos[i.id]), deps

    def _check_refs_and_lint(
        self,
        ordered: list[_Instance],
        deps: dict[str, list[str]],
        by_base: dict[str, list[str]],
        fallback_ids: set[str],
    ) -> list[LintFinding]:
        ids = [i.id for i in ordered]
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
                if not any(has(ancestors[inst.id], pos[t]) for t in targets if t in pos):
                    self.error(
                        E_STEP_REFERENCE,
                        f"step {inst.spec.id!r} reads outputs of {ref!r}, which does not run before it",
                        loc,
                        hint=f"add {ref!r} to requires",
                    )
            self._check_verifies(inst, by_base, ancestors, pos)
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

    def _check_verifies(
        self,
        inst: _Instance,
        by_base: dict[str, list[str]],
        ancestors: dict[str, int],
        pos: dict[str, int],
    ) -> None:
        """``verifies:`` names steps that run before this one, on a verification step."""
        names = inst.spec.verifies
        if not names:
            return
        vloc = (*inst.loc, "verifies")
        if Role.VERIFY not in inst.subject.roles:
            self.error(
                E_STEP_REFERENCE,
                f"verifies: step {inst.spec.id!r} is a {inst.spec.type} step, which verifies "
                "nothing (only a step type with the verify role can)",
                vloc,
            )
            return
        for j, name in enumerate(names):
            where = (*vloc, j)  # a single name (a string) falls back to verifies itself
            if name not in by_base:
                self.error(
                    E_STEP_REFERENCE,
                    f"verifies names {name!r}, which is not a step",
                    where,
                    hint=did_you_mean(name, by_base),
                )
            elif not any(has(ancestors[inst.id], pos[t]) for t in by_base[name] if t in pos):
                self.error(
                    E_STEP_REFERENCE,
                    f"verifies names {name!r}, which does not run before {inst.spec.id!r}",
                    where,
                    hint=f"add {name!r} to requires",
                )

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
            out.append(LintFinding(f.code, f.message, f.base_id or None, acknowledged, f.warning))
            if not acknowledged and not f.warning:
                loc = f.loc if f.loc is not None else (inst.loc if inst is not None else ())
                self.error(
                    f.code,
                    f"{TITLES[f.code]}: {f.message}",
                    loc,
                    hint=f"fix it, or acknowledge it with 'acknowledge: [{f.code}]' on the step",
                )
        self._stale_acknowledgements(findings, by_base)
        return sorted(out, key=lambda x: (x.code, x.step or "", x.message))

    def _stale_acknowledgements(
        self, findings: list[Finding], by_base: dict[str, _Instance]
    ) -> None:
        """Warn of each ``acknowledge:`` entry no lint needs: a stale one would hide a new finding."""
        fired = {(f.base_id, f.code) for f in findings}
        codes = {code for _, code in fired}
        if self.header is not None:
            for i, code in enumerate(self.header.acknowledge):
                if code not in codes:
                    self._stale(code, "the runbook", ("acknowledge", i))
        seen: set[str] = set()
        for base, inst in by_base.items():
            if base in seen:
                continue
            seen.add(base)
            for i, code in enumerate(inst.spec.acknowledge):
                if (base, code) not in fired:
                    self._stale(code, f"step {base!r}", (*inst.loc, "acknowledge", i))

    def _stale(self, code: str, where: str, loc: Loc) -> None:
        self.diags.append(
            replace(
                self.srcmap.diagnostic(
                    W_STALE_ACKNOWLEDGE,
                    f"{where} acknowledges {code}, which does not fire there",
                    loc,
                    hint=f"remove {code} from acknowledge: an acknowledgement nothing needs "
                    "would hide the lint if it fired later",
                ),
                severity=Severity.WARNING,
            )
        )


@dataclass(frozen=True)
class _TargetPlan:
    """A step instance's target: a name known now, or a template decided at run time."""

    name: str | None
    #: The template (reading steps' outputs) the engine renders; None when ``name`` is it.
    template: str | None = None
    #: The targets ``template`` may name.
    choices: tuple[str, ...] = ()

    def words(self) -> str | None:
        """The target as a step type's ``describe`` names it."""
        if self.template is None:
            return self.name
        return " or ".join(self.choices) + " (decided at run time)"

    def key(self) -> str:
        """Equal for two steps exactly when they act on the same target at run time."""
        if self.template is not None:
            return "from:" + " ".join(self.template.split())
        return "" if self.name is None else "name:" + self.name


_OUTPUT_READ = re.compile(
    r"^\{\{-?\s*steps(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*(?:'([^']+)'|\"([^\"]+)\")\s*\])"
    r"\.outputs\.([A-Za-z_][A-Za-z0-9_]*)\s*-?\}\}$"
)


def _output_read(text: str) -> tuple[str, str] | None:
    """(step id, output name) of a template that is one read of a step's output."""
    found = _OUTPUT_READ.match(text.strip())
    if found is None:
        return None
    return found.group(1) or found.group(2) or found.group(3), found.group(4)


def _words(template: str) -> str:
    from drctl.compiler.plan import expression_text

    return expression_text(template)


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


def _step(**given: Any) -> CompiledStep:
    return CompiledStep.of(given)


def _approval(approve: bool | model.ApproveSpec) -> ApprovalPolicy | None:
    if not isinstance(approve, model.ApproveSpec):
        return None
    return ApprovalPolicy(approve.count, approve.not_by_starter, approve.expires)


def _settings(
    settings: model.Settings, state: str | None = None, lock: str | None = None
) -> Settings:
    """The compiled settings; ``state`` and ``lock`` as rendered (see _render_setting)."""
    return Settings(
        state=state,
        lock=lock,
        step_timeout=settings.step_timeout,
        concurrency=settings.concurrency,
        cooldown=settings.cooldown,
        identity_env=settings.identity_env,
    )


#: The plain policies, and no retries: frozen values, one shared by every step that has it.
_POLICIES = {p.value: OnFailure(p) for p in FailurePolicy if p is not FailurePolicy.FALLBACK}
_NO_RETRIES = Retries()


def _retries(retries: model.Retries | None) -> Retries:
    if retries is None:
        return _NO_RETRIES
    return Retries(
        attempts=retries.attempts,
        delay=retries.delay,
        backoff=retries.backoff,
        max_delay=retries.max_delay,
    )
