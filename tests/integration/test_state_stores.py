"""The StateStore contract, held by every backend: SQLite, PostgreSQL and etcd."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from drctl.engine.clock import SystemClock
from drctl.engine.lock import RunLock
from drctl.errors import LockHeld, LockLost, StateError, UsageError
from drctl.state.base import Event, RunRecord, StateStore
from drctl.state.open import open_store
from drctl.state.sqlite import SqliteStore
from tests.conftest import run_cli
from tests.integration.conftest import require_or_skip
from tests.integration.etcd_cluster import EtcdCluster, etcd_binary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One three-member etcd cluster for this module's tests (each uses its own prefix)."""
    binary = etcd_binary()
    if binary is None:
        require_or_skip("etcd (Debian package etcd-server) is not installed")
    assert binary is not None
    with EtcdCluster.running(binary, tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgres", "etcd"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    if request.param == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd")
        return cluster.url(f"t-{uuid.uuid4().hex[:10]}")
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


def test_a_batch_under_a_lease_is_stored_whole_with_its_token_and_under_a_lost_one_not_at_all(
    store: StateStore,
) -> None:
    """Queued events and the one appended go in together under the lease's token; once the
    lease is taken over, a whole batch is refused and none of it is stored."""
    store.create_run(record("r1"))
    lease = store.acquire("rb", "r1", "u", "h", 1, 30, 100.0).lease
    for i in range(4):
        store.append_later("r1", Event("step_succeeded", 101.0 + i, f"s{i}", 1, {"i": i}))
    got = store.append_batch("r1", Event("step_started", 105.0, "s4", 1, {"i": 4}), lease)
    assert [(e.seq, e.token, e.data["i"]) for e in got] == [
        (n, lease.token, n - 1) for n in range(1, 6)
    ]
    assert store.events("r1") == got

    store.acquire("rb", "r2", "v", "h2", 2, 30, 200.0)  # expired: taken over
    for i in range(3):
        store.append_later("r1", Event("step_succeeded", 201.0 + i, f"t{i}", 1, {"i": i}))
    with pytest.raises(LockLost):
        store.append_batch("r1", Event("step_started", 205.0, "t3", 1), lease)
    assert store.events("r1") == got


def test_concurrent_appends_each_return_their_own_durable_events_and_a_stale_lease_alone_fails(
    store: StateStore,
) -> None:
    """Sixteen threads appending at once (group commit): each gets its own events back, numbered without gaps; the fenced one is refused."""
    store.create_run(record("r1"))
    store.create_run(record("r2", lock_key="old"))
    lease = store.acquire("rb", "r1", "u", "h", 1, 30, 100.0).lease
    stale = store.acquire("old", "r2", "u", "h", 1, 30, 100.0).lease
    store.acquire("old", "r3", "u", "h", 2, 30, 200.0)  # took "old" over: r2's lease is stale
    barrier = threading.Barrier(17)
    got: dict[int, list[Event]] = {}
    refused: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait(timeout=30)
        store.append_later("r1", Event("step_succeeded", 1.0, f"s{i}", 1, {"done": i}))
        got[i] = store.append_batch("r1", Event("step_started", 2.0, f"t{i}", 1, {"i": i}), lease)

    def fenced() -> None:
        barrier.wait(timeout=30)
        try:
            store.append("r2", Event("step_started", 2.0, "x", 1), stale)
        except LockLost as exc:
            refused.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    threads.append(threading.Thread(target=fenced))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    stored = store.events("r1")
    assert [e.seq for e in stored] == list(range(1, 33))
    assert all(e.token == lease.token for e in stored)
    by_seq = {e.seq: e for e in stored}
    for i, mine in got.items():
        assert mine[-1].data == {"i": i}
        assert all(by_seq[e.seq] == e for e in mine)
    assert sorted(got) == list(range(16))
    assert len(refused) == 1
    assert store.events("r2") == []


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


