"""The StateStore contract, held by both backends: SQLite and the shared PostgreSQL store."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from drctl.engine.clock import SystemClock
from drctl.engine.lock import RunLock
from drctl.errors import LockHeld, LockLost, StateError, UsageError
from drctl.state.base import Event, RunRecord, StateStore
from drctl.state.open import open_store
from drctl.state.sqlite import SqliteStore

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return str(request.getfixturevalue("pg_state_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[StateStore]:
    s = open_store(store_url)
    yield s
    s.close()


def record(run_id: str, **kw: object) -> RunRecord:
    base: dict[str, object] = {
        "id": run_id, "runbook": "/rb.yaml", "name": "rb", "plan_hash": "sha256:x",
        "plan_json": "{}", "params_json": "{}", "user": "u", "host": "h", "pid": 1,
        "version": "0", "started_at": 1000.0, "lock_key": "rb",
    }  # fmt: skip
    base.update(kw)
    return RunRecord(**base)  # type: ignore[arg-type]


def test_runs_round_trip_and_are_found_by_prefix(store: StateStore) -> None:
    """A run record reads back equal; prefixes and listing order work."""
    first = record("20260101-000000-aaaaaa", started_at=1.0, dry_run=True)
    second = record("20260101-000001-bbbbbb", started_at=2.0)
    store.create_run(first)
    store.create_run(second)
    assert store.get_run(first.id) == first
    assert [r.id for r in store.find_runs("20260101-000001")] == [second.id]
    assert [r.id for r in store.list_runs()] == [second.id, first.id]
    store.set_status(second.id, "succeeded", 5.0)
    got = store.get_run(second.id)
    assert got is not None
    assert (got.status, got.finished_at) == ("succeeded", 5.0)


def test_reopening_a_store_keeps_its_data(store_url: str) -> None:
    """Migrations run once; a second open sees the same runs."""
    one = open_store(store_url)
    one.create_run(record("r1"))
    one.close()
    two = open_store(store_url)
    assert two.get_run("r1") is not None
    two.close()


def test_events_are_ordered_and_carry_the_lease_token(store: StateStore) -> None:
    """Appends get consecutive seq numbers and the writer's fencing token."""
    store.create_run(record("r1"))
    lease = store.acquire("rb", "r1", "u", "h", 1, 30, 100.0).lease
    for i in range(3):
        store.append("r1", Event("step_started", 100.0 + i, "s", 1, {"i": i}), lease)
    events = store.events("r1")
    assert [(e.seq, e.data["i"], e.token) for e in events] == [(1, 0, 1), (2, 1, 1), (3, 2, 1)]


def test_lock_is_exclusive_until_it_expires_then_taken_over_with_a_higher_token(
    store: StateStore,
) -> None:
    """A live lease refuses others (naming the holder); an expired one is taken over and fenced."""
    store.create_run(record("r1"))
    first = store.acquire("rb", "r1", "alice", "db1", 11, 30, 100.0).lease
    with pytest.raises(LockHeld, match="alice@db1 \\(pid 11\\)"):
        store.acquire("rb", "r2", "bob", "db2", 22, 30, 110.0)
    taken = store.acquire("rb", "r2", "bob", "db2", 22, 30, 131.0)
    assert taken.took_over is not None
    assert taken.took_over.user == "alice"
    assert taken.lease.token == first.token + 1
    with pytest.raises(LockLost):
        store.append("r1", Event("step_started", 132.0, "s", 1), first)
    with pytest.raises(LockLost):
        store.heartbeat(first, 30, 132.0)


def test_release_and_force_release(store: StateStore) -> None:
    """Release frees the key; force release needs the holder's exact lease id."""
    lease = store.acquire("rb", "r1", "u", "h", 1, 30, 100.0).lease
    with pytest.raises(UsageError, match=f"held under lease {lease.lease_id}"):
        store.force_release("rb", "wrong")
    info = store.force_release("rb", lease.lease_id)
    assert info.run_id == "r1"
    with pytest.raises(UsageError, match="not held"):
        store.force_release("rb", lease.lease_id)
    again = store.acquire("rb", "r2", "u", "h", 1, 30, 101.0).lease
    store.release(again)
    assert store.lock_info("rb").lease_id is None  # type: ignore[union-attr]


def test_racing_acquirers_exactly_one_wins(store_url: str) -> None:
    """Ten store connections acquiring one key at once: one lease, nine LockHeld."""
    results: list[str] = []
    barrier = threading.Barrier(10)

    def contend(i: int) -> None:
        s = open_store(store_url)
        try:
            barrier.wait(timeout=30)
            s.acquire("race", f"r{i}", "u", "h", i, 30, 1000.0)
            results.append("won")
        except LockHeld:
            results.append("held")
        finally:
            s.close()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == ["held"] * 9 + ["won"]


def test_a_store_failing_heartbeats_ends_the_lease_with_its_reason(tmp_path: Path) -> None:
    """Heartbeats refused until the lease runs out lose the lock with a LockLost naming the store's error, kept as its cause."""
    path = tmp_path / "state.db"
    store = SqliteStore(path, busy_timeout=0.05)
    lock = RunLock(store, SystemClock(), ttl=0.6)
    lock.acquire("k", "r1", "u", "h", 1)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # every heartbeat now finds the store busy
    try:
        assert lock.lost.wait(timeout=20)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with pytest.raises(LockLost) as lost:
        _ = lock.lease
    assert lost.match(
        r"lease \w+ expired after the store failed \d+ heartbeats?: .*database is locked"
    )
    assert isinstance(lost.value.__cause__, StateError)
    lock.release()
    store.close()
