"""The Plan: what a runbook compiles to, and what every later stage reads.

A plan is typed all the way down (frozen values: ``Settings``, ``Retries``,
``OnFailure``, ``Rollback``, ``TargetRef``) and becomes JSON only at the wire:
``Plan.content()`` (what is hashed and stored) and ``plan_from_dict`` (a stored plan
read back, through ``RunRecord.plan()``). The JSON form is the one drctl 0.1.0 wrote,
key for key, so that the same runbook and params give a byte-identical plan and the
same hash on any machine, any ``PYTHONHASHSEED`` and any version since 0.1.0. The hash
leaves out where the runbook file lives: moving a file does not change what it does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from functools import cached_property
from typing import Any

from drctl.compiler.secret_scan import mask
from drctl.diagnostics import Diagnostic

PLAN_FORMAT = 1


@dataclass(frozen=True)
class Settings:
    """A runbook's execution settings, as compiled (command-line flags override them)."""

    #: The state store the runbook's runs use (None: ``--state``, DRCTL_STATE or the default).
    state: str | None = None
    #: The lock key its runs take (None: the runbook's name).
    lock: str | None = None
    #: Seconds a step may take when it sets no ``timeout``.
    step_timeout: float = 300.0
    #: Steps run at once when ``--concurrency`` is not given.
    concurrency: int = 8
    #: Seconds after the last finished run on the lock key in which a new one is refused.
    cooldown: float | None = None
    #: The environment variable naming who approves (a CI actor), instead of user@host.
    identity_env: str | None = None

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        if self.step_timeout <= 0:
            raise ValueError("settings.step_timeout must be positive")
        if self.concurrency < 1:
            raise ValueError("settings.concurrency must be at least 1")
        if self.cooldown is not None and self.cooldown < 0:
            raise ValueError("settings.cooldown must not be negative")

    def lock_key(self, name: str) -> str:
        """The lock a run of runbook ``name`` takes."""
        return self.lock or name

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "state": self.state,
            "lock": self.lock,
            "step_timeout": float(self.step_timeout),
            "concurrency": self.concurrency,
            # Only when set: a plan without it hashes as 0.1.0's did.
            **({"identity_env": self.identity_env} if self.identity_env else {}),
        }
        # Only when set: a runbook without a cooldown keeps the plan hash 0.1.0 gave it.
        if self.cooldown is not None:
            data["cooldown"] = float(self.cooldown)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        return cls(
            state=data.get("state"),
            lock=data.get("lock"),
            step_timeout=float(data.get("step_timeout", 300.0)),
            concurrency=int(data.get("concurrency") or 8),
            cooldown=None if data.get("cooldown") is None else float(data["cooldown"]),
            identity_env=data.get("identity_env"),
        )


@dataclass(frozen=True)
class Retries:
    """How often a failed step is tried again, and how long to wait in between.

    In the shape of Temporal's ``RetryPolicy``: the first retry waits ``delay``, each
    later one ``backoff`` times longer than the one before, never more than
    ``max_delay`` (when set and non-zero). The defaults try once and never wait.
    """

    #: Attempts in all, the first one included (1: no retry).
    attempts: int = 1
    #: Seconds before the first retry.
    delay: float = 0.0
    #: Factor each wait grows by (1.0: a constant wait).
    backoff: float = 1.0
    #: The longest wait, in seconds (None or 0: no cap).
    max_delay: float | None = None

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        if self.attempts < 1:
            raise ValueError("retries.attempts must be at least 1")
        if self.delay < 0:
            raise ValueError("retries.delay must not be negative")
        if self.backoff < 1.0:
            raise ValueError("retries.backoff must be at least 1.0")
        if self.max_delay is not None and self.max_delay < 0:
            raise ValueError("retries.max_delay must not be negative")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (1-based) of one series of attempts.

        0 before the first; ``delay`` before the second; ``backoff`` times the previous
        wait after that, capped at ``max_delay``.
        """
        if attempt <= 1:
            return 0.0
        wait = self.delay * self.backoff ** (attempt - 2)
        return min(wait, self.max_delay) if self.max_delay else wait

    def to_json(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "delay": float(self.delay),
            "backoff": float(self.backoff),
            "max_delay": None if self.max_delay is None else float(self.max_delay),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Retries:
        max_delay = data.get("max_delay")
        return cls(
            attempts=int(data.get("attempts", 1)),
            delay=float(data.get("delay", 0.0)),
            backoff=float(data.get("backoff", 1.0)),
            max_delay=None if max_delay is None else float(max_delay),
        )


class FailurePolicy(StrEnum):
    """What a step's final failure does to the run."""

    ABORT = "abort"  # the run stops, failed
    CONTINUE = "continue"  # the failure is journaled and ignored
    ROLLBACK = "rollback"  # the run stops and undoes its completed steps
    FALLBACK = "fallback"  # a step from ``fallbacks`` runs instead


