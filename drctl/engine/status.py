"""Where steps and runs stand, how the scheduler stops, and what a gate decides.

Every state drctl stores, shows or decides on is one of these; no module spells the
words itself (the journal and the run record hold their ``value``).
"""

from __future__ import annotations

from enum import StrEnum


class StepStatus(StrEnum):
    """Where one step stands, as its journal tells it (and as the live view shows it)."""

    PENDING = "pending"  # not started
    WAITING = "waiting"  # at its approval gate
    RUNNING = "running"  # started, no outcome yet (in doubt, if the run is not live)
    INTERRUPTED = "interrupted"  # started, no outcome, and its run stopped: resume verifies it
    RETRYING = "retrying"  # an attempt failed; another follows
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # its ``when`` was false
    RECOVERED = "recovered"  # failed, and its fallback step succeeded
    IGNORED = "ignored"  # failed, under ``on_failure: continue``
    CHECKED = "checked"  # a dry run checked it
    UNDOING = "undoing"
    UNDONE = "undone"

    @property
    def done(self) -> bool:
        """Finished in a way that lets dependent steps run."""
        return self in _DONE


_DONE = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.RECOVERED, StepStatus.IGNORED}
)


class RunStatus(StrEnum):
    """Where a run stands, as stored on its record and in its ``run_finished``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    HALTED = "halted"  # a brake (freeze) held: resumable once lifted
    WAITING_APPROVAL = "waiting_approval"
    DENIED = "denied"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    DRY_RUN_OK = "dry_run_ok"
    DRY_RUN_FAILED = "dry_run_failed"

    @property
    def unfinished(self) -> bool:
        """The run can be resumed (and blocks a new run of its runbook under its lock)."""
        return self in _UNFINISHED

    @property
    def concluded(self) -> bool:
        """The run is over for good: nothing will resume it."""
        return self in _CONCLUDED

    @property
    def words(self) -> str:
        """The status as a phrase (``rolled back``)."""
        return self.value.replace("_", " ")


_UNFINISHED = frozenset(
    {
        RunStatus.RUNNING,
        RunStatus.FAILED,
        RunStatus.INTERRUPTED,
        RunStatus.HALTED,
        RunStatus.WAITING_APPROVAL,
        RunStatus.DENIED,
    }
)
_CONCLUDED = frozenset({RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK, RunStatus.ABORTED})


class StopReason(StrEnum):
    """Why the scheduler stopped launching steps."""

    INTERRUPTED = "interrupted"  # Ctrl-C, or a step cancelled
    FAILED = "failed"  # a step failed for good, or the run lost its lock
    ROLLBACK = "rollback"  # a step failed under ``on_failure: rollback``
    APPROVAL = "approval"  # a gate needs an approval nobody gave
    DENIED = "denied"  # a gate was denied
    HALTED = "halted"  # a brake held before a mutating step (drctl freeze)


class GateVerdict(StrEnum):
    """What the gate decider says about a step that needs approval."""

    GRANTED = "granted"
    DENIED = "denied"
    NEEDED = "needed"  # nobody decided: the run stops, waiting for approval
    INTERRUPTED = "interrupted"  # Ctrl-C at the prompt: the run stops, resumable
