"""Stop conditions (``guards:``): read-only steps read in the background while a run lasts.

A Guardian reads each guard once when the run starts or resumes (before its first step),
then every ``every`` seconds on a thread of its own, until the run ends. ``trip_after``
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
        guards: Sequence[CompiledGuard],
        read: Callable[[CompiledGuard], Reading],
        journal: Journal,
    ) -> None:
        self._guards = tuple(guards)
        self._read = read
        self._journal = journal
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._failures = {g.step.id: 0 for g in self._guards}
        self._state: dict[str, str | None] = {g.step.id: None for g in self._guards}
        self._threads: list[threading.Thread] = []
        self.tripped: Trip | None = None

    def arm(self) -> None:
        """Read every guard once, here and now, then keep reading each in the background."""
        for guard in self._guards:
            self._observe(guard, self._read(guard))
        for guard in self._guards:
            thread = threading.Thread(
                target=self._watch, args=(guard,), name=f"guard-{guard.step.id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop reading. A reading in flight is bounded by its step timeout; not waited for."""
        self._stop.set()

    def _watch(self, guard: CompiledGuard) -> None:
        while not self._stop.wait(guard.every):
            reading = self._read(guard)
            if self._stop.is_set():
                return  # the run ended during the reading: nothing more to journal
            self._observe(guard, reading)

    def _observe(self, guard: CompiledGuard, reading: Reading) -> None:
        gid = guard.step.id
        with self._mutex:
            counts = reading.ok is False or (reading.ok is None and guard.error_trips)
            if reading.ok is True:
                self._failures[gid] = 0
            elif counts:
                self._failures[gid] += 1
            failures = self._failures[gid]
            changed = self._state[gid] != reading.state
            self._state[gid] = reading.state
            trip = None
            if self.tripped is None and failures >= guard.trip_after:
                trip = self.tripped = Trip(gid, guard.on_trip, reading.text)
        if changed:
            self._journal.write(
                ev.GuardReading(
                    guard=gid, state=reading.state, reading=reading.text, failures=failures
                )
            )
        if trip is not None:
            self._journal.write(
                ev.GuardTripped(
                    guard=gid, action=trip.action.value, reading=reading.text, failures=failures
                )
            )
