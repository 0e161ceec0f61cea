"""Stop conditions (``guards:``): read-only steps read in the background while a run lasts.

A Guardian reads each of the runbook's guards once when the run starts or resumes (before
its first step), then every ``every`` seconds on a thread of its own, until the run ends;
a step's own guards are read once just before it starts, then the same way until it ends. ``trip_after``
failed readings in a row trip the guard: the executor then launches nothing more and
halts or rolls back. A reading that cannot be taken (the system does not answer) counts
as a failure under ``on_error: trip`` and is left out under ``on_error: ignore``.

What is journaled is what changed: a guard's state moving between ``ok``, ``failing``
and ``unreadable`` (with the reading and the count of failures in a row), and a trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drctl.compiler.plan import CompiledGuard, TripAction
from drctl.engine import events as ev
from drctl.engine.journal import Journal


@dataclass(frozen=True)
class Reading:
    """One reading of a guard: held (True), failed (False) or could not be taken (None)."""

    ok: bool | None
    text: str

    @property
    def state(self) -> str:
        return {True: "ok", False: "failing", None: "unreadable"}[self.ok]


@dataclass(frozen=True)
class Trip:
    """A guard that tripped: which, what the run does about it, and the reading that did it."""

    guard: str
    action: TripAction
    reading: str

    def words(self) -> str:
        return f"guard {self.guard} tripped: {self.reading}"


class Guardian:
    """Reads a plan's guards for the length of a run; ``tripped`` once one has tripped."""

    def __init__(
        self,
        read: Callable[[CompiledGuard], Reading],
        journal: Journal,
    ) -> None:
        self._read = read
        self._journal = journal
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._failures: dict[tuple[str, str], int] = {}
        self._state: dict[tuple[str, str], str] = {}
        #: Per owner ("" for the runbook, else a step id): what stops its watchers.
        self._owners: dict[str, threading.Event] = {}
        self.tripped: Trip | None = None

    def arm(self, guards: Sequence[CompiledGuard], owner: str = "") -> None:
        """Read ``guards`` once, here and now, then keep reading each in the background
        until :meth:`disarm` of ``owner`` (a step id; "" for the runbook's) or :meth:`stop`."""
        if not guards:
            return
        done = self._owners.setdefault(owner, threading.Event())
        for guard in guards:
            self._observe(owner, guard, self._read(guard))
        for guard in guards:
            threading.Thread(
                target=self._watch, args=(owner, guard, done), daemon=True,
                name=f"guard-{owner or 'run'}-{guard.step.id}",
            ).start()  # fmt: skip

    def disarm(self, owner: str) -> None:
        """Stop reading the guards of step ``owner`` (it ended)."""
        done = self._owners.pop(owner, None)
        if done is not None:
            done.set()

    def stop(self) -> None:
        """Stop reading. A reading in flight is bounded by its step timeout; not waited for."""
        self._stop.set()
        for done in self._owners.values():
            done.set()

    def _watch(self, owner: str, guard: CompiledGuard, done: threading.Event) -> None:
        while not done.wait(guard.every):
            reading = self._read(guard)
            if done.is_set() or self._stop.is_set():
                return  # the run or the step ended during the reading: nothing to journal
            self._observe(owner, guard, reading)

    def _observe(self, owner: str, guard: CompiledGuard, reading: Reading) -> None:
        gid = guard.step.id
        key = (owner, gid)
        with self._mutex:
            counts = reading.ok is False or (reading.ok is None and guard.error_trips)
            if reading.ok is True:
                self._failures[key] = 0
            elif counts:
                self._failures[key] = self._failures.get(key, 0) + 1
            failures = self._failures.get(key, 0)
            changed = self._state.get(key) != reading.state
            self._state[key] = reading.state
            trip = None
            if self.tripped is None and failures >= guard.trip_after:
                trip = self.tripped = Trip(gid, guard.on_trip, reading.text)
        step = owner or None
        if changed:
            self._journal.write(
                ev.GuardReading(
                    guard=gid, for_step=step, state=reading.state, reading=reading.text,
                    failures=failures,
                )
            )  # fmt: skip
        if trip is not None:
            self._journal.write(
                ev.GuardTripped(
                    guard=gid, for_step=step, action=trip.action.value, reading=reading.text,
                    failures=failures,
                )
            )  # fmt: skip
