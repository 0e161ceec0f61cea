"""The contract every step type implements, built in or from a plugin.

A step type declares its ``with`` model (validated at compile time), its roles
(which the safety lints read; lints never look at type names), and implements
``describe`` (offline, one line for the plan), ``check`` (read-only preflight),
``apply``, ``verify`` (the postcondition; on resume it decides whether an
interrupted step already took effect) and optionally ``undo``.

A step type is generic in its inputs and its target: ``StepType[I, T]`` is handed a
``StepContext[I, T]`` whose ``inputs`` is an ``I`` and whose ``target`` is a ``T``
(the target's own model, secrets resolved), so nothing needs narrowing at run time::

    class CountInputs(StepInputs):
        table: str

    class RowCount(StepType[CountInputs, PostgresTarget]):
        '''Count the rows of a table.'''

        name = "acme.row_count"
        Inputs = CountInputs
        target_types = frozenset({"postgres"})
        target_required = True

        def describe(self, inputs: CountInputs, target: str | None) -> str:
            return f"count {inputs.table} on {target}"

        def apply(self, ctx: StepContext[CountInputs, PostgresTarget]) -> None:
            ctx.output("rows", count(ctx.target.dsn, ctx.inputs.table))

Waits take their time from the context (``ctx.poll``, ``ctx.sleep``, ``ctx.monotonic``),
so ``drctl.testing.FakeContext`` can run them on a fake clock.

The engine owns journaling, dry-run, timeouts and retries; a step type cannot
bypass them because it is only ever called by the engine.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Protocol, overload

from pydantic import BaseModel, ConfigDict
from typing_extensions import TypeVar

from drctl.errors import StepError
from drctl.runbook.targets import TargetModel


class Role(StrEnum):
    """What a step does, as far as the safety lints are concerned."""

    FENCE = "fence"
    PROMOTE = "promote"
    LAG_CHECK = "lag_check"
    TRAFFIC = "traffic"
    VERIFY = "verify"
    MUTATING = "mutating"
    GATE = "gate"
    #: Pauses the HA manager of a cluster (Patroni's maintenance mode); DR006 reads it.
    HA_PAUSE = "ha_pause"
    #: Hands the cluster back to its HA manager.
    HA_RESUME = "ha_resume"


class StepInputs(BaseModel):
    """Base of every step type's ``with`` model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


#: A step type's ``with`` model.
I = TypeVar("I", bound=StepInputs, default=StepInputs)  # noqa: E741 (the conventional name)
#: The model of the target a step type acts on (``None`` for a step type without one).
T = TypeVar("T", bound=TargetModel | None, default=TargetModel | None)
I_co = TypeVar("I_co", bound=StepInputs, default=StepInputs, covariant=True)
T_co = TypeVar("T_co", bound=TargetModel | None, default=TargetModel | None, covariant=True)
J = TypeVar("J", bound=StepInputs)
U = TypeVar("U", bound=TargetModel | None)
M = TypeVar("M", bound=TargetModel)
R = TypeVar("R")


@dataclass(frozen=True)
class Polled(Generic[R]):
    """What :meth:`StepContext.poll` saw: the value that ended the wait, or the last error."""

    #: What ``check`` returned when it was not None; None if the time ran out first.
    value: R | None
    polls: int
    #: Seconds from the first check to the last, on the step's clock.
    waited: float
    #: The last error ``check`` raised of the kinds the caller let it retry on.
    error: StepError | None = None

    @property
    def done(self) -> bool:
        return self.value is not None


class FenceStatus(StrEnum):
    """Where a fence step of this run stands, as the engine knows it (StepStatus's words).

    Step types cannot see the engine's StepStatus, so the engine translates to this.
    """

    SUCCEEDED = "succeeded"
    RECOVERED = "recovered"  # failed, and its fallback step succeeded
    FAILED = "failed"
    IGNORED = "ignored"  # failed, under ``on_failure: continue``
    SKIPPED = "skipped"
    IN_DOUBT = "in_doubt"  # started, no outcome known
    PENDING = "pending"  # not run (yet)

    @property
    def proven(self) -> bool:
        """The fence took effect: its own verify passed, or its fallback's did."""
        return self in (FenceStatus.SUCCEEDED, FenceStatus.RECOVERED)


