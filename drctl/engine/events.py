"""The journal's events: one frozen class per kind. A run's story is the sequence of these.

Each class holds the facts of its kind, typed; ``to_json`` gives the data the store
keeps and ``from_json`` reads it back (``decode`` does it for a stored ``Event``). The
JSON form is the one drctl 0.1.0 wrote, key for key, so that journals written since
0.1.0 read back, resume and render; a key 0.1.0 did not always write reads back as its
default. Dicts exist only here and in the store: every other module reads these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Self

from drctl.engine.status import RunStatus
from drctl.state.base import Event

if TYPE_CHECKING:
    # At run time these come through ``__getattr__`` below, on first use.
    from drctl.engine.occasional_events import (
        AckLog,
        ApprovalDenied,
        ApprovalRefused,
        CanarySettings,
        CheckReading,
        CheckRecorded,
        CooldownOverridden,
        DrillMeasured,
        DrillPaused,
        GuardReading,
        GuardTripped,
        LockForceReleased,
        LockTakenOver,
        RunAborted,
        RunHalted,
        RunResumed,
        StepRecovered,
        UndoFailed,
        UndoStarted,
        UndoSucceeded,
    )

__all__ = [
    "APPROVAL_DENIED",
    "APPROVAL_GIVEN",
    "APPROVAL_GRANTED",
    "APPROVAL_NEEDED",
    "APPROVAL_REFUSED",
    "CHECK_RECORDED",
    "COOLDOWN_OVERRIDDEN",
    "DRILL_MEASURED",
    "DRILL_PAUSED",
    "GUARD_READING",
    "GUARD_TRIPPED",
    "KINDS",
    "LOCK_FORCE_RELEASED",
    "LOCK_TAKEN_OVER",
    "OCCASIONAL_KINDS",
    "RUN_ABORTED",
    "RUN_FINISHED",
    "RUN_HALTED",
    "RUN_INTERRUPTED",
    "RUN_RESUMED",
    "RUN_STARTED",
    "STEP_CHECKED",
    "STEP_FAILED",
    "STEP_PREFLIGHTED",
    "STEP_RECORDED",
    "STEP_RECOVERED",
    "STEP_SKIPPED",
    "STEP_STARTED",
    "STEP_SUCCEEDED",
    "UNDO_FAILED",
    "UNDO_STARTED",
    "UNDO_SUCCEEDED",
    "AckLog",
    "ApprovalDenied",
    "ApprovalGiven",
    "ApprovalGranted",
    "ApprovalNeeded",
    "ApprovalRefused",
    "CanarySettings",
    "CheckReading",
    "CheckRecorded",
    "CooldownOverridden",
    "DrillMeasured",
    "DrillPaused",
    "GuardReading",
    "GuardTripped",
    "JournalEvent",
    "LockForceReleased",
    "LockTakenOver",
    "RunAborted",
    "RunFinished",
    "RunHalted",
    "RunInterrupted",
    "RunResumed",
    "RunStarted",
    "StepChecked",
    "StepEvent",
    "StepFailed",
    "StepPreflighted",
    "StepRecorded",
    "StepRecovered",
    "StepSkipped",
    "StepStarted",
    "StepSucceeded",
    "UndoFailed",
    "UndoStarted",
    "UndoSucceeded",
    "Unknown",
    "decided",
    "decode",
    "kind_of",
]

RUN_STARTED = "run_started"
RUN_RESUMED = "run_resumed"
RUN_INTERRUPTED = "run_interrupted"
RUN_FINISHED = "run_finished"
RUN_ABORTED = "run_aborted"
RUN_HALTED = "run_halted"  # stopped launching steps by a brake (a freeze); resumable
GUARD_READING = "guard_reading"  # a guard's state changed (ok, failing, unreadable)
GUARD_TRIPPED = "guard_tripped"
CHECK_RECORDED = "check_recorded"  # drctl check: the readings of a dry run, for the next one
LOCK_TAKEN_OVER = "lock_taken_over"
LOCK_FORCE_RELEASED = "lock_force_released"
COOLDOWN_OVERRIDDEN = "cooldown_overridden"  # a run started within the cooldown, on purpose
APPROVAL_NEEDED = "approval_needed"
APPROVAL_GRANTED = "approval_granted"
APPROVAL_DENIED = "approval_denied"
APPROVAL_GIVEN = "approval_given"  # one person's approval of a gate (drctl approve, a prompt)
APPROVAL_REFUSED = "approval_refused"  # an approval that was not accepted, and why
STEP_CHECKED = "step_checked"  # dry run: what the step would do, or why it cannot
STEP_PREFLIGHTED = "step_preflighted"  # a promote's read-only checks, before any fence ran
STEP_STARTED = "step_started"  # written before check/apply: the write-ahead intent
STEP_RECORDED = "step_recorded"  # a value apply keeps for verify/undo, durable before the change
STEP_SUCCEEDED = "step_succeeded"
STEP_FAILED = "step_failed"
STEP_SKIPPED = "step_skipped"
STEP_RECOVERED = "step_recovered"  # failed, and its fallback step succeeded
UNDO_STARTED = "undo_started"
UNDO_SUCCEEDED = "undo_succeeded"
UNDO_FAILED = "undo_failed"
DRILL_MEASURED = "drill_measured"  # a drill's RTO/RPO and verdict, appended after the run
DRILL_PAUSED = "drill_paused"  # a drill's run stopped unfinished: its canary's acks, to resume


@dataclass(frozen=True, kw_only=True)
class JournalEvent:
    """What every event kind shares: its kind, and the step and attempt it is about (if any)."""

    kind: ClassVar[str]
    #: ``from_json(to_json())`` gives back an equal event, whatever its values: a stored
    #: event made from one (its data unchanged) decodes as that one (see ``decode``).
    exact: ClassVar[bool] = False

    @property
    def step_id(self) -> str | None:
        return None

    @property
    def attempt_no(self) -> int | None:
        return None

    def to_json(self) -> dict[str, Any]:
        """The event's data as stored (step and attempt are the store's own columns)."""
        return {name: getattr(self, name) for name in _data_fields(type(self))}

    @classmethod
    def read(cls, event: Event) -> Self:
        """A stored event of this class's kind, typed (``decode`` for one of any kind)."""
        return cls.from_json(event.data, event.step, event.attempt)

    @classmethod
    def from_json(
        cls, data: dict[str, Any], step: str | None = None, attempt: int | None = None
    ) -> Self:
        known = _data_fields(cls)
        values = {k: v for k, v in data.items() if k in known}
        if issubclass(cls, StepEvent):
            values["step"] = step or ""
            values["attempt"] = attempt
        return cls(**values)


