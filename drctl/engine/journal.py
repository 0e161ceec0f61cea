"""Writing a run's events: redacted, durable, fenced, then shown.

The order is the contract: redact → append durably under the run's lease → (test
fault point) → tell the output sinks. What an operator sees has always been
journaled first, so a crash never shows something the journal does not hold.

Outcomes of steps that can verify themselves may be queued (``write_later``) and made
durable in the same commit as the next intent: that halves the syncs of a sequential
run, and a crash in between only leaves a step that resume settles with ``verify``.
A read-only step's intent is queued too: a crash that loses it loses a step that
changed nothing, and resume runs it again. Queued events wait at most ``MAX_AGE``
(``flush_due``), so the live view lags the run by no more than that.
Concurrent steps' writes share commits too (the store's group commit); each ``write``
still returns only once its own event is durable.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from drctl.engine import faults
from drctl.engine.clock import Clock
from drctl.engine.events import JournalEvent, StepStarted
from drctl.engine.redact import Redactor
from drctl.state.base import Event, Lease, StateStore

#: Seconds a queued event may wait for a commit before the scheduler flushes it.
MAX_AGE = 0.1


class Sink(Protocol):
    """Where a run's progress is shown: the live view, plain lines, JSON lines."""

    def event(self, event: Event) -> None: ...

    def log(self, step: str, line: str) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class LeaseHolder(Protocol):
    @property
    def lease(self) -> Lease | None: ...


class Journal:
    """The append-only event log of one run."""

    def __init__(
        self,
        store: StateStore,
        run_id: str,
        lock: LeaseHolder | None,
        redactor: Redactor,
        clock: Clock,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.store = store
        self.run_id = run_id
        self._lock = lock
        self.redactor = redactor
        self.clock = clock
        self.sinks = list(sinks)
        self._show = threading.Lock()
        #: When the oldest event queued since the last commit was queued (monotonic).
        self._oldest: float | None = None
        #: Steps whose queued step_started is not shown yet: their output waits for it.
        self._unannounced: set[str] = set()
        #: A guard's journal: its own events and lines are not shown (see ``quiet``).
        self._hushed = False

    def write(self, event: JournalEvent) -> Event:
        """Append an event durably (with any queued outcomes before it), then show them."""
        return self._commit(self._stored(event))[-1]

    def write_later(self, event: JournalEvent) -> None:
        """Queue an event; it becomes durable (and shown) with the next write or flush.

        Only for what resume can settle without it: a self-verifying step's outcome, a
        read-only step's intent or outcome.
        """
        self.store.append_later(self.run_id, self._stored(event))
        if isinstance(event, StepStarted):
            self._unannounced.add(event.step)
        if self._oldest is None:
            self._oldest = self.clock.monotonic()

    def _stored(self, event: JournalEvent) -> Event:
        # The one place a typed event becomes the store's dict: redacted on the way.
        raw = event.to_json()
        data = self.redactor.data(raw)
        # Data the redactor left as it was (it copies whatever it looks into) is the
        # event's own: its sinks may read the event, not decode the data again.
        origin = event if data is raw else None
        return Event(
            event.kind, self.clock.now(), event.step_id, event.attempt_no, data, origin=origin
        )

    def quiet(self) -> Journal:
        """This journal not showing its own events or lines: for a guard's readings.

        It shares the store's queue, so one of its commits may carry the run's queued
        events too: those are still shown, only the guard's own is not.
        """
        import copy

        hushed = copy.copy(self)
        hushed._hushed = True
        return hushed

    def flush(self) -> None:
        self._commit(None)

    def flush_due(self) -> None:
        """Flush if an event has been queued for ``MAX_AGE`` or longer."""
        oldest = self._oldest
        if oldest is not None and self.clock.monotonic() - oldest >= MAX_AGE:
            self._commit(None)

    def _commit(self, event: Event | None) -> list[Event]:
        lease = self._lock.lease if self._lock is not None else None
        # Cleared before the queue is taken: an event queued meanwhile restarts the age,
        # at worst flushing early, never leaving one unaged.
        self._oldest = None
        self._unannounced.clear()
        stored = self.store.append_batch(self.run_id, event, lease)
        if stored and self._lock is not None:
            # A write that came back after the lease ran out (a store that answered late)
            # is kept, but nothing may act on it: another run may hold the lock by now.
            _ = self._lock.lease
        # The event written is the batch's last; queued ones before it are the run's.
        shown = stored[:-1] if self._hushed and event is not None else stored
        if shown:
            with self._show:  # once per commit: concurrent steps queue here for the sinks
                for e in shown:
                    faults.after_event()
                    for sink in self.sinks:
                        sink.event(e)
        return stored

    def log(self, step: str, line: str) -> None:
        """Step output: shown live (redacted), not journaled line by line."""
        if self._hushed:
            return
        if step in self._unannounced:
            self.flush()  # a step's output is never shown before it is shown started
        text = self.redactor.text(line)
        with self._show:
            for sink in self.sinks:
                sink.log(step, text)

    def note(self, text: str) -> None:
        if self._hushed:
            return
        text = self.redactor.text(text)
        with self._show:
            for sink in self.sinks:
                sink.note(text)