@dataclass(frozen=True)
class FenceRecord:
    """One fence-role step on this step's path (one it waits for), and how it ended."""

    step_id: str
    #: The target the fence acts on; None for a fence step without one.
    target: str | None
    status: FenceStatus
    #: The target it fences: its ``fences:``, else its own target (None: neither).
    fences: str | None = None


@dataclass(frozen=True)
class StepFacts:
    """A step of this run that has finished, and what it published (``ctx.facts()``).

    The outputs are the journal's (JSON values): a step type reads the keys it knows of
    another type, in the same provider, and checks their types as it reads them.
    """

    step_id: str
    #: The step's type name (``postgres.fence``).
    type: str
    #: The name of the target it acted on; None for a step without one.
    target: str | None
    outputs: Mapping[str, Any]


class StepContext(Protocol[I_co, T_co]):
    """What the engine hands a step type while it runs one attempt of one step.

    ``inputs`` is the step type's own ``with`` model and ``target`` its target's own
    model, secret references resolved; whatever a step logs, records or outputs is
    redacted before it is shown or journaled. Time comes from here too
    (``monotonic``, ``sleep``, ``poll``), so tests can run a step type on a fake clock.
    """

    @property
    def step_id(self) -> str: ...

    @property
    def attempt(self) -> int: ...

    @property
    def inputs(self) -> I_co: ...

    @property
    def target(self) -> T_co:
        """The step's target with secrets resolved; None for a step without one."""

    @property
    def target_name(self) -> str | None:
        """The runbook's name for the step's target (``node3``); None for a step without one."""

    @property
    def recorded(self) -> Mapping[str, Any]:
        """What ``apply`` recorded for this step (for ``verify`` and ``undo``), from the journal."""

    @property
    def dry_run(self) -> bool: ...

    @property
    def run_id(self) -> str: ...

    @property
    def runbook(self) -> str: ...

    def record(self, key: str, value: Any) -> None:
        """Keep a value for ``verify`` and ``undo``; durable in the journal before it returns."""

    def output(self, key: str, value: Any) -> None:
        """Publish ``steps.<id>.outputs.<key>`` for later steps."""

    def log(self, line: str) -> None:
        """One line of step output, redacted and shown live."""

    def remaining(self) -> float:
        """Seconds left before the step's timeout."""

    def monotonic(self) -> float:
        """The step's clock, in seconds; only differences between two readings mean anything."""

    @property
    def cancelled(self) -> bool:
        """True once the operator cancelled in-flight steps or the attempt timed out."""

    def sleep(self, seconds: float) -> None:
        """Sleep (capped at the deadline); raises Cancelled if cancelled meanwhile."""

    def poll(
        self,
        check: Callable[[], R | None],
        *,
        every: float,
        within: float,
        retry_on: tuple[type[StepError], ...] = (),
    ) -> Polled[R]:
        """Call ``check`` now and every ``every`` seconds until it returns a value.

        Gives up when the next check would come more than ``within`` seconds (or the
        step's remaining time, if less) after the first. Errors of the ``retry_on``
        kinds count as "not yet" (the last one is kept); any other error ends the wait.
        """

    def raise_if_cancelled(self) -> None: ...

    @overload
    def target_named(self, name: str) -> TargetModel: ...

    @overload
    def target_named(self, name: str, kind: type[M]) -> M: ...

    def target_named(self, name: str, kind: type[M] | None = None) -> TargetModel:
        """Another target of the runbook, secrets resolved; a StepError unless it is a ``kind``."""

    def derive(self, inputs: J, target: U) -> StepContext[J, U]:
        """A context for running another step type's check/verify inside this step."""

    def fences(self) -> tuple[FenceRecord, ...]:
        """This run's fence-role steps that this step waits for, in plan order, as they ended.

        A promote reads this so that a fence that failed (even one ignored under
        ``on_failure: continue``), was skipped or is in doubt never counts as a fence.
        Empty in a dry run's checks of steps whose fences have not run.
        """

    def facts(self) -> tuple[StepFacts, ...]:
        """Every step of this run that has finished so far, fallbacks included, in the
        order they finished, with what each published (a resumed run's from the journal).

        What a promote reads for the handoff proof: the fence's ``final_lsn``, the WAL
        positions earlier steps saw, a choice's table. Empty in a dry run's checks.
        """