def _data_fields(cls: type[JournalEvent]) -> frozenset[str]:
    # Cached: resume decodes every event of a long journal.
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = frozenset(f.name for f in fields(cls)) - {"step", "attempt"}
    return found


_FIELDS: dict[type[JournalEvent], frozenset[str]] = {}


@dataclass(frozen=True, kw_only=True)
class StepEvent(JournalEvent):
    """An event about one step (and, for some kinds, one attempt of it)."""

    step: str
    attempt: int | None = None

    @property
    def step_id(self) -> str | None:
        return self.step

    @property
    def attempt_no(self) -> int | None:
        return self.attempt


@dataclass(frozen=True, kw_only=True)
class RunStarted(JournalEvent):
    """The journal's header: which run, of what, by whom, where."""

    kind: ClassVar[str] = RUN_STARTED
    run_id: str = ""
    runbook: str = ""
    name: str = ""
    plan_hash: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    user: str = ""
    host: str = ""
    pid: int = 0
    version: str = ""
    lock_key: str = ""
    dry_run: bool = False
    cwd: str = ""
    #: Who started it, as approvals name people (``settings.identity_env``, else user@host).
    identity: str = ""


@dataclass(frozen=True, kw_only=True)
class RunInterrupted(JournalEvent):
    """The run stopped before it finished (Ctrl-C, a signal); resumable."""

    kind: ClassVar[str] = RUN_INTERRUPTED


