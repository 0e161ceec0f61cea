"""The run lock: a lease on a key, kept alive by a heartbeat thread.

One active run per lock key per state store. The lease expires if the holder stops
heart-beating (killed, machine lost), and the next run takes it over with a higher
fencing token. A holder whose lease was taken can no longer append to its journal
(the store checks the lease on every append) and stops launching steps.

A heartbeat the store refuses is retried while the lease still has time left; once it
has run out, the lease is lost, and the LockLost every later journal write raises says
why (the store's last error is its cause), so the operator sees the reason, not only
that the lock went.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading

from drctl.engine.clock import Clock
from drctl.errors import LockHeld, LockLost, StateError
from drctl.state.base import AcquireResult, Lease, LockInfo, StateStore

DEFAULT_TTL = 30.0
#: Overrides DEFAULT_TTL (seconds): shorter leases notice a lost store sooner.
TTL_ENV = "DRCTL_LEASE_TTL"


def default_ttl() -> float:
    """The lease TTL: DRCTL_LEASE_TTL when it is a number of seconds from 1 to 3600."""
    try:
        ttl = float(os.environ.get(TTL_ENV, ""))
    except ValueError:
        return DEFAULT_TTL
    return ttl if 1.0 <= ttl <= 3600.0 else DEFAULT_TTL


#: Joins the keys of a run that takes several locks (one per system it changes).
SEPARATOR = " + "


def lock_keys(key: str) -> list[str]:
    """The lock keys a run's stored ``lock_key`` stands for, in the order they are taken.

    Sorted when they were joined, so two runs taking overlapping sets take them in one
    order and cannot each hold one the other waits for.
    """
    return [k for k in key.split(SEPARATOR) if k] or [key]


class RunLock:
    def __init__(self, store: StateStore, clock: Clock, ttl: float | None = None) -> None:
        self.store = store
        self.clock = clock
        self.ttl = default_ttl() if ttl is None else ttl
        self._lease: Lease | None = None
        #: The leases on a run's other keys (one per system beyond the first).
        self._others: list[Lease] = []
        self.lost = threading.Event()
        self._lost_why: str = ""
        self._lost_cause: BaseException | None = None
        self._beats = threading.Lock()
        self._failures = 0
        self._last_failure: StateError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lease(self) -> Lease | None:
        """The current lease; raises LockLost, naming the cause, once the lease is lost."""
        if self.lost.is_set():
            raise LockLost(self._lost_why) from self._lost_cause
        lease = self._lease
        if lease is not None and self.clock.now() >= lease.expires_at:
            # The heartbeat thread has not noticed yet; nothing may be written meanwhile.
            with self._beats:
                failures, last = self._failures, self._last_failure
            why = f"lock {lease.key!r}: lease {lease.lease_id} expired"
            if last is not None:
                why = f"{why} after {_failed(failures)}: {last.message}"
            raise LockLost(why) from last
        return lease

    def acquire(self, key: str, run_id: str, user: str, host: str, pid: int) -> AcquireResult:
        """Take the lock (raises LockHeld naming the holder) and start heart-beating.

        A lease whose holder ran on this host and whose process is gone (killed -9,
        crashed) is taken over at once instead of after its TTL, fenced as usual. The
        store displaces exactly that lease in the transaction that writes ours, so of
        several processes racing for it one takes it over (and says so) and the others
        are refused naming the winner.
        """
        taken: list[AcquireResult] = []
        try:
            for one in lock_keys(key):
                taken.append(self._acquire_one(one, run_id, user, host, pid))
        except BaseException:
            for done in taken:  # all or none: a refused run holds nothing
                with contextlib.suppress(StateError):
                    self.store.release(done.lease)
            raise
        result = next((t for t in taken if t.took_over is not None), taken[0])
        if result is not taken[0]:
            result = dataclasses.replace(taken[0], took_over=result.took_over)
        self._lease = taken[0].lease
        self._others = [t.lease for t in taken[1:]]
        self._thread = threading.Thread(target=self._beat, name="lock-heartbeat", daemon=True)
        self._thread.start()
        return result

    def _acquire_one(self, key: str, run_id: str, user: str, host: str, pid: int) -> AcquireResult:
        try:
            return self.store.acquire(key, run_id, user, host, pid, self.ttl, self.clock.now())
        except LockHeld:
            holder = self.store.lock_info(key)
            if holder is None or holder.lease_id is None or not _holder_gone(holder, host):
                raise
            return self.store.acquire(
                key, run_id, user, host, pid, self.ttl, self.clock.now(), displace=holder.lease_id
            )

    def _beat_others(self) -> None:
        """Renew the leases on the run's other keys; losing one loses the run's lock."""
        for i, lease in enumerate(list(self._others)):
            try:
                self._others[i] = self.store.heartbeat(lease, self.ttl, self.clock.now())
            except LockLost as exc:
                self._lose(exc.message, exc)
            except StateError as exc:
                if self.clock.now() >= lease.expires_at:
                    self._lose(
                        f"lock {lease.key!r}: lease {lease.lease_id} expired: {exc.message}", exc
                    )

    def _beat(self) -> None:
        # Beat at a third of the TTL so two missed beats still leave the lease alive.
        while not self._stop.wait(self.ttl / 3):
            lease = self._lease
            if lease is None:
                return
            try:
                renewed = self.store.heartbeat(lease, self.ttl, self.clock.now())
            except LockLost as exc:
                with self._beats:
                    failures, last = self._failures, self._last_failure
                if last is None:
                    self._lose(exc.message, exc)
                else:
                    self._lose(f"{exc.message}, after {_failed(failures)}: {last.message}", last)
                return
            except StateError as exc:
                with self._beats:
                    self._failures += 1
                    self._last_failure = exc
                    failures = self._failures
                if self.clock.now() >= lease.expires_at:
                    self._lose(
                        f"lock {lease.key!r}: lease {lease.lease_id} expired after "
                        f"{_failed(failures)}: {exc.message}",
                        exc,
                    )
                    return
            else:
                with self._beats:
                    self._lease = renewed
                    self._failures, self._last_failure = 0, None
            self._beat_others()
            if self.lost.is_set():
                return

    def _lose(self, why: str, cause: BaseException) -> None:
        self._lost_why, self._lost_cause = why, cause
        self.lost.set()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for lease in [*([self._lease] if self._lease is not None else []), *self._others]:
            with contextlib.suppress(StateError):  # the lease expires on its own
                self.store.release(lease)
        self._lease, self._others = None, []


def _failed(count: int) -> str:
    return f"the store failed {count} heartbeat{'s' if count != 1 else ''}"


def live_holder(store: StateStore, key: str, now: float, host: str) -> LockInfo | None:
    """Who holds ``key`` (any of its keys) with a lease that would refuse us (live, its
    process not gone)."""
    for one in lock_keys(key):
        holder = store.lock_info(one)
        if holder is None or holder.lease_id is None:
            continue
        if holder.expires_at is not None and holder.expires_at <= now:
            continue
        if not _holder_gone(holder, host):
            return holder
    return None


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
