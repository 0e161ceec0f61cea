"""The run lock: a lease on a key, kept alive by a heartbeat thread.

One active run per lock key per state store. The lease expires if the holder stops
heart-beating (killed, machine lost), and the next run takes it over with a higher
fencing token. A holder whose lease was taken can no longer append to its journal
(the store checks the lease on every append) and stops launching steps.
"""

from __future__ import annotations

import contextlib
import os
import threading

from drctl.engine.clock import Clock
from drctl.errors import LockHeld, LockLost, StateError, UsageError
from drctl.state.base import AcquireResult, Lease, LockInfo, StateStore

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
        """Take the lock (raises LockHeld naming the holder) and start heart-beating.

        A lease whose holder ran on this host and whose process is gone (killed -9,
        crashed) is taken over at once instead of after its TTL, fenced as usual.
        """
        try:
            result = self.store.acquire(key, run_id, user, host, pid, self.ttl, self.clock.now())
        except LockHeld:
            holder = self.store.lock_info(key)
            if holder is None or holder.lease_id is None or not _holder_gone(holder, host):
                raise
            try:
                self.store.force_release(key, holder.lease_id)
            except UsageError:  # released or taken meanwhile: acquire decides
                holder = None
            result = self.store.acquire(key, run_id, user, host, pid, self.ttl, self.clock.now())
            if result.took_over is None and holder is not None:
                result = AcquireResult(result.lease, holder)
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


def _holder_gone(holder: LockInfo, host: str) -> bool:
    """True if ``holder`` ran on this host and its process no longer exists."""
    if holder.host != host or holder.pid is None:
        return False
    if holder.pid == os.getpid():
        return True  # a reused pid: this process holds nothing yet
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, owned by someone else
    return False