@dataclass(frozen=True)
class OnFailure:
    """A step's ``on_failure``: a policy, and the fallback step it runs (``{run: ID}``)."""

    policy: FailurePolicy = FailurePolicy.ABORT
    #: The fallback step's id, for ``FailurePolicy.FALLBACK`` only.
    run: str | None = None

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        if (self.policy is FailurePolicy.FALLBACK) != (self.run is not None):
            raise ValueError("on_failure runs a fallback step exactly when its policy is fallback")

    def describe(self) -> str:
        return f"run {self.run}" if self.run is not None else self.policy.value

    def to_json(self) -> str | dict[str, str]:
        return {"run": self.run} if self.run is not None else self.policy.value

    @classmethod
    def from_json(cls, data: str | dict[str, str]) -> OnFailure:
        if isinstance(data, dict):
            return cls(FailurePolicy.FALLBACK, data["run"])
        return cls(FailurePolicy(data))


class TargetRef(str):
    """A step's target: its name in the runbook's ``targets`` (the string itself), and its type.

    A ``str`` so that it keys the run's targets, prints and serialises as the name it
    was written as; ``type`` says what kind of system it is without a look-up.
    """

    __slots__ = ("type",)
    type: str

    def __new__(cls, name: str, type: str) -> TargetRef:
        ref = super().__new__(cls, name)
        object.__setattr__(ref, "type", type)
        return ref

    @property
    def name(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"TargetRef({self.name!r}, {self.type!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (TargetRef, (self.name, self.type))


@dataclass(frozen=True)
class Rollback:
    """A step's custom undo (``rollback:``): a step of its own, run when the run rolls back."""

    type: str
    target: TargetRef | None
    #: Its rendered ``with`` (secret references unresolved).
    inputs: dict[str, Any]
    description: str
    #: Seconds it may take (None: the step's own timeout).
    timeout: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "target": None if self.target is None else self.target.name,
            "with": self.inputs,
            "description": self.description,
            "timeout": self.timeout,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], targets: dict[str, dict[str, Any]]) -> Rollback:
        return cls(
            type=data["type"],
            target=_target_ref(data.get("target"), targets),
            inputs=data.get("with") or {},
            description=data.get("description") or "",
            timeout=None if data.get("timeout") is None else float(data["timeout"]),
        )


@dataclass(frozen=True)
class LintFinding:
    """A safety lint that fired on a step (or the whole runbook), and whether it was acknowledged."""

    code: str
    message: str
    step: str | None
    acknowledged: bool
    #: Shown, never an error (DR006: a cluster left paused); absent from the JSON when False.
    warning: bool = False


@dataclass(frozen=True)
class ApprovalPolicy:
    """Who must approve a gate before its step runs (``approve: {count, …}``)."""

    count: int = 1
    #: The person who started the run cannot approve it.
    not_by_starter: bool = False
    #: Seconds an approval stays good for (None: until the run ends).
    expires: float | None = None

    @property
    def needs_others(self) -> bool:
        """The gate cannot be opened by whoever runs drctl alone."""
        return self.count > 1 or self.not_by_starter

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "not_by_starter": self.not_by_starter, "expires": self.expires}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApprovalPolicy:
        expires = data.get("expires")
        return cls(
            int(data["count"]),
            bool(data["not_by_starter"]),
            None if expires is None else float(expires),
        )


