"""Group commit: appends that arrive while a commit is in flight share the next one.

The store's connection is held by the test while writers queue, so which appends share
a transaction is decided by the test, not by the machine's speed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from drctl.errors import LockLost
from drctl.state.base import Append, Event, Lease, RunRecord
from drctl.state.sqlite import SqliteStore

WRITERS = 12


class CountingStore(SqliteStore):
    """A real SQLite store that remembers how many appends each transaction carried."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.groups: list[int] = []

    def _append_group(self, group: list[Append]) -> None:
        self.groups.append(len(group))
        super()._append_group(group)


def record(run_id: str, key: str) -> RunRecord:
    return RunRecord(
        id=run_id, runbook="/rb.yaml", name="rb", plan_hash="sha256:x", plan_json="{}",
        params_json="{}", user="u", host="h", pid=1, version="0", started_at=1000.0,
        lock_key=key,
    )  # fmt: skip


def queue_behind_held_connection(
    store: CountingStore, writers: list[tuple[str, Event, Lease | None]]
) -> tuple[list[list[Event] | BaseException], list[threading.Thread]]:
    """Start one thread per writer while the store's connection is held; return their results.

    The first writer leads and blocks on the connection; the rest queue behind it, in
    order. The connection is released once all of them are queued.
    """
    results: list[list[Event] | BaseException] = [[] for _ in writers]

    def write(i: int, run_id: str, event: Event, lease: Lease | None) -> None:
        try:
            results[i] = store.append_batch(run_id, event, lease)
        except BaseException as exc:
            results[i] = exc

    threads = [
        threading.Thread(target=write, args=(i, *w), daemon=True) for i, w in enumerate(writers)
    ]
    with store._mutex:
        threads[0].start()
        while not store._leading:
            time.sleep(0.001)
        for queued, t in enumerate(threads[1:], start=1):
            t.start()  # one at a time, so they queue in the order given
            while len(store._pending) < queued:
                time.sleep(0.001)
    for t in threads:
        t.join(timeout=30)
    return results, threads


def test_appends_arriving_during_a_commit_share_the_next_one_and_each_gets_its_own(
    tmp_path: Path,
) -> None:
    """Writers queued behind an in-flight commit are committed in one transaction; each gets its events."""
    store = CountingStore(tmp_path / "state.db")
    store.create_run(record("r1", "rb"))
    lease = store.acquire("rb", "r1", "u", "h", 1, 30, 100.0).lease
    store.append_later("r1", Event("step_succeeded", 99.0, "s0", 1, {"q": True}))
    writers: list[tuple[str, Event, Lease | None]] = [
        ("r1", Event("step_started", 100.0 + i, f"s{i}", 1, {"i": i}), lease)
        for i in range(WRITERS)
    ]

    results, threads = queue_behind_held_connection(store, writers)

    assert not any(t.is_alive() for t in threads)
    assert store.groups == [1, WRITERS - 1]
    stored = store.events("r1")
    assert [e.seq for e in stored] == list(range(1, WRITERS + 2))
    assert stored[0].kind == "step_succeeded"  # the queued outcome went with the first intent
    for i, result in enumerate(results):
        assert isinstance(result, list)
        assert [e.data.get("i") for e in result][-1] == i
        assert all(e.token == lease.token for e in result)
        assert {e.seq for e in result} <= {e.seq for e in stored}
    store.close()


def test_a_stale_lease_in_a_shared_commit_is_refused_alone(tmp_path: Path) -> None:
    """In one group commit, the append whose lease was taken over gets LockLost; the others are stored."""
    store = CountingStore(tmp_path / "state.db")
    store.create_run(record("r1", "a"))
    store.create_run(record("r2", "b"))
    stale = store.acquire("a", "r1", "u", "h", 1, 30, 100.0).lease
    store.acquire("a", "r9", "u", "h", 2, 30, 200.0)  # took "a" over: r1's lease is stale
    live = store.acquire("b", "r2", "u", "h", 1, 30, 200.0).lease
    writers: list[tuple[str, Event, Lease | None]] = [
        ("r2", Event("step_started", 201.0, "first", 1), live),
        ("r1", Event("step_started", 201.0, "fenced", 1), stale),
        ("r2", Event("step_started", 202.0, "second", 1), live),
        ("r2", Event("note", 203.0, None, None), None),
    ]

    results, _ = queue_behind_held_connection(store, writers)

    assert store.groups == [1, 3]
    assert isinstance(results[1], LockLost)
    assert store.events("r1") == []
    assert [(e.step, e.seq, e.token) for e in store.events("r2")] == [
        ("first", 1, live.token),
        ("second", 2, live.token),
        (None, 3, 0),
    ]
    store.close()


def test_a_failed_group_commit_fails_every_writer_in_it(tmp_path: Path) -> None:
    """When the shared transaction fails, no writer in it returns as if its event were durable."""
    store = CountingStore(tmp_path / "state.db")
    store.create_run(record("r1", "rb"))
    # A trigger refusing one row makes the shared transaction fail and roll back.
    store.append("r1", Event("step_started", 1.0, "x", 1), None)
    store._db.execute("CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.step = 'bad' "
                      "BEGIN SELECT RAISE(ABORT, 'refused'); END")  # fmt: skip
    steps = ["ok", "ok2", "bad"]
    writers: list[tuple[str, Event, Lease | None]] = [
        ("r1", Event("step_started", 2.0, s, 1), None) for s in steps
    ]

    results, _ = queue_behind_held_connection(store, writers)

    assert store.groups[-1] == 2
    assert isinstance(results[0], list)
    assert all(isinstance(r, Exception) for r in results[1:])
    assert [e.step for e in store.events("r1")] == ["x", "ok"]
    store.close()