def test_a_read_only_store_reads_and_refuses_to_write(store_url: str) -> None:
    """A store opened read only reads runs, journal and locks, and refuses every write."""
    writer = open_store(store_url)
    writer.create_run(record("r1"))
    lease = writer.acquire("rb", "r1", "u", "h", 1, 30, 100.0).lease
    writer.append("r1", Event("run_started", 100.0), lease)
    writer.close()
    reader = open_store(store_url, read_only=True)
    try:
        assert [r.id for r in reader.list_runs()] == ["r1"]
        assert [e.kind for e in reader.events("r1")] == ["run_started"]
        assert reader.lock_info("rb").lease_id == lease.lease_id  # type: ignore[union-attr]
        with pytest.raises(StateError, match="read only"):
            reader.create_run(record("r2"))
        with pytest.raises(StateError, match="read only"):
            reader.append("r1", Event("step_started", 101.0, "s", 1), None)
    finally:
        reader.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own (root only), unmounted whatever happens."""
    if os.geteuid() != 0:
        require_or_skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def _journal_readable(state: Path, run_id: str) -> None:
    status = run_cli("status", "--state", str(state))
    assert status.returncode == 0, status.stderr
    assert run_id in status.stdout
    log = run_cli("log", run_id, "--state", str(state))
    assert log.returncode == 0, log.stderr
    assert "run finished" in log.stdout
    runs = run_cli("runs", "--state", str(state))
    assert runs.returncode == 0, runs.stderr
    assert run_id in runs.stdout


@pytest.mark.parametrize("checkpointed", [False, True], ids=["wal-left", "checkpointed"])
def test_status_and_log_read_the_journal_on_a_full_disk_and_a_read_only_mount(
    small_disk: Path, tmp_path: Path, checkpointed: bool
) -> None:
    """`status`, `log` and `runs` work on a store whose disk is full, then on the same disk mounted read only."""
    runbook = tmp_path / "rb.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: ro}\nsteps:\n"
        "  - {id: hello, type: shell, with: {command: 'true', verify: 'true'}}\n"
    )
    state = small_disk / "state.db"
    ran = run_cli("run", str(runbook), "--state", str(state))
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(run_cli("runs", "--output", "json", "--state", str(state)).stdout)[0]["id"]
    if checkpointed:  # the last connection's close folds the WAL in and removes it
        db = sqlite3.connect(state)
        db.execute("SELECT count(*) FROM runs").fetchone()
        db.close()
        assert not state.with_name("state.db-wal").exists()
    filler = subprocess.run(
        ["dd", "if=/dev/zero", f"of={small_disk / 'filler'}", "bs=64k"],
        capture_output=True,
        check=False,
    )
    assert b"No space left" in filler.stderr
    _journal_readable(state, run_id)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    _journal_readable(state, run_id)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_racing_takeovers_of_a_dead_holder_report_exactly_one_takeover(store_url: str) -> None:
    """Eight processes' locks racing to take over a dead holder's live lease: one wins and says it took over, the rest are refused naming it."""
    rounds, racers = 10, 8
    stores = [open_store(store_url) for _ in range(racers)]
    # Each racer stands for a live process of its own (threads share this one's pid).
    alive = [subprocess.Popen(["sleep", "120"]) for _ in range(racers)]
    try:
        for n in range(rounds):
            key = f"race-{n}"
            stores[0].acquire(key, "dead-run", "u", "h", _dead_pid(), 30, SystemClock().now())
            barrier = threading.Barrier(racers)
            outcomes: list[str] = []
            locks = [RunLock(s, SystemClock()) for s in stores]

            def race(lock: RunLock, i: int, key: str = key, barrier: threading.Barrier = barrier,
                     outcomes: list[str] = outcomes) -> None:  # fmt: skip
                barrier.wait(timeout=30)
                try:
                    taken = lock.acquire(key, f"r{i}", "u", "h", alive[i].pid)
                except LockHeld:
                    outcomes.append("held")
                    return
                outcomes.append("took over" if taken.took_over else "acquired")

            threads = [
                threading.Thread(target=race, args=(lock, i)) for i, lock in enumerate(locks)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            for lock in locks:
                lock.release()
            assert sorted(outcomes) == ["held"] * (racers - 1) + ["took over"], f"round {n}"
    finally:
        for s in stores:
            s.close()
        for p in alive:
            p.kill()
            p.wait()


def test_last_finished_is_the_latest_real_finished_run_on_the_lock_key(store: StateStore) -> None:
    """What a cooldown counts from: the real run on the key that finished last, whatever its outcome."""
    assert store.last_finished("rb") is None
    store.create_run(record("r-old", started_at=1.0))
    store.create_run(record("r-new", started_at=2.0))
    store.create_run(record("r-dry", started_at=3.0, dry_run=True))
    store.create_run(record("r-other", started_at=4.0, lock_key="other"))
    store.create_run(record("r-open", started_at=5.0))
    store.set_status("r-new", "failed", 20.0)
    store.set_status("r-old", "succeeded", 30.0)  # started first, finished last
    store.set_status("r-dry", "dry_run_succeeded", 40.0)
    store.set_status("r-other", "succeeded", 50.0)
    last = store.last_finished("rb")
    assert last is not None and (last.id, last.finished_at) == ("r-old", 30.0)


_COOLDOWN_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: cool}}
settings: {{cooldown: 1h, lock: cool-{key}}}
steps:
  - {{id: act, type: shell, with: {{command: "echo x >> {effects}", verify: "true"}}}}
"""


