"""The state-store contract: runs, an append-only event journal, and leased locks.

Invariants live here, in the public methods; backends implement the private hooks.
Every ``append`` is durable when it returns (the engine writes an event *before* the
action it announces), and is refused when the caller's lease is no longer the lock's
current one: a run that lost its lock can never write another event (fencing).
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drctl.compiler.plan import Plan


@dataclass(frozen=True)
class RunRecord:
    """A run as stored: who started what, where, and how it stands."""

    id: str
    runbook: str
    name: str
    plan_hash: str
    plan_json: str
    params_json: str
    user: str
    host: str
    pid: int
    version: str
    started_at: float
    lock_key: str
    dry_run: bool = False
    status: str = "running"
    finished_at: float | None = None
    cwd: str = ""

    def plan(self) -> Plan:
        """The plan this run executes, as stored when it started (the one way to read it)."""
        from drctl.compiler.plan import plan_from_dict

        return plan_from_dict(json.loads(self.plan_json))


class Event:
    """One journal entry. ``seq`` orders a run's events; ``token`` is the writer's fencing token.

    Immutable. Its data is held as given or as the store's JSON text, whichever came
    first, and the other form is made once, on first use: a journal read back for a
    resume decodes only the events the decision looks into, and an appended event is
    encoded once however many stores and sinks see it.
    """

    __slots__ = ("_data", "_text", "attempt", "kind", "origin", "seq", "step", "token", "ts")

    kind: str
    ts: float
    step: str | None
    attempt: int | None
    seq: int
    token: int
    _data: dict[str, Any] | None
    _text: str | None
    #: What the engine made this event's data from, as given (its data unchanged): the
    #: engine may read that back instead of decoding the data. The store never reads it.
    origin: object | None

    def __init__(
        self,
        kind: str,
        ts: float,
        step: str | None = None,
        attempt: int | None = None,
        data: dict[str, Any] | None = None,
        seq: int = 0,
        token: int = 0,
        *,
        text: str | None = None,
        origin: object | None = None,
    ) -> None:
        put = object.__setattr__
        put(self, "kind", kind)
        put(self, "ts", ts)
        put(self, "step", step)
        put(self, "attempt", attempt)
        put(self, "seq", seq)
        put(self, "token", token)
        put(self, "_data", data if data is not None or text is not None else {})
        put(self, "_text", text)
        put(self, "origin", origin)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Event is immutable: cannot set {name}")

    @property
    def data(self) -> dict[str, Any]:
        """The event's data (decoded from the store's text on first use)."""
        data = self._data
        if data is None:
            data = _decode(self._text or "{}")
            object.__setattr__(self, "_data", data)
        return data

    @property
    def text(self) -> str:
        """The data as the store keeps it: compact JSON, keys sorted (encoded once)."""
        text = self._text
        if text is None:
            text = dumps(self._data)
            object.__setattr__(self, "_text", text)
        return text

    def stored(self, seq: int, token: int) -> Event:
        """This event as appended: numbered, with the writer's token, its data shared."""
        return Event(
            self.kind, self.ts, self.step, self.attempt, self._data, seq, token,
            text=self._text, origin=self.origin,
        )  # fmt: skip

    def _key(self) -> tuple[object, ...]:
        return (self.kind, self.ts, self.step, self.attempt, self.data, self.seq, self.token)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # its data is a dict

    def __repr__(self) -> str:
        return (
            f"Event(kind={self.kind!r}, ts={self.ts!r}, step={self.step!r}, "
            f"attempt={self.attempt!r}, data={self.data!r}, seq={self.seq!r}, token={self.token!r})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "step": self.step,
            "attempt": self.attempt,
            "token": self.token,
            "data": self.data,
        }


#: The store's event text is compact JSON with no surrounding space: decoded directly.
_decode_text = json.JSONDecoder().raw_decode


def _decode(text: str) -> dict[str, Any]:
    if text == "{}":
        return {}
    value: dict[str, Any] = _decode_text(text)[0]
    return value


@dataclass(frozen=True)
class Lease:
    """A held lock: its key, this holder's lease id, and the fencing token it got."""

    key: str
    lease_id: str
    token: int
    run_id: str
    expires_at: float


