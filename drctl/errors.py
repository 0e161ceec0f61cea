"""The one exception hierarchy of drctl. The CLI renders these once, at the edge.

::

    DrctlError                      exit 1 unless a subclass says otherwise
    ├── UsageError                  exit 2: a bad flag or argument
    │   └── RunNotFound             exit 2: no run with that id in the state store
    ├── RunbookInvalid              exit 2: carries every Diagnostic found in the input
    ├── StepTypeError               exit 2: a step type is unknown or failed to load
    ├── StateError                  exit 1: the state store cannot be opened or written
    │   └── LockLost                exit 1: our lease was taken over or ran out; stop writing
    ├── LockHeld                    exit 3: another run holds the lock (names the holder)
    │   └── CooldownActive          exit 3: the lock key's last run finished within its cooldown
    ├── Frozen                      exit 3: drctl freeze holds mutating runs (names who, why)
    ├── ApprovalRefused             exit 3: an approval that cannot count (the starter's own)
    ├── ResumeRefused               exit 1: resume would be unsafe (changed plan, in-doubt step)
    ├── StepError                   exit 1: a step failed; raised by step types, journaled
    │   ├── Unreachable             a system did not answer (refused, timed out, no route,
    │   │                           name not resolved, no handshake) — any provider's client
    │   ├── StepTimeout             the step ran past its timeout
    │   └── VerifyFailed            apply returned but the postcondition does not hold
    └── Cancelled                   exit 130: the operator cancelled in-flight steps

Foreign exceptions (yaml, pydantic, jinja2, the providers' client libraries) are
translated to these once, where they are caught, keeping the cause (``raise … from
exc``); ``first_line`` is how a foreign message is quoted in ours.
"""

from __future__ import annotations

from collections.abc import Iterable

from drctl.diagnostics import Diagnostic


class DrctlError(Exception):
    """Base of every error drctl raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(DrctlError):
    """Raised for a bad command-line flag or argument (exit 2)."""

    exit_code = 2


class RunbookInvalid(DrctlError):
    """Raised when a runbook, its parameters or its params file has errors (exit 2).

    Holds all the diagnostics found, sorted by place, so the user fixes them in one pass.
    """

    exit_code = 2

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = tuple(sorted(diagnostics, key=Diagnostic.sort_key))
        count = sum(1 for d in self.diagnostics if d.severity.value == "error")
        warned = len(self.diagnostics) - count
        also = f" (and {warned} warning{'s' if warned != 1 else ''})" if warned else ""
        super().__init__(f"{count} error{'s' if count != 1 else ''} found{also}")


class StepTypeError(DrctlError):
    """Raised when a step type name is unknown or its plugin fails to import (exit 2)."""

    exit_code = 2


class RunNotFound(UsageError):
    """Raised when a run id (or ``--last``) matches no run in the state store."""


class StateError(DrctlError):
    """Raised when the state store cannot be opened, migrated or written."""


class LockLost(StateError):
    """Raised when our lease is no longer the lock's current one (expired and taken over,
    or force-unlocked), or ran out while the store failed its heartbeats (the message says
    so, the store's error is its cause): the run must stop writing and stop launching steps."""


class LockHeld(DrctlError):
    """Raised when another live run holds the lock key (exit 3); the message names it."""

    exit_code = 3


class CooldownActive(LockHeld):
    """Raised when a new mutating run starts within ``settings.cooldown`` of the last
    finished run on its lock key (exit 3); the message names that run, who ran it and when."""


class Frozen(DrctlError):
    """Raised when a mutating run would start or resume while ``drctl freeze`` holds its
    lock key (exit 3); the message names who froze it, when and why."""

    exit_code = 3


class ApprovalRefused(DrctlError):
    """Raised by ``drctl approve`` when the approval cannot count: the run's starter
    approving a gate that needs someone else, or one person approving twice (exit 3)."""

    exit_code = 3


class ResumeRefused(DrctlError):
    """Raised when resuming would be unsafe: the plan changed, or a mutating step was
    interrupted and cannot verify whether it took effect."""


class StepError(DrctlError):
    """Raised by a step type when its check, apply, verify or undo fails.

    Providers translate their client library's exceptions into this (or a subclass)
    once, keeping the cause; the engine journals the message and applies retries and
    ``on_failure``.
    """


class Unreachable(StepError):
    """Raised when the system a step talks to does not answer: the connection is refused
    or times out, the name does not resolve, the handshake never completes.

    Every provider translates its client's "no answer" errors to this one class, so a
    step that must tell "refused" from "silent" (a fence proof: a server that does not
    answer may still take writes behind a partition) works the same for any system.
    """


class StepTimeout(StepError):
    """Raised when a step runs past its timeout."""


class VerifyFailed(StepError):
    """Raised when apply returned but verify says the effect is not in place."""


class Cancelled(DrctlError):
    """Raised inside a step when the operator cancels in-flight steps (second Ctrl-C).

    Deliberately not a StepError, so step code that handles its own failures does not
    swallow it. Nothing is journaled for the step: it stays "started with no outcome",
    and resume probes ``verify`` before doing anything again.
    """

    exit_code = 130


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name if it has none), for ours."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