@dataclass(frozen=True)
class CompiledStep:
    """One step of the plan, after templating and fan-out."""

    id: str
    base_id: str
    type: str
    target: TargetRef | None
    description: str
    inputs: dict[str, Any]
    #: Input paths (dotted) whose templates read earlier steps' outputs: rendered at run time.
    deferred: tuple[str, ...]
    requires: tuple[str, ...]
    approve: bool
    when: bool | str | None
    timeout: float
    retries: Retries
    on_failure: OnFailure
    rollback: Rollback | None
    roles: tuple[str, ...]
    mutates: bool
    verifies: bool
    can_undo: bool
    item: Any = None
    #: The template name the for_each item is bound to (``as``), for run-time rendering.
    loop_var: str | None = None
    lints: tuple[str, ...] = ()
    fallback: bool = False
    #: The target a fence step fences (``fences:``); None: its own target, if any.
    fences: TargetRef | None = None

    @property
    def fenced_target(self) -> str | None:
        """What this fence step fences: its ``fences:``, else its own target."""
        ref = self.fences if self.fences is not None else self.target
        return None if ref is None else ref.name

    #: A target decided at run time: the template (reading steps' outputs) that names it.
    target_from: str | None = None
    #: The targets ``target_from`` (or the ``item_from`` fan-out) may name, known at compile time.
    target_choices: tuple[str, ...] = ()
    #: A fan-out over targets decided at run time: the template giving the list of target
    #: names; this instance runs only when its item is in that list.
    item_from: str | None = None

    def target_text(self) -> str:
        """The step's target in words: its name, or how it is decided at run time ('' if none)."""
        if self.target_from is not None:
            return (
                f"decided at run time from {expression_text(self.target_from)}: "
                f"one of {', '.join(self.target_choices)}"
            )
        return "" if self.target is None else self.target.name

    #: A gate other people open (None: the plain ``approve: true`` gate, or none).
    approval: ApprovalPolicy | None = None
    #: Stop conditions read from just before the step starts until it ends.
    guards: tuple[CompiledGuard, ...] = ()

    @classmethod
    def of(cls, given: dict[str, Any]) -> CompiledStep:
        """The step with ``given`` fields (by name; the others at their defaults).

        As ``CompiledStep(**given)`` makes it, without the generated ``__init__``'s
        keyword matching and one frozen setattr per field: building the steps was a
        sizeable part of compiling a long runbook. The class has no ``__post_init__``.
        """
        values = {**_STEP_DEFAULTS, **given}
        if values.keys() != _STEP_FIELDS:
            raise TypeError(f"CompiledStep fields: {sorted(values.keys() ^ _STEP_FIELDS)}")
        step = object.__new__(cls)
        object.__setattr__(step, "__dict__", values)
        return step

    def masked_inputs(self) -> dict[str, Any]:
        """The inputs as they may be shown (literal secrets as ``***``)."""
        masked: dict[str, Any] = mask(None, self.inputs)
        return masked

    def to_json(self) -> dict[str, Any]:
        """The step's wire form (the one 0.1.0 wrote): what is hashed and stored."""
        data: dict[str, Any] = {
            "id": self.id,
            "base_id": self.base_id,
            "type": self.type,
            "target": None if self.target is None else self.target.name,
            "description": self.description,
            "inputs": self.inputs,
            "deferred": self.deferred,
            "requires": self.requires,
            "approve": self.approve,
            "when": self.when,
            "timeout": self.timeout,
            "retries": self.retries.to_json(),
            "on_failure": self.on_failure.to_json(),
            "rollback": None if self.rollback is None else self.rollback.to_json(),
            "roles": self.roles,
            "mutates": self.mutates,
            "verifies": self.verifies,
            "can_undo": self.can_undo,
            "item": self.item,
            "loop_var": self.loop_var,
            "lints": self.lints,
            "fallback": self.fallback,
            # Written only when set, so plans without run-time targets hash as 0.1.0's did.
            **({"target_from": self.target_from} if self.target_from is not None else {}),
            **({"target_choices": self.target_choices} if self.target_choices else {}),
            **({"item_from": self.item_from} if self.item_from is not None else {}),
            # Only when set: a step without it hashes as 0.1.0's did.
            **({"approval": self.approval.to_json()} if self.approval is not None else {}),
            **({"guards": [g.to_json() for g in self.guards]} if self.guards else {}),
        }
        # Only when set: a runbook without ``fences:`` keeps the plan hash 0.1.0 gave it.
        if self.fences is not None:
            data["fences"] = self.fences.name
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], targets: dict[str, dict[str, Any]]) -> CompiledStep:
        return cls(
            id=data["id"],
            base_id=data["base_id"],
            type=data["type"],
            target=_target_ref(data.get("target"), targets),
            description=data["description"],
            inputs=data["inputs"],
            deferred=tuple(data.get("deferred") or ()),
            requires=tuple(data.get("requires") or ()),
            approve=bool(data["approve"]),
            when=data.get("when"),
            timeout=float(data["timeout"]),
            retries=Retries.from_json(data["retries"]),
            on_failure=OnFailure.from_json(data["on_failure"]),
            rollback=None
            if data.get("rollback") is None
            else Rollback.from_json(data["rollback"], targets),
            roles=tuple(data.get("roles") or ()),
            mutates=bool(data["mutates"]),
            verifies=bool(data["verifies"]),
            can_undo=bool(data["can_undo"]),
            item=data.get("item"),
            loop_var=data.get("loop_var"),
            lints=tuple(data.get("lints") or ()),
            fallback=bool(data.get("fallback", False)),
            fences=_target_ref(data.get("fences"), targets),
            target_from=data.get("target_from"),
            target_choices=tuple(data.get("target_choices") or ()),
            item_from=data.get("item_from"),
            approval=None
            if data.get("approval") is None
            else ApprovalPolicy.from_json(data["approval"]),
            guards=tuple(CompiledGuard.from_json(g, targets) for g in data.get("guards", ())),
        )


