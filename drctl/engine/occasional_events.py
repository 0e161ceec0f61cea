"""The journal's rarer events: resumes, aborts, halts, guards, checks, locks taken over,
cooldowns overridden, refused and denied approvals, fallbacks, undos and drills.

Kept apart from ``events`` so that a run, which writes none of these unless something
unusual happens, does not build their classes (about half a millisecond each) at every
start. ``events`` names them all: ``events.RunResumed`` imports this module on first
use, and ``events.decode`` reads every kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

from drctl.engine.events import (
    APPROVAL_DENIED,
    APPROVAL_REFUSED,
    CHECK_RECORDED,
    COOLDOWN_OVERRIDDEN,
    DRILL_MEASURED,
    DRILL_PAUSED,
    GUARD_READING,
    GUARD_TRIPPED,
    LOCK_FORCE_RELEASED,
    LOCK_TAKEN_OVER,
    RUN_ABORTED,
    RUN_HALTED,
    RUN_RESUMED,
    STEP_RECOVERED,
    UNDO_FAILED,
    UNDO_STARTED,
    UNDO_SUCCEEDED,
    JournalEvent,
    StepEvent,
    decided,
)


@dataclass(frozen=True, kw_only=True)
class RunResumed(JournalEvent):
    kind: ClassVar[str] = RUN_RESUMED
    user: str = ""
    host: str = ""
    pid: int = 0
    version: str = ""
    plan_hash: str = ""
    previous_status: str = ""


@dataclass(frozen=True, kw_only=True)
class RunAborted(JournalEvent):
    kind: ClassVar[str] = RUN_ABORTED
    by: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class RunHalted(JournalEvent):
    """The run launched nothing more because a brake held: ``drctl freeze``'s reason."""

    kind: ClassVar[str] = RUN_HALTED
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class GuardReading(JournalEvent):
    """A guard's reading changed state; ``failures``: failed readings in a row so far."""

    kind: ClassVar[str] = GUARD_READING
    guard: str = ""
    #: The step the guard belongs to (None: one of the runbook's guards).
    for_step: str | None = None
    state: str = ""
    reading: str = ""
    failures: int = 0


@dataclass(frozen=True, kw_only=True)
class GuardTripped(JournalEvent):
    """A guard failed ``trip_after`` readings in a row; ``action``: halt or rollback."""

    kind: ClassVar[str] = GUARD_TRIPPED
    guard: str = ""
    for_step: str | None = None
    action: str = ""
    reading: str = ""
    failures: int = 0


@dataclass(frozen=True)
class CheckReading:
    """What one step said in a readiness check (``drctl check``)."""

    step: str
    type: str
    #: ``ok``, ``failed``, ``deferred`` (judged only once earlier steps took effect) or
    #: ``skipped``.
    status: str
    seconds: float
    detail: str
    #: Its outputs' scalars and short lists, by dotted key (what drift is measured on).
    values: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "type": self.type, "status": self.status,
                "seconds": self.seconds, "detail": self.detail, "values": self.values}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckReading:
        return cls(
            str(data["step"]), str(data.get("type", "")), str(data["status"]),
            float(data.get("seconds", 0.0)), str(data.get("detail", "")),
            dict(data.get("values") or {}),
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class CheckRecorded(JournalEvent):
    """A readiness check's readings, appended to its dry run for the next check to compare."""

    kind: ClassVar[str] = CHECK_RECORDED
    ready: bool = False
    readings: tuple[CheckReading, ...] = ()
    drift: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "readings": [r.to_json() for r in self.readings],
                "drift": list(self.drift)}  # fmt: skip

    @classmethod
    def from_json(
        cls, data: dict[str, Any], step: str | None = None, attempt: int | None = None
    ) -> Self:
        return cls(
            ready=bool(data.get("ready")),
            readings=tuple(CheckReading.from_json(r) for r in data.get("readings") or ()),
            drift=tuple(str(d) for d in data.get("drift") or ()),
        )


@dataclass(frozen=True, kw_only=True)
class LockTakenOver(JournalEvent):
    kind: ClassVar[str] = LOCK_TAKEN_OVER
    key: str = ""
    previous: str = ""


@dataclass(frozen=True, kw_only=True)
class LockForceReleased(JournalEvent):
    kind: ClassVar[str] = LOCK_FORCE_RELEASED
    key: str = ""
    lease: str = ""
    by: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class CooldownOverridden(JournalEvent):
    """A run started within its lock key's cooldown (``--override-cooldown --reason``)."""

    kind: ClassVar[str] = COOLDOWN_OVERRIDDEN
    #: The run whose finish started the cooldown, and when it finished (epoch seconds).
    last_run: str = ""
    finished_at: float = 0.0
    cooldown: float = 0.0
    by: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ApprovalRefused(StepEvent):
    """An approval drctl did not accept (the starter's own, a stale gate), and why."""

    kind: ClassVar[str] = APPROVAL_REFUSED
    by: str = ""
    host: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ApprovalDenied(StepEvent):
    kind: ClassVar[str] = APPROVAL_DENIED
    by: str = ""
    #: What the gate showed, rendered (0.1.0 did not write it).
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return decided(self.by, self.description)


@dataclass(frozen=True, kw_only=True)
class StepRecovered(StepEvent):
    kind: ClassVar[str] = STEP_RECOVERED
    #: The fallback step that succeeded.
    by: str = ""
    summary: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"by": self.by}
        if self.summary is not None:
            data["summary"] = self.summary
        return data


@dataclass(frozen=True, kw_only=True)
class UndoStarted(StepEvent):
    kind: ClassVar[str] = UNDO_STARTED


@dataclass(frozen=True, kw_only=True)
class UndoSucceeded(StepEvent):
    kind: ClassVar[str] = UNDO_SUCCEEDED


