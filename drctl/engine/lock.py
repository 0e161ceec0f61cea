"""The run lock: a lease on a key, kept alive by a heartbeat thread.

One active run per lock key per state store. The lease expires if the holder stops
heart-beating (killed, machine lost), and the next run takes it over with a higher
fencing token. A holder whose lease was taken can no longer append to its journal
(the store checks the lease on every append) and stops launching steps.
"""

from __future__ import annotations

import contextlib
import threading

from drctl.engine.clock import Clock
from drctl.errors import LockLost, StateError
from drctl.state.base import AcquireResult, Lease, StateStore

DEFAULT_TTL = 30.0


class RunLock:
    def __init__(self, store: StateStore, clock: Clock, ttl: float = DEFAULT_TTL) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self._lease: Lease | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lease(self) -> Lease | None:
        return self._lease

    def acquire(self, key: str, run_id: str, user: str, host: str, pid: int) -> AcquireResult:
        """Take the lock (raises LockHeld naming the holder) and start heart-beating."""
        result = self.store.acquire(key, run_id, user, host, pid, self.ttl, self.clock.now())
        self._lease = result.lease
        self._thread = threading.Thread(target=self._beat, name="lock-heartbeat", daemon=True)
        self._thread.start()
        return result

    def _beat(self) -> None:
        # Beat at a third of the TTL so two missed beats still leave the lease alive.
        while not self._stop.wait(self.ttl / 3):
            lease = self._lease
            if lease is None:
                return
            try:
                self._lease = self.store.heartbeat(lease, self.ttl, self.clock.now())
            except LockLost:
                self.lost.set()
                return
            except StateError:
                continue  # a busy store: try again next beat, the TTL has slack for it

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._lease is not None:
            with contextlib.suppress(StateError):  # the lease expires on its own
                self.store.release(self._lease)
            self._lease = None