@dataclass(frozen=True, kw_only=True)
class RunFinished(JournalEvent):
    """The journal's last word: how the run ended and the exit code it gave."""

    kind: ClassVar[str] = RUN_FINISHED
    status: RunStatus = RunStatus.FAILED
    exit_code: int = 1
    message: str = ""

    @classmethod
    def from_json(
        cls, data: dict[str, Any], step: str | None = None, attempt: int | None = None
    ) -> Self:
        return cls(
            status=RunStatus(data.get("status", RunStatus.FAILED)),
            exit_code=int(data.get("exit_code", 1)),
            message=str(data.get("message", "")),
        )


@dataclass(frozen=True, kw_only=True)
class ApprovalNeeded(StepEvent):
    """A gate is waiting: what it shows, and what an approval must name to count."""

    kind: ClassVar[str] = APPROVAL_NEEDED
    description: str = ""
    #: What an approval must name to count: the plan and the gate as shown (a digest).
    plan_hash: str = ""
    digest: str = ""
    #: Who may still approve and how, in words (a gate other people open).
    needs: str = ""


@dataclass(frozen=True, kw_only=True)
class ApprovalGiven(StepEvent):
    """One person's yes to a gate, for exactly ``plan_hash`` and the gate text ``digest``."""

    kind: ClassVar[str] = APPROVAL_GIVEN
    by: str = ""
    host: str = ""
    plan_hash: str = ""
    digest: str = ""
    comment: str = ""
    #: How it was given: ``drctl approve``, ``prompt``, ``--yes``, ``--approve``.
    how: str = ""


@dataclass(frozen=True, kw_only=True)
class ApprovalGranted(StepEvent):
    """A gate opened: who opened it (the approvers, in words) and what it showed."""

    kind: ClassVar[str] = APPROVAL_GRANTED
    by: str = ""
    #: What the gate showed, rendered (0.1.0 did not write it).
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return decided(self.by, self.description)