def poll(
    ctx: StepContext[Any, Any],
    check: Callable[[], R | None],
    *,
    every: float,
    within: float,
    retry_on: tuple[type[StepError], ...] = (),
) -> Polled[R]:
    """The one polling loop behind every context's ``poll`` (see StepContext.poll)."""
    if every <= 0:
        raise StepError(f"cannot poll every {every:g}s: the interval must be more than 0")
    started = ctx.monotonic()
    span = max(0.0, min(within, ctx.remaining()))
    deadline = started + span
    # Bounded by a count too, so a context whose clock does not move cannot spin.
    limit = int(span / every) + 2
    polls = 0
    error: StepError | None = None
    while True:
        polls += 1
        try:
            value = check()
        except retry_on as exc:
            value, error = None, exc
        now = ctx.monotonic()
        if value is not None:
            return Polled(value, polls, now - started, error)
        # The last check is the one after which another would come past ``within``
        # (a nanosecond of slack: five 0.2 s sleeps add up to a hair over one second).
        if now + every > deadline + 1e-9 or polls >= limit:
            return Polled(None, polls, now - started, error)
        ctx.sleep(every)


def target_of(name: str, target: TargetModel, kind: type[M]) -> M:
    """``target`` as a ``kind``, or a StepError naming what it is instead."""
    if not isinstance(target, kind):
        raise StepError(f"target {name!r} is a {target.type} target, not the kind this step needs")
    return target