_STEP_FIELDS = frozenset(f.name for f in fields(CompiledStep))
_STEP_DEFAULTS = {f.name: f.default for f in fields(CompiledStep) if f.default is not MISSING}


def expression_text(template: str) -> str:
    """A one-expression template as words (``{{ steps.a.outputs.b }}`` → ``steps.a.outputs.b``)."""
    text = template.strip()
    if text.startswith("{{") and text.endswith("}}") and text.count("{{") == 1:
        return text[2:-2].strip(" -")
    return f"the template {text!r}"


def _target_ref(name: str | None, targets: dict[str, dict[str, Any]]) -> TargetRef | None:
    if name is None:
        return None
    return TargetRef(name, str(targets.get(name, {}).get("type", "")))


class TripAction(StrEnum):
    """What a tripped guard does to the run."""

    HALT = "halt"  # launch nothing more; in-flight steps finish; resumable
    ROLLBACK = "rollback"  # halt, then undo completed mutating steps in reverse


@dataclass(frozen=True)
class CompiledGuard:
    """A stop condition of the plan: a read-only step and when its readings trip the run."""

    step: CompiledStep
    every: float
    trip_after: int
    on_trip: TripAction
    #: A reading that cannot be taken counts as failed (True) or is left out (False).
    error_trips: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step.to_json(),
            "every": self.every,
            "trip_after": self.trip_after,
            "on_trip": self.on_trip.value,
            "on_error": "trip" if self.error_trips else "ignore",
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], targets: dict[str, dict[str, Any]]) -> CompiledGuard:
        return cls(
            step=CompiledStep.from_json(data["step"], targets),
            every=float(data["every"]),
            trip_after=int(data["trip_after"]),
            on_trip=TripAction(data["on_trip"]),
            error_trips=data["on_error"] == "trip",
        )