def test_cooldown_refuses_a_second_run_from_another_directory_until_overridden(
    store_url: str, tmp_path: Path
) -> None:
    """Within settings.cooldown a new run is refused (exit 3) naming the last; an override is journaled."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    effects = tmp_path / "effects"
    runbook = tmp_path / "cool.yaml"
    runbook.write_text(_COOLDOWN_RUNBOOK.format(key=uuid.uuid4().hex[:8], effects=effects))
    first = run_cli("run", str(runbook), "--state", store_url, cwd=str(a))
    assert first.returncode == 0, first.stderr
    listed = json.loads(run_cli("runs", "--output", "json", "--state", store_url).stdout)
    last_id = listed[0]["id"]

    refused = run_cli("run", str(runbook), "--state", store_url, cwd=str(b))
    assert refused.returncode == 3, refused.stderr
    assert f"run {last_id}" in refused.stderr and "is cooling down" in refused.stderr
    assert "@" in refused.stderr and "finished at" in refused.stderr
    assert "--override-cooldown --reason" in refused.stderr and "Traceback" not in refused.stderr
    no_reason = run_cli("run", str(runbook), "--override-cooldown", "--state", store_url)
    assert no_reason.returncode == 2, no_reason.stderr
    assert effects.read_text() == "x\n"  # neither acted
    assert len(json.loads(run_cli("runs", "--output", "json", "--state", store_url).stdout)) == 1

    forced = run_cli(
        "run", str(runbook), "--override-cooldown", "--reason", "the first one misfired",
        "--state", store_url, cwd=str(b),
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert effects.read_text() == "x\nx\n"
    new_id = json.loads(run_cli("runs", "--output", "json", "--state", store_url).stdout)[0]["id"]
    log = run_cli("log", new_id, "--output", "json", "--state", store_url).stdout
    overrides = [e for e in map(json.loads, log.splitlines()) if e["kind"] == "cooldown_overridden"]
    assert len(overrides) == 1, log
    assert overrides[0]["data"]["reason"] == "the first one misfired"
    assert overrides[0]["data"]["last_run"] == last_id


def test_freezes_are_set_listed_most_specific_first_and_thawed(store: StateStore) -> None:
    """A freeze covers lock keys by prefix; the most specific one is named; thaw lifts exactly one."""
    from drctl.state.base import Freeze

    assert store.freezes() == [] and store.freeze_for("pg-prod") is None
    everything = Freeze("", "incident 42", "alice", "h1", 10.0)
    prod = Freeze("pg-prod", "bad upgrade", "bob", "h2", 11.0)
    store.freeze(everything)
    store.freeze(prod)
    assert store.freezes() == [prod, everything]
    assert store.freeze_for("pg-prod-eu") == prod
    assert store.freeze_for("dns") == everything
    # Setting the same prefix again replaces its reason and who set it.
    again = Freeze("pg-prod", "still bad", "carol", "h3", 12.0)
    store.freeze(again)
    assert store.freezes() == [again, everything]
    assert store.thaw("pg-prod") == again
    assert store.thaw("pg-prod") is None
    assert store.freeze_for("pg-prod-eu") == everything
    assert store.thaw("") == everything and store.freezes() == []


def test_a_version_1_store_is_read_without_a_migration(tmp_path: Path) -> None:
    """A store written by 0.1.0's schema opens read only (no freezes yet) and is migrated by a write."""
    from drctl.state.schema import statements

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for statement in statements("sqlite", 0)[:4]:  # the version 1 tables only
        db.execute(statement)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.commit()
    db.close()
    reader = SqliteStore(path, read_only=True)
    assert reader.freezes() == [] and reader.list_runs() == []
    reader.close()
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone() == ("1",)
    SqliteStore(path).close()
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone() == ("2",)