class StepType(ABC, Generic[I, T]):
    """A kind of step. Subclasses set the class attributes and implement the methods.

    ``I`` is the ``with`` model (``Inputs``), ``T`` the model of the target the step
    acts on at run time (``None`` when it takes none; ``X | None`` when optional).
    One base per provider family (``PostgresStep``…) fixes ``T``, ``target_types``
    and ``warm_up`` once.
    """

    name: ClassVar[str]
    Inputs: type[I]
    roles: ClassVar[frozenset[Role]] = frozenset()
    #: Target types this step acts on; empty means the step takes no target.
    target_types: ClassVar[frozenset[str]] = frozenset()
    target_required: ClassVar[bool] = False
    #: What the step type publishes as ``steps.<id>.outputs.<name>``: name → meaning. The
    #: catalogue lists it; a test holds every ``ctx.output`` key of a type to it.
    outputs: ClassVar[Mapping[str, str]] = {}

    def warm_up(self) -> None:
        """Import what the step needs (its client library) ahead of time.

        Import everything the step type imports lazily: the engine calls it through
        :meth:`warm`, in a background thread when a run starts and again before the
        step's first call, so no step imports a module another thread is importing.
        """

    def warm(self) -> None:
        """Run ``warm_up`` once per process, under the one import lock; never raises.

        A step's first call waits here for its own warm-up: two threads importing one
        package at once can each see the other's half-initialised module
        (``ImportError: … partially initialized module``). A failing import is left for
        the step itself to report.
        """
        if type(self) in _WARMED:
            return
        with _IMPORTS:
            if type(self) in _WARMED:
                return
            # Only a head start: a failing import is reported by the step that needs it.
            with contextlib.suppress(Exception):
                self.warm_up()
            _WARMED.add(type(self))

    def step_roles(self, inputs: I) -> frozenset[Role]:
        """The roles of one step of this type; some types' roles depend on their inputs."""
        return self.roles

    def lag_limit(self, inputs: I) -> int | None:
        """Bytes of WAL not received that this step lets through (lint DR007 compares them).

        A lag check's ``max_bytes``, a promote's ``max_lag_bytes``; None: no byte limit.
        """
        return None

    def verifies(self, inputs: I) -> bool:
        """Whether ``verify`` proves this step's effect (DR004 reads this)."""
        return True

    def target_outputs(self, inputs: I) -> Mapping[str, tuple[str, ...]]:
        """Outputs that name targets, each with the targets it can name (offline).

        A later step's ``target`` (or ``for_each``) reading one of these outputs is
        decided at run time among those targets, with no ``target_one_of`` needed.
        """
        return {}

    def runs_in_dry_run(self, inputs: I) -> bool:
        """Whether a dry run runs this read-only step for real (not only its ``check``).

        True for a step that only reads; False for one that reads but has an effect a
        dry run must not have (sends a message, writes a probe row, waits a fixed time).
        A mutating step is never run in a dry run, whatever this says.
        """
        return True

    #: The ``with`` fields (seconds) the step waits for by itself, one after another.
    wait_fields: ClassVar[tuple[str, ...]] = ()

    def own_waits(self, inputs: I) -> dict[str, float]:
        """The step's own waits by ``with`` field, in seconds: they must fit in its timeout.

        The compiler refuses a step whose written waits add up to more than its timeout
        and derives the default timeout from them (see docs/runbook-reference.md).
        """
        out: dict[str, float] = {}
        for name in self.wait_fields:
            value = getattr(inputs, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                out[name] = float(value)
        return out

    def returns_in_time(self, inputs: I) -> bool:
        """Whether every call with ``inputs`` returns by itself soon after the deadline.

        True only when no call can block on anything it does not bound with
        ``ctx.remaining()`` (no network, no foreign lock), its clean-up past the deadline
        bounded too. The engine then makes the call in the step's own worker thread
        instead of a call thread it could abandon; the default, False, keeps that guard.
        """
        return False

    @abstractmethod
    def describe(self, inputs: I, target: str | None) -> str:
        """One line saying what the step will do; offline, no I/O."""

    def check(self, ctx: StepContext[I, T]) -> str | None:
        """Read-only preflight; returns what the step would change, or raises."""
        return None

    def preflight(self, ctx: StepContext[I, T]) -> str | None:
        """Read-only checks to pass before the point of no return; returns what was found.

        The engine calls it for a promote-role step right before the first fence-role
        step it waits for starts (journaled), and fails the run there, before any fence,
        when it raises a StepError. The default checks nothing (None).
        """
        return None

    @abstractmethod
    def apply(self, ctx: StepContext[I, T]) -> None:
        """Perform the change."""

    def verify(self, ctx: StepContext[I, T]) -> bool:
        """Whether the step's effect is in place."""
        return True

    def undo(self, ctx: StepContext[I, T]) -> None:
        """Reverse ``apply``; only called when ``undoable`` says so."""
        raise StepError(f"step type {self.name} cannot be undone")

    def undoable(self, inputs: I) -> bool:
        """Whether ``undo`` can reverse a step with these inputs."""
        return type(self).undo is not StepType.undo

    @classmethod
    def summary(cls) -> str:
        """The first line of the type's docstring, for the catalogue."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


#: Held while a step type warms up: imports of client libraries go one at a time.
_IMPORTS = threading.RLock()
_WARMED: set[type[StepType[Any, Any]]] = set()


def published(described: Mapping[str, str]) -> Mapping[str, str]:
    """A step type's declared outputs (name → meaning), read-only."""
    return MappingProxyType(dict(described))


def short(value: Any, limit: int = 60) -> str:
    """A value as one short line for descriptions."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
