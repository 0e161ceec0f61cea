"""The writer loop every canary shares: pacing, failures, surprises, and stopping.

The database side is a list in memory here: what is under test is the loop's
bookkeeping (the canaries' real writes are tested against PostgreSQL and the mockupdb
replica set in tests/integration).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from drctl.drill.canary import Canary, CanarySpec


class Boom(Exception):
    """A failure the kind knows: counted, and the canary goes on."""


class ListCanary(Canary):
    """Writes sequence numbers into a list; scripted failures and slowness."""

    kind = "list"

    def __init__(self, *, fail_on: dict[int, BaseException] | None = None, slow: float = 0.0):
        super().__init__(CanarySpec("list", "list://", interval=0.001, timeout=0.05), "d")
        self.written: list[int] = []
        self.fail_on = fail_on or {}
        self.slow = slow
        self.closed = 0
        self.connecting = threading.Event()

    def check(self) -> None:
        pass

    def _connect(self) -> Any:
        self.connecting.set()
        time.sleep(self.slow)
        return object()

    def _write(self, conn: Any, seq: int) -> str:
        if seq in self.fail_on:
            raise self.fail_on[seq]
        self.written.append(seq)
        return "here"

    def _failures(self) -> tuple[type[BaseException], ...]:
        return (Boom,)

    def _after_failure(self, conn: Any) -> Any:
        return None

    def _close(self, conn: Any) -> None:
        self.closed += 1

    def read_back(self) -> tuple[set[int], str, str]:
        return set(self.written), "here", "list://"


def _wait(check: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_known_failures_are_counted_and_writing_goes_on() -> None:
    """A failed write is an error, its number is not reused, and the next write is made."""
    canary = ListCanary(fail_on={2: Boom("no primary")})
    canary.start()
    _wait(lambda: len(canary.acks()) >= 5)
    canary.stop()
    seqs = [a.seq for a in canary.acks()]
    assert 2 not in seqs and seqs[:2] == [1, 3], seqs
    assert canary.errors == 1 and canary.fatal is None
    assert canary.next_seq > max(seqs)


def test_a_surprise_stops_the_canary_and_is_recorded() -> None:
    """An exception the kind does not expect ends the writer, says what it was, and closes up."""
    canary = ListCanary(fail_on={4: RuntimeError("bug in a driver")})
    canary.start()
    _wait(lambda: canary.fatal is not None)
    canary.stop()
    assert canary.fatal == "RuntimeError: bug in a driver"
    assert [a.seq for a in canary.acks()] == [1, 2, 3]
    assert canary.closed == 1


def test_no_number_is_handed_out_after_stop() -> None:
    """A connect that outlives stop()'s wait writes nothing after it: next_seq is final at stop."""
    canary = ListCanary(slow=1.5)
    canary.start(first_ack_within=None)
    assert canary.connecting.wait(5)
    began = time.monotonic()
    canary.stop()  # waits timeout * 3 + 1 s at most, while the connect takes 1.5 s
    assert time.monotonic() - began < 1.4
    final = canary.next_seq
    time.sleep(1.6)  # the connect returns; a number taken now would reach the database
    assert [s for s in canary.written if s >= final] == [], (canary.written, final)
    assert canary.next_seq == final and canary.closed == 1
