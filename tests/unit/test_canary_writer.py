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

    def __init__(self, *, fail_on: dict[int, BaseException] | None = None):
        super().__init__(CanarySpec("list", "list://", interval=0.001, timeout=0.05), "d")
        self.written: list[int] = []
        self.fail_on = fail_on or {}
        self.closed = 0
        self.connecting = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def check(self) -> None:
        pass

    def _connect(self) -> Any:
        self.connecting.set()
        self.release.wait(10)
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


def _wait(check: Any, seconds: float = 30.0) -> None:
    """Wait until ``check()`` holds; fail after ``seconds`` (generous: the machine may be loaded)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds:g}s"
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
    canary = ListCanary()
    canary.release.clear()
    canary.start(first_ack_within=None)
    assert canary.connecting.wait(5)
    canary.stop()  # gives up waiting (timeout * 3 + 1 s): the connect is still held
    final = canary.next_seq
    assert canary._thread is not None and canary._thread.is_alive()
    canary.release.set()  # the connect returns; a number taken now would reach the database
    canary._thread.join(5)
    assert not canary._thread.is_alive()
    assert canary.written == [] and canary.next_seq == final == 1
    assert canary.closed == 1


def test_a_surprise_before_the_first_write_fails_the_start_at_once() -> None:
    """start() does not wait out its first-ack wait for a writer that is already dead: it says why."""
    import pytest

    from drctl.drill.canary import CanaryError

    canary = ListCanary(fail_on={1: KeyError("driver bug")})
    began = time.monotonic()
    with pytest.raises(CanaryError, match="stopped by surprise: KeyError"):
        canary.start(first_ack_within=60.0)
    # Far below the 60 s it would wait for a first acknowledgement, on any machine.
    assert time.monotonic() - began < 20.0


def test_a_canary_imports_its_client_through_the_steps_import_lock() -> None:
    """The canaries import their client library under the lock the run's warm-up holds, never beside it."""
    from drctl.drill.mongo_canary import MongoCanary
    from drctl.drill.pg_canary import PostgresCanary
    from drctl.steps import base

    canaries = (
        PostgresCanary(CanarySpec("postgres", "host=127.0.0.1 dbname=x"), "d"),
        MongoCanary(CanarySpec("mongo", "mongodb://127.0.0.1/"), "d"),
    )
    for canary in canaries:
        base._WARMED.clear()
        done = threading.Event()
        with base._IMPORTS:  # the run's warm-up thread, mid-import
            worker = threading.Thread(target=lambda c=canary, d=done: (c.warm(), d.set()))
            worker.start()
            assert not done.wait(0.3), f"{canary.kind} canary imported beside the warm-up"
        assert done.wait(30), f"{canary.kind} canary never finished warming"
        worker.join(5)
