"""The contract every step type implements, built in or from a plugin.

A step type declares its ``with`` model (validated at compile time), its roles
(which the safety lints read; lints never look at type names), and implements
``describe`` (offline, one line for the plan), ``check`` (read-only preflight),
``apply``, ``verify`` (the postcondition; on resume it decides whether an
interrupted step already took effect) and optionally ``undo``.

The engine owns journaling, dry-run, timeouts and retries; a step type cannot
bypass them because it is only ever called by the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from drctl.errors import StepError


class Role(StrEnum):
    """What a step does, as far as the safety lints are concerned."""

    FENCE = "fence"
    PROMOTE = "promote"
    LAG_CHECK = "lag_check"
    TRAFFIC = "traffic"
    VERIFY = "verify"
    MUTATING = "mutating"
    GATE = "gate"


class StepInputs(BaseModel):
    """Base of every step type's ``with`` model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


class StepContext(Protocol):
    """What the engine hands a step type while it runs one attempt of one step.

    Secret references in ``inputs`` and ``target`` are already resolved; whatever a
    step logs, records or outputs is redacted before it is shown or journaled.
    """

    @property
    def step_id(self) -> str: ...

    @property
    def attempt(self) -> int: ...

    @property
    def inputs(self) -> StepInputs: ...

    @property
    def target(self) -> Mapping[str, Any] | None:
        """The step's target with secrets resolved; None if it has none."""

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

    @property
    def cancelled(self) -> bool:
        """True once the operator cancelled in-flight steps or the attempt timed out."""

    def sleep(self, seconds: float) -> None:
        """Sleep (capped at the deadline); raises Cancelled if cancelled meanwhile."""

    def raise_if_cancelled(self) -> None: ...

    def target_named(self, name: str) -> Mapping[str, Any]:
        """Another target of the runbook, secrets resolved."""

    def derive(self, inputs: StepInputs, target: Mapping[str, Any] | None) -> StepContext:
        """A context for running another step type's check/verify inside this step."""


class StepType(ABC):
    """A kind of step. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    Inputs: ClassVar[type[StepInputs]]
    roles: ClassVar[frozenset[Role]] = frozenset()
    #: Target types this step acts on; empty means the step takes no target.
    target_types: ClassVar[frozenset[str]] = frozenset()
    target_required: ClassVar[bool] = False

    def warm_up(self) -> None:  # noqa: B027 (an optional hook: most step types need nothing)
        """Import what the step needs (its client library) ahead of time.

        The engine calls it in a background thread when a run starts, so a slow import
        overlaps the lock and the first journal writes instead of the first step.
        """

    def step_roles(self, inputs: StepInputs) -> frozenset[Role]:
        """The roles of one step of this type; some types' roles depend on their inputs."""
        return self.roles

    def verifies(self, inputs: StepInputs) -> bool:
        """Whether ``verify`` proves this step's effect (DR004 reads this)."""
        return True

    @abstractmethod
    def describe(self, inputs: StepInputs, target: str | None) -> str:
        """One line saying what the step will do; offline, no I/O."""

    def check(self, ctx: StepContext) -> str | None:
        """Read-only preflight; returns what the step would change, or raises."""
        return None

    @abstractmethod
    def apply(self, ctx: StepContext) -> None:
        """Perform the change."""

    def verify(self, ctx: StepContext) -> bool:
        """Whether the step's effect is in place."""
        return True

    def undo(self, ctx: StepContext) -> None:
        """Reverse ``apply``; only called when ``undoable`` says so."""
        raise StepError(f"step type {self.name} cannot be undone")

    def undoable(self, inputs: StepInputs) -> bool:
        """Whether ``undo`` can reverse a step with these inputs."""
        return type(self).undo is not StepType.undo

    @classmethod
    def summary(cls) -> str:
        """The first line of the type's docstring, for the catalogue."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


def short(value: Any, limit: int = 60) -> str:
    """A value as one short line for descriptions."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