@dataclass(eq=False)
class Append:
    """One caller's events waiting for a group commit, and what came of them."""

    run_id: str
    events: list[Event]
    lease: Lease | None
    #: The events as stored (numbered, with their token) once durable.
    stored: list[Event] | None = None
    #: Why they were not stored (LockLost, StateError), set instead of ``stored``.
    error: BaseException | None = None
    #: A writer that waits for another's commit: set when ``stored`` or ``error`` is, or
    #: when it is to lead the next commit itself. None for a writer that leads at once.
    woken: threading.Event | None = None

    def result(self) -> list[Event]:
        if self.error is not None:
            raise self.error
        assert self.stored is not None
        return self.stored


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or last held) a lock."""

    key: str
    lease_id: str | None
    run_id: str | None
    user: str | None
    host: str | None
    pid: int | None
    acquired_at: float | None
    expires_at: float | None
    token: int

    def describe(self) -> str:
        return (
            f"run {self.run_id} by {self.user}@{self.host} (pid {self.pid}), "
            f"lease {self.lease_id}, token {self.token}"
        )


@dataclass(frozen=True)
class Freeze:
    """A brake on mutating runs (``drctl freeze``): none whose lock key starts with
    ``prefix`` may start or launch another mutating step until it is thawed."""

    #: The lock keys it covers: those starting with it ("" covers every run).
    prefix: str
    reason: str
    user: str
    host: str
    at: float

    def covers(self, lock_key: str) -> bool:
        return lock_key.startswith(self.prefix)

    def describe(self) -> str:
        scope = f"lock keys starting {self.prefix!r}" if self.prefix else "every run"
        return f"frozen ({scope}) by {self.user}@{self.host} at {iso(self.at)}: {self.reason}"


@dataclass(frozen=True)
class AcquireResult:
    lease: Lease
    #: The previous holder when an expired lease was taken over, else None.
    took_over: LockInfo | None = None


def decide_acquire(
    key: str, previous: LockInfo | None, now: float, displace: str | None = None
) -> tuple[int, LockInfo | None]:
    """The fencing token a new lease on ``key`` gets, and the holder it displaces.

    A holder is displaced when its lease expired, or when its lease id is ``displace``
    (the caller proved that holder's process is gone). Raises LockHeld naming the holder
    while its lease is live. Shared by every backend so the rule is written once;
    backends call it inside the transaction that writes the new lease, so the displaced
    holder returned is exactly the one replaced, however many processes race.
    """
    from drctl.errors import LockHeld

    took_over = None
    if previous is not None and previous.lease_id is not None:
        live = previous.expires_at is not None and previous.expires_at > now
        if live and previous.lease_id != displace:
            raise LockHeld(
                f"lock {key!r} is held by {previous.describe()}, since {iso(previous.acquired_at)}",
                hint=f"wait for it, or if that process is gone: drctl unlock {key} "
                f"--lease {previous.lease_id} --reason '…'",
            )
        took_over = previous
    return (previous.token if previous else 0) + 1, took_over


def check_force_release(key: str, info: LockInfo | None, lease_id: str) -> LockInfo:
    """Validate an unlock request against the current holder (raises UsageError)."""
    from drctl.errors import UsageError

    if info is None or info.lease_id is None:
        raise UsageError(f"lock {key!r} is not held")
    if info.lease_id != lease_id:
        raise UsageError(
            f"lock {key!r} is held under lease {info.lease_id}, not {lease_id}",
            hint="pass the holder's lease id exactly as `drctl status` shows it",
        )
    return info


def lock_lost(lease: Lease) -> Exception:
    from drctl.errors import LockLost

    return LockLost(
        f"lock {lease.key!r} is no longer held by this run (lease {lease.lease_id}); "
        "another process took it over or it was force-unlocked"
    )


def iso(ts: float | None) -> str:
    if ts is None:
        return "?"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dumps(data: Any) -> str:
    return _ENCODER.encode(data)


# One encoder for every event: json.dumps with options builds a new one per call. Its
# encode keeps no state between calls, so threads share it.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


class StateStore(ABC):
    """Runs, journals and locks. One instance per process; safe to share between threads.

    A store opened ``read_only`` (``status``, ``runs``, ``log``) writes nothing, not even
    its schema version, so the journal stays readable on a full disk or a read-only mount;
    its writing methods raise StateError.
    """

    #: The store is one machine's file (SQLite): its lock holds only there.
    machine_local: bool = False

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """The hosts and ports the store is reached at (empty: a local file)."""
        return ()

    def __init__(self, location: str, *, read_only: bool = False) -> None:
        #: Human-readable location (a path, or a URL without its password), for messages.
        self.location = location
        self.read_only = read_only
        self._queue_lock = threading.Lock()
        self._queued: dict[str, list[Event]] = {}
        # Group commit: appends that arrive while one is being committed wait here and
        # are then committed together by one of them (the leader), in one transaction.
        self._pending: list[Append] = []
        self._leading = False

    # -- runs --------------------------------------------------------------
    @abstractmethod
    def create_run(self, run: RunRecord) -> None: ...

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    def find_runs(self, prefix: str) -> list[RunRecord]:
        """Runs whose id starts with ``prefix`` (ids may be abbreviated)."""

    @abstractmethod
    def list_runs(self, limit: int = 50, name: str | None = None) -> list[RunRecord]:
        """Most recent first."""

    @abstractmethod
    def set_status(self, run_id: str, status: str, finished_at: float | None) -> None: ...

    def last_finished(self, lock_key: str) -> RunRecord | None:
        """The real (not dry) run on ``lock_key`` that finished last, whatever its outcome.

        What a cooldown counts from; a backend with an index overrides this scan.
        """
        finished = [
            r
            for r in self.list_runs(limit=1_000_000)
            if r.lock_key == lock_key and not r.dry_run and r.finished_at is not None
        ]
        return max(finished, key=lambda r: (r.finished_at or 0.0, r.id), default=None)

    # -- journal -----------------------------------------------------------
    def append(self, run_id: str, event: Event, lease: Lease | None) -> Event:
        """Append ``event`` durably; with a lease, only while that lease is current.

        Events queued with :meth:`append_later` for the same run go first, in the same
        transaction. Raises LockLost if the lease was taken over or released.
        """
        return self.append_batch(run_id, event, lease)[-1]

    def append_later(self, run_id: str, event: Event) -> None:
        """Queue an event that announces no action for the next durable append.

        An outcome, or a read-only step's intent: neither need be synced on its own.
        The next mutating intent or the end of the run makes them durable in the same
        commit, and a crash before that leaves the step "started, no outcome" (which
        resume settles with verify) or a read-only step not run (run again).
        """
        with self._queue_lock:
            self._queued.setdefault(run_id, []).append(event)

    def append_batch(self, run_id: str, event: Event | None, lease: Lease | None) -> list[Event]:
        """Make the queued events of ``run_id`` (and ``event``) durable; returns them stored.

        Group commit: while one commit is in flight, the appends arriving meanwhile (from
        any thread) gather; when it ends, one of them commits them all in one transaction
        (one sync). Each caller returns only once its own events are durable, and with
        its own outcome: LockLost for one lease fails that append alone.
        """
        with self._queue_lock:
            batch = self._queued.pop(run_id, [])
            if event is not None:
                batch.append(event)
            if not batch:
                return []
            mine = Append(run_id, batch, lease)
            self._pending.append(mine)
            if self._leading:
                mine.woken = threading.Event()
            self._leading = True
        if mine.woken is not None:
            # Woken once: with its outcome, or to lead the next commit itself.
            mine.woken.wait()
            if mine.stored is not None or mine.error is not None:
                return mine.result()
        with self._queue_lock:
            group, self._pending = self._pending, []
        try:
            self._append_group(group)
        except BaseException as exc:
            for append in group:
                if append.stored is None and append.error is None:
                    append.error = exc
        finally:
            for append in group:
                if append.woken is not None and append is not mine:
                    append.woken.set()
            with self._queue_lock:
                # Hand the lead to the first writer that queued meanwhile, if any: one
                # wake-up, not every waiter racing for it.
                if self._pending:
                    first = self._pending[0].woken
                    assert first is not None  # queued while this commit was leading
                    first.set()
                else:
                    self._leading = False
        return mine.result()

    def _append_group(self, group: list[Append]) -> None:
        """Commit every append of ``group``, setting each one's ``stored`` or ``error``.

        This default gives each its own transaction; a backend that can commit several
        runs' and leases' events in one transaction overrides it.
        """
        for append in group:
            try:
                append.stored = self._append_many(append.run_id, append.events, append.lease)
            except Exception as exc:
                append.error = exc

    @abstractmethod
    def _append_many(self, run_id: str, events: list[Event], lease: Lease | None) -> list[Event]:
        """Append ``events`` in one transaction, after checking ``lease`` is current."""

    @abstractmethod
    def events(self, run_id: str) -> list[Event]: ...

    # -- locks -------------------------------------------------------------
    @abstractmethod
    def acquire(
        self,
        key: str,
        run_id: str,
        user: str,
        host: str,
        pid: int,
        ttl: float,
        now: float,
        *,
        displace: str | None = None,
    ) -> AcquireResult:
        """Take the lock or raise LockHeld naming the holder.

        An expired lease, or the live lease ``displace`` names (its holder is known to be
        gone), is taken over in the same transaction, and ``took_over`` names it.
        """

    @abstractmethod
    def heartbeat(self, lease: Lease, ttl: float, now: float) -> Lease:
        """Extend the lease; raises LockLost if it is no longer current."""

    @abstractmethod
    def release(self, lease: Lease) -> None:
        """Release the lease if it is still current (no error if it is not)."""

    @abstractmethod
    def lock_info(self, key: str) -> LockInfo | None: ...

    @abstractmethod
    def force_release(self, key: str, lease_id: str) -> LockInfo:
        """Release the lock held under ``lease_id``; raises UsageError on a mismatch."""

    # -- the brake ------------------------------------------------------------
    @abstractmethod
    def freeze(self, freeze: Freeze) -> None:
        """Set (or replace) the freeze on ``freeze.prefix``."""

    @abstractmethod
    def thaw(self, prefix: str) -> Freeze | None:
        """Lift the freeze on exactly ``prefix``; the one lifted, or None if there was none."""

    @abstractmethod
    def freezes(self) -> list[Freeze]:
        """Every freeze in force, longest prefix first."""

    def freeze_for(self, lock_key: str) -> Freeze | None:
        """The freeze that covers runs under ``lock_key``, if any (the most specific)."""
        return next((f for f in self.freezes() if f.covers(lock_key)), None)

    def close(self) -> None:
        return None