@dataclass(frozen=True, kw_only=True)
class UndoFailed(StepEvent):
    kind: ClassVar[str] = UNDO_FAILED
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class CanarySettings:
    """A drill's canary as journaled: connection strings masked, and whether they were."""

    kind: str = ""
    dsn: str = ""
    dsn_masked: bool = False
    dns_server: str | None = None
    verify_dsn: str = ""
    verify_dsn_given: bool = False
    verify_dsn_masked: bool = False
    interval: float = 0.0
    timeout: float = 0.0
    settle: float = 0.0
    started_at: float | None = None
    stopped_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CanarySettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class AckLog:
    """Acknowledged canary writes, compactly: each server's address listed once."""

    addresses: tuple[str, ...] = ()
    #: (sequence number, wall time, index into ``addresses``) per write.
    rows: tuple[tuple[int, float, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"addresses": list(self.addresses), "rows": [list(r) for r in self.rows]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AckLog:
        return cls(
            tuple(str(a) for a in data.get("addresses", ())),
            tuple((int(s), float(t), int(i)) for s, t, i in data.get("rows", ())),
        )


@dataclass(frozen=True, kw_only=True)
class DrillPaused(JournalEvent):
    """A drill's run stopped unfinished: this window's acknowledgements, to resume from."""

    kind: ClassVar[str] = DRILL_PAUSED
    drill_id: str = ""
    canary: CanarySettings = field(default_factory=CanarySettings)
    next_seq: int = 1
    #: When this window's canary wrote (None: it never started).
    window: tuple[float, float] | None = None
    acks: AckLog = field(default_factory=AckLog)
    canary_errors: int = 0
    canary_failed: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "drill_id": self.drill_id,
            "canary": self.canary.to_json(),
            "next_seq": self.next_seq,
            "window": None if self.window is None else list(self.window),
            "acks": self.acks.to_json(),
            "canary_errors": self.canary_errors,
            "canary_failed": self.canary_failed,
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any], step: str | None = None, attempt: int | None = None
    ) -> Self:
        window = data.get("window")
        return cls(
            drill_id=str(data.get("drill_id", "")),
            canary=CanarySettings.from_json(data.get("canary") or {}),
            next_seq=int(data.get("next_seq", 1)),
            window=None if not window else (float(window[0]), float(window[1])),
            acks=AckLog.from_json(data.get("acks") or {}),
            canary_errors=int(data.get("canary_errors", 0)),
            canary_failed=data.get("canary_failed"),
        )


@dataclass(frozen=True, kw_only=True)
class DrillMeasured(JournalEvent):
    """A drill's figures and verdict, appended to its run once it was read back."""

    kind: ClassVar[str] = DRILL_MEASURED
    drill_id: str = ""
    canary: CanarySettings = field(default_factory=CanarySettings)
    windows: tuple[tuple[float, float], ...] = ()
    objectives: dict[str, float | None] = field(default_factory=dict)
    #: The figures, as ``drill.measure.Measurement.to_json`` gives them.
    measurement: dict[str, Any] = field(default_factory=dict)
    #: The verdict's fields, as ``drill.measure.Verdict`` has them.
    verdict: dict[str, Any] = field(default_factory=dict)
    read_back_error: str | None = None
    canary_failed: str | None = None
    run_exit_code: int = 0
    run_message: str = ""
    #: The run had not finished: this measures the drill up to its pause.
    paused: bool = False
    passed: bool = False
    exit_code: int = 0
    #: The pgbench load run beside the canary, as ``drill.load.LoadFigures.to_json`` gives it.
    load: dict[str, Any] | None = None

    @property
    def missing(self) -> int | None:
        """Acknowledged writes the new primary does not have (the RPO, in writes)."""
        value = self.measurement.get("missing")
        return None if value is None else int(value)

    @property
    def rto(self) -> float | None:
        """Seconds the application could not write (the RTO)."""
        value = self.measurement.get("rto")
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "drill_id": self.drill_id,
            "canary": self.canary.to_json(),
            "windows": [list(w) for w in self.windows],
            "objectives": self.objectives,
            "measurement": self.measurement,
            "verdict": self.verdict,
            "read_back_error": self.read_back_error,
            "canary_failed": self.canary_failed,
            "run_exit_code": self.run_exit_code,
            "run_message": self.run_message,
            "paused": self.paused,
            "passed": self.passed,
            "exit_code": self.exit_code,
            **({"load": self.load} if self.load is not None else {}),
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any], step: str | None = None, attempt: int | None = None
    ) -> Self:
        return cls(
            drill_id=str(data.get("drill_id", "")),
            canary=CanarySettings.from_json(data.get("canary") or {}),
            windows=tuple((float(a), float(b)) for a, b in data.get("windows") or ()),
            objectives=dict(data.get("objectives") or {}),
            measurement=dict(data.get("measurement") or {}),
            verdict=dict(data.get("verdict") or {}),
            read_back_error=data.get("read_back_error"),
            canary_failed=data.get("canary_failed"),
            run_exit_code=int(data.get("run_exit_code") or 0),
            run_message=str(data.get("run_message") or ""),
            paused=bool(data.get("paused")),
            passed=bool(data.get("passed")),
            exit_code=int(data.get("exit_code") or 0),
            load=dict(data["load"]) if data.get("load") else None,
        )


KINDS: dict[str, type[JournalEvent]] = {
    cls.kind: cls
    for cls in (
        RunResumed, RunAborted, RunHalted, GuardReading, GuardTripped, CheckRecorded,
        LockTakenOver, LockForceReleased, CooldownOverridden, ApprovalRefused, ApprovalDenied,
        StepRecovered, UndoStarted, UndoSucceeded, UndoFailed, DrillPaused, DrillMeasured,
    )
}  # fmt: skip