@dataclass(frozen=True)
class Plan:
    """A compiled runbook: ordered steps with rendered inputs, lints, and a stable hash."""

    name: str
    description: str
    source: str
    params: dict[str, Any]
    objectives: dict[str, float | None]
    settings: Settings
    #: Each target's fields as written (secret references unresolved), by name.
    targets: dict[str, dict[str, Any]]
    steps: tuple[CompiledStep, ...]
    fallbacks: tuple[CompiledStep, ...]
    lints: tuple[LintFinding, ...]
    hash: str = field(default="")
    #: What the compiler warned of (not hashed, not stored: it changes nothing the plan does).
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False)
    #: Required params given stand-in values (``drctl validate``): the hash is of those.
    stand_ins: tuple[str, ...] = field(default=(), compare=False)
    #: Stop conditions evaluated while the run lasts (``guards:``).
    guards: tuple[CompiledGuard, ...] = ()

    @property
    def lock_key(self) -> str:
        """The lock a run of this plan takes."""
        return self.settings.lock_key(self.name)

    @cached_property
    def _masked(self) -> Plan:
        def step(s: CompiledStep) -> CompiledStep:
            inputs = mask(None, s.inputs)
            rollback = s.rollback
            if rollback is not None:
                rollback = replace(rollback, inputs=mask(None, rollback.inputs))
            guards = tuple(replace(g, step=step(g.step)) for g in s.guards)
            if inputs == s.inputs and rollback == s.rollback and guards == s.guards:
                return s
            return replace(s, inputs=inputs, rollback=rollback, guards=guards)

        return replace(
            self,
            params={k: mask(k, v) for k, v in self.params.items()},
            targets=mask(None, self.targets),
            steps=tuple(step(s) for s in self.steps),
            fallbacks=tuple(step(s) for s in self.fallbacks),
            guards=tuple(replace(g, step=step(g.step)) for g in self.guards),
        )

    def masked(self) -> Plan:
        """This plan with literal secrets (lint DR005) replaced by ``***``.

        The in-memory plan keeps literal values so the engine can run it; every
        rendered or stored form of a plan is made from this masked copy (computed once).
        """
        return self._masked

    def content(self) -> dict[str, Any]:
        """Everything that decides what the plan does (the hashed part), secrets masked.

        A new dict each call (``to_dict`` adds to it); what it holds is shared, never
        changed, and made once: hashing the plan and storing it read the same.
        """
        return dict(self._content)

    def hashed(self) -> Plan:
        """This plan with its hash, sharing its content and its text (the hash is no part
        of either)."""
        text = self._canonical
        plan = replace(self, hash=_text_digest(text))
        # cached_property keeps its value in the instance's __dict__, as here.
        plan.__dict__["_content"] = self._content
        plan.__dict__["_canonical"] = text
        return plan

    def text(self) -> str:
        """The hashed part as the canonical JSON text the hash is of (made once)."""
        return self._canonical

    @cached_property
    def _canonical(self) -> str:
        return canonical_json(self._content)

    @cached_property
    def _content(self) -> dict[str, Any]:
        shown = self.masked()
        # Built by hand: dataclasses.asdict deep-copies every input and was most of the
        # cost of compiling a 1,000-step fan-out. Nothing here is mutated afterwards.
        return {
            "name": shown.name,
            "description": shown.description,
            "params": shown.params,
            "objectives": shown.objectives,
            "settings": shown.settings.to_json(),
            "targets": shown.targets,
            "steps": [s.to_json() for s in shown.steps],
            "fallbacks": [s.to_json() for s in shown.fallbacks],
            "lints": [
                {
                    "code": x.code,
                    "message": x.message,
                    "step": x.step,
                    "acknowledged": x.acknowledged,
                    **({"warning": True} if x.warning else {}),
                }
                for x in shown.lints
            ],
            "format": PLAN_FORMAT,
            # Only when there are any: a plan without guards hashes as 0.1.0's did.
            **({"guards": [g.to_json() for g in shown.guards]} if shown.guards else {}),
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


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def plan_hash(plan: Plan) -> str:
    return _digest(plan.content())


def _digest(content: dict[str, Any]) -> str:
    return _text_digest(canonical_json(content))


def _text_digest(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """Rebuild a Plan from ``to_dict()`` output (a stored plan: ``RunRecord.plan()``)."""
    targets: dict[str, dict[str, Any]] = data["targets"]
    return Plan(
        name=data["name"],
        description=data["description"],
        source=data.get("source", ""),
        params=data["params"],
        objectives=data["objectives"],
        settings=Settings.from_json(data["settings"]),
        targets=targets,
        steps=tuple(CompiledStep.from_json(s, targets) for s in data["steps"]),
        fallbacks=tuple(CompiledStep.from_json(s, targets) for s in data["fallbacks"]),
        lints=tuple(LintFinding(**lint) for lint in data["lints"]),
        hash=data.get("hash", ""),
        guards=tuple(CompiledGuard.from_json(g, targets) for g in data.get("guards", ())),
    )