def decided(by: str, description: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {"by": by}
    if description is not None:
        data["description"] = description
    return data


@dataclass(frozen=True, kw_only=True)
class StepChecked(StepEvent):
    """A dry run's check: what the step would do (``ok``), or why it cannot."""

    kind: ClassVar[str] = STEP_CHECKED
    ok: bool = False
    would: str | None = None
    error: str | None = None
    #: A read-only step the dry run ran for real (not only its check).
    ran: bool = False
    #: Why it could not be judged before earlier steps take effect (its ``error`` is what
    #: it says now, if anything); a deferred step does not fail the dry run.
    deferred: str | None = None
    #: What a read-only step the dry run ran published (drctl check compares them).
    outputs: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = (
            {"ok": True, "would": self.would} if self.ok else {"ok": False, "error": self.error}
        )
        if self.ran:
            data["ran"] = True
        if self.outputs:
            data["outputs"] = self.outputs
        if self.deferred is not None:
            data["deferred"] = self.deferred
            if self.error is not None:
                data["error"] = self.error
        return data


@dataclass(frozen=True, kw_only=True)
class StepPreflighted(StepEvent):
    """A promote's preflight, run before the first fence it waits for: found, or refused."""

    kind: ClassVar[str] = STEP_PREFLIGHTED
    ok: bool = False
    found: str | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class StepStarted(StepEvent):
    """An attempt begins; with what it was told to do, rendered (0.1.0 wrote neither)."""

    kind: ClassVar[str] = STEP_STARTED
    exact: ClassVar[bool] = True
    #: The target the attempt acts on, when the plan left it to run time.
    target: str | None = None
    #: The step's description, rendered with the values known as it started.
    description: str | None = None
    #: Its inputs as rendered for this attempt: secret references unresolved, literals masked.
    inputs: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        # Each only when set: a fixed target is in the plan, and old journals stay byte-alike.
        data: dict[str, Any] = {}
        if self.target is not None:
            data["target"] = self.target
        if self.description is not None:
            data["description"] = self.description
        if self.inputs is not None:
            data["inputs"] = self.inputs
        return data


@dataclass(frozen=True, kw_only=True)
class StepRecorded(StepEvent):
    """A value apply keeps for verify and undo, durable before the change it is about."""

    kind: ClassVar[str] = STEP_RECORDED
    exact: ClassVar[bool] = True
    key: str = ""
    value: Any = None

    @classmethod
    def from_json(
        cls, data: dict[str, Any], step: str | None = None, attempt: int | None = None
    ) -> Self:
        return cls(step=step or "", attempt=attempt, key=data["key"], value=data.get("value"))


@dataclass(frozen=True, kw_only=True)
class StepSucceeded(StepEvent):
    """A step took effect: its outputs and the facts its outcome line is worded from."""

    kind: ClassVar[str] = STEP_SUCCEEDED
    exact: ClassVar[bool] = True
    outputs: dict[str, Any] = field(default_factory=dict)
    #: Seconds the attempt took (None: settled without running it).
    duration: float | None = None
    #: The step's one-line description, as the plan has it.
    description: str | None = None
    #: The operator marked it done on resume (``--mark-done``).
    marked_done: bool = False
    #: Resume found it already in effect (its verify said so).
    verified_on_resume: bool = False
    #: Marked done although its verify did not confirm it (or it cannot verify).
    unverified: bool = False
    #: The operator's ``--reason`` for marking it done unverified.
    reason: str | None = None
    #: What its verify answered when it was marked done ("verify says it is not in effect").
    verdict: str | None = None
    #: The line 0.1.0 journaled with it; kept for its journals, no longer written.
    summary: str | None = None

    @classmethod
    def from_json(
        cls, data: dict[str, Any], step: str | None = None, attempt: int | None = None
    ) -> Self:
        # Written out, not the generic path: resume reads one of these per step.
        return cls(
            step=step or "", attempt=attempt, outputs=data.get("outputs") or {},
            duration=data.get("duration"), description=data.get("description"),
            marked_done=data.get("marked_done", False),
            verified_on_resume=data.get("verified_on_resume", False), summary=data.get("summary"),
            unverified=data.get("unverified", False), reason=data.get("reason"),
            verdict=data.get("verdict"),
        )  # fmt: skip

    @staticmethod
    def outputs_of(event: Event) -> dict[str, Any]:
        """Only the outputs of a stored ``step_succeeded``: all that resume reads of one."""
        outputs: dict[str, Any] = event.data.get("outputs") or {}
        return dict(outputs)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"outputs": self.outputs}
        for key in ("duration", "description", "summary", "reason", "verdict"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        for key in ("marked_done", "verified_on_resume", "unverified"):
            if getattr(self, key):
                data[key] = True
        return data


@dataclass(frozen=True, kw_only=True)
class StepFailed(StepEvent):
    """An attempt failed (``final``: no retry follows), or a step's failure was settled."""

    kind: ClassVar[str] = STEP_FAILED
    error: str = ""
    final: bool = True
    #: Seconds until the next attempt, when one follows.
    retry_in: float | None = None
    duration: float | None = None
    #: Ignored under ``on_failure: continue``: the run goes on.
    ignored: bool = False
    #: Interrupted earlier, and it cannot verify whether it took effect.
    in_doubt: bool = False
    #: A bug in the step type: its traceback, redacted.
    traceback: str | None = None

    @classmethod
    def from_json(
        cls, data: dict[str, Any], step: str | None = None, attempt: int | None = None
    ) -> Self:
        # Written out, not the generic path: resume reads one of these per attempt.
        return cls(
            step=step or "", attempt=attempt, error=data.get("error", ""),
            final=data.get("final", True), retry_in=data.get("retry_in"),
            duration=data.get("duration"), ignored=data.get("ignored", False),
            in_doubt=data.get("in_doubt", False), traceback=data.get("traceback"),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"error": self.error, "final": self.final}
        if self.duration is not None:  # an attempt ran: whether another follows
            data["retry_in"] = self.retry_in
        for key in ("duration", "traceback"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        for key in ("ignored", "in_doubt"):
            if getattr(self, key):
                data[key] = True
        return data


@dataclass(frozen=True, kw_only=True)
class StepSkipped(StepEvent):
    """A step that did not run, and why (its ``when`` was false, its item was not listed)."""

    kind: ClassVar[str] = STEP_SKIPPED
    exact: ClassVar[bool] = True
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Unknown(JournalEvent):
    """An event of a kind this version does not know (written by a newer drctl)."""

    kind: ClassVar[str] = ""
    name: str
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def step_id(self) -> str | None:
        return self.step

    def to_json(self) -> dict[str, Any]:
        return self.data


KINDS: dict[str, type[JournalEvent]] = {
    cls.kind: cls
    for cls in (
        RunStarted, RunInterrupted, RunFinished, ApprovalNeeded, ApprovalGranted, ApprovalGiven,
        StepChecked, StepPreflighted, StepStarted, StepRecorded, StepSucceeded, StepFailed,
        StepSkipped,
    )
}  # fmt: skip

#: The kinds, and the names of the classes, that ``occasional_events`` holds.
OCCASIONAL_KINDS = frozenset(
    {RUN_RESUMED, RUN_ABORTED, RUN_HALTED, GUARD_READING, GUARD_TRIPPED, CHECK_RECORDED,
     LOCK_TAKEN_OVER, LOCK_FORCE_RELEASED, COOLDOWN_OVERRIDDEN, APPROVAL_REFUSED,
     APPROVAL_DENIED, STEP_RECOVERED, UNDO_STARTED, UNDO_SUCCEEDED, UNDO_FAILED, DRILL_PAUSED,
     DRILL_MEASURED}
)  # fmt: skip
_OCCASIONAL = frozenset(
    {"RunResumed", "RunAborted", "RunHalted", "GuardReading", "GuardTripped", "CheckReading",
     "CheckRecorded", "LockTakenOver", "LockForceReleased", "CooldownOverridden",
     "ApprovalRefused", "ApprovalDenied", "StepRecovered", "UndoStarted", "UndoSucceeded",
     "UndoFailed", "CanarySettings", "AckLog", "DrillPaused", "DrillMeasured"}
)  # fmt: skip


def __getattr__(name: str) -> Any:
    """``events.RunResumed`` and the other rarer classes: imported on first use."""
    if name not in _OCCASIONAL:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from drctl.engine import occasional_events

    value = getattr(occasional_events, name)
    globals()[name] = value  # once: later reads find it as any other name here
    return value


def decode(event: Event) -> JournalEvent:
    """The typed event a stored one holds."""
    origin = event.origin
    if isinstance(origin, JournalEvent) and origin.exact:
        # Made from it, its data as it gave it: decoding would give an equal event.
        return origin
    cls = KINDS.get(event.kind)
    if cls is None and event.kind in OCCASIONAL_KINDS:
        from drctl.engine.occasional_events import KINDS as OCCASIONAL

        cls = OCCASIONAL[event.kind]
    if cls is None:
        return Unknown(name=event.kind, step=event.step, data=dict(event.data))
    return cls.from_json(event.data, event.step, event.attempt)


def kind_of(event: JournalEvent) -> str:
    return event.name if isinstance(event, Unknown) else event.kind
