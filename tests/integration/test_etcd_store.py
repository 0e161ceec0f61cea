"""The etcd state store against a real three-member cluster: bad URLs, lost members, races.

The contract every store keeps is in test_state_stores.py; this module pins what only a
quorum store has to show: its leases expire in etcd, a run goes on when the leader dies,
stops at its next journal write when the quorum is lost and resumes when it is back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drctl.errors import LockHeld, LockLost
from drctl.state.base import Event, RunRecord
from drctl.state.etcd import EtcdStore
from tests.conftest import REPO, run_cli
from tests.integration.conftest import require_or_skip
from tests.integration.etcd_cluster import EtcdCluster, etcd_binary

pytestmark = pytest.mark.integration

#: Every wait below is bounded by this (a loaded machine, never a fixed sleep).
WITHIN = 120.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A three-member etcd cluster of this test's own (it may kill members)."""
    binary = etcd_binary()
    if binary is None:
        require_or_skip("etcd (Debian package etcd-server) is not installed")
    assert binary is not None
    with EtcdCluster.running(binary, tmp_path / "etcd") as running:
        yield running


def _wait_for(path: Path, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + WITHIN
    while not path.exists():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"drctl exited {process.returncode}: {process.communicate()}")
        assert time.monotonic() < deadline, f"{path} did not appear within {WITHIN}s"
        time.sleep(0.05)


def _gated_runbook(tmp_path: Path, name: str = "etcd-run") -> Path:
    """A runbook whose first step waits for the file ``go``; the second records an effect."""
    runbook = tmp_path / f"{name}.yaml"
    wait = (
        f"touch {tmp_path}/started; i=0; while [ $i -lt 2400 ]; do "
        f"[ -f {tmp_path}/go ] && exit 0; i=$((i+1)); sleep 0.05; done; exit 1"
    )
    runbook.write_text(
        f"apiVersion: drctl/v1\nkind: Runbook\nmetadata: {{name: {name}}}\nsteps:\n"
        f"  - {{id: wait-for-go, type: shell, with: {{command: '{wait}', verify: 'test -f {tmp_path}/go'}}}}\n"
        f"  - {{id: effect, type: shell, with: {{command: 'echo once >> {tmp_path}/effects', verify: 'grep -q once {tmp_path}/effects'}}}}\n"
    )
    return runbook


def _drctl(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "drctl", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


@pytest.mark.parametrize(
    "url",
    [
        "etcd://",
        "etcd:///drctl",
        "etcd://127.0.0.1/drctl",
        "etcd://127.0.0.1:port/drctl",
        "etcd://127.0.0.1:2379",
        "etcd://127.0.0.1:2379/",
        "etcd://127.0.0.1:99999/drctl",
        "etcd://127.0.0.1:2379,/drctl",
    ],
)
def test_a_malformed_etcd_url_is_a_usage_error_naming_the_flag(url: str, tmp_path: Path) -> None:
    """A malformed etcd URL exits 2 with an error naming --state, and writes nothing."""
    result = run_cli("runs", "--state", url, cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "--state: malformed etcd URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_etcd_store_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    """A store none of whose members answers exits 2 naming --state, for reads and runs alike."""
    from tests.integration.etcd_cluster import _free_port

    url = f"etcd://127.0.0.1:{_free_port()},127.0.0.1:{_free_port()}/drctl"
    runbook = _gated_runbook(tmp_path)
    for args in (("runs", "--state", url), ("run", str(runbook), "--state", url)):
        result = run_cli(*args, cwd=str(tmp_path), timeout=WITHIN)
        assert result.returncode == 2, result.stderr
        assert "--state: cannot reach the etcd store" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "started").exists()


def test_a_lease_etcd_expired_is_taken_over_and_its_holder_cannot_write(
    cluster: EtcdCluster,
) -> None:
    """Once etcd expires a lease with no keep-alive, another run takes the lock over with a higher token and the old holder's appends are refused."""
    store = EtcdStore(cluster.url("expiry"))
    try:
        store.create_run(RunRecord("r1", "/rb", "rb", "h", "{}", "{}", "u", "h", 1, "0", 1.0, "k"))
        t0 = time.time()
        first = store.acquire("k", "r1", "alice", "db1", 11, 2, t0).lease
        with pytest.raises(LockHeld):  # the caller's clock says live: only etcd can end it
            store.acquire("k", "r2", "bob", "db2", 22, 30, t0)
        deadline = time.monotonic() + WITHIN
        while (store.lock_info("k").expires_at or 0) > t0:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "etcd never expired the lease"
            time.sleep(0.2)
        with pytest.raises(LockLost):  # expired, not yet taken over: still no writing
            store.append("r1", Event("step_started", t0, "s", 1), first)
        taken = store.acquire("k", "r2", "bob", "db2", 22, 30, t0)
        assert taken.took_over is not None
        assert taken.took_over.user == "alice"
        assert taken.lease.token == first.token + 1
        with pytest.raises(LockLost):
            store.append("r1", Event("step_started", t0, "s", 1), first)
        with pytest.raises(LockLost):
            store.heartbeat(first, 2, t0)
    finally:
        store.close()


def test_heartbeats_keep_an_etcd_lease_alive_past_its_ttl(cluster: EtcdCluster) -> None:
    """Heartbeats (etcd keep-alives) hold a 5 s lease for twice its TTL: the holder still writes and others are still refused."""
    store = EtcdStore(cluster.url("beats"))
    try:
        store.create_run(RunRecord("r1", "/rb", "rb", "h", "{}", "{}", "u", "h", 1, "0", 1.0, "k"))
        lease = store.acquire("k", "r1", "u", "h", 1, 5, time.time()).lease
        until = time.monotonic() + 10
        while time.monotonic() < until:
            lease = store.heartbeat(lease, 5, time.time())
            time.sleep(0.2)
        store.append("r1", Event("step_started", time.time(), "s", 1), lease)
        with pytest.raises(LockHeld):
            store.acquire("k", "r2", "u", "h", 2, 5, time.time())
    finally:
        store.close()


def test_killing_the_etcd_leader_mid_run_the_run_goes_on(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    """SIGKILL of the etcd leader while a step runs: the run finishes, journaled, exit 0."""
    leader = cluster.leader()
    url = cluster.url("leader", first=leader)  # drctl talks to the leader until it dies
    runner = _drctl("run", str(_gated_runbook(tmp_path)), "--state", url, cwd=tmp_path)
    try:
        _wait_for(tmp_path / "started", runner)
        cluster.kill(leader)
        (tmp_path / "go").touch()
        _, err = runner.communicate(timeout=WITHIN)
    finally:
        runner.kill()
        runner.wait()
    assert runner.returncode == 0, err
    assert (tmp_path / "effects").read_text() == "once\n"
    runs = json.loads(run_cli("runs", "--output", "json", "--state", url, cwd=str(tmp_path)).stdout)
    assert [r["status"] for r in runs] == ["succeeded"]


def test_losing_the_quorum_stops_the_run_at_its_next_write_and_it_resumes_when_back(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    """Two of three members stopped: the run stops at its next journal write naming the store, does nothing more, and resumes from another directory once a quorum is back."""
    url = cluster.url("quorum")
    runner = _drctl("run", str(_gated_runbook(tmp_path)), "--state", url, cwd=tmp_path)
    try:
        _wait_for(tmp_path / "started", runner)
        lost = [m for m in cluster.members if m is not cluster.members[0]]
        for member in lost:
            cluster.kill(member)
        (tmp_path / "go").touch()
        _, err = runner.communicate(timeout=WITHIN)
    finally:
        runner.kill()
        runner.wait()
    assert runner.returncode == 1, err
    assert f"state store etcd://{cluster.members[0].endpoint}," in err
    assert "Traceback" not in err
    assert not (tmp_path / "effects").exists()  # the next step never started
    for member in lost:
        cluster.start(member)
    cluster.wait_healthy()
    elsewhere = tmp_path / "elsewhere"  # another directory, as another machine would be
    elsewhere.mkdir()
    runs = json.loads(
        run_cli("runs", "--output", "json", "--state", url, cwd=str(elsewhere)).stdout
    )
    assert len(runs) == 1
    resumed = run_cli("resume", runs[0]["id"], "--state", url, cwd=str(elsewhere), timeout=WITHIN)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "effects").read_text() == "once\n"


def test_twenty_racing_runs_on_one_etcd_lock_exactly_one_proceeds(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    """Twenty `drctl run`s of one runbook started at once: one runs (exit 0), nineteen exit 3 naming it."""
    url = cluster.url("race")
    runbook = _gated_runbook(tmp_path, "race")
    racers = [_drctl("run", str(runbook), "--state", url, cwd=tmp_path) for _ in range(20)]
    try:
        deadline = time.monotonic() + WITHIN
        # The winner waits in its first step until every other racer has been refused.
        while sum(r.poll() is not None for r in racers) < 19:
            assert time.monotonic() < deadline, "racers did not finish"
            time.sleep(0.1)
        (tmp_path / "go").touch()
        outcomes = [(r.wait(timeout=WITHIN), r.communicate()[1]) for r in racers]
    finally:
        for r in racers:
            r.kill()
            r.wait()
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0] + [3] * 19, [err for _, err in outcomes]
    assert all("is held by run" in err for code, err in outcomes if code == 3)
    assert (tmp_path / "effects").read_text() == "once\n"


def test_the_etcd_client_is_loaded_only_by_an_etcd_store(tmp_path: Path) -> None:
    """`drctl --help`, `validate` and a SQLite store's `runs` import neither etcd3gw nor requests."""
    probe = (
        "import sys\nfrom drctl.cli.app import main\nsys.argv = ['drctl', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('LOADED ' + ','.join(m for m in ('etcd3gw', 'requests') if m in sys.modules))\n"
    )
    runbook = _gated_runbook(tmp_path)
    for args in (
        ["--help"],
        ["validate", str(runbook)],
        ["runs", "--state", str(tmp_path / "s.db")],
    ):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args],
            capture_output=True, text=True, cwd=tmp_path, check=False, timeout=WITHIN,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert result.stderr.splitlines()[-1] == "LOADED ", (args, result.stderr)


def test_kill_at_every_journal_event_on_etcd_then_resume_applies_each_effect_once(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    """kill -9 of drctl after each journal event on the etcd store, then resume: every effect happens exactly once and the run succeeds."""
    steps = "".join(
        f"  - {{id: s{i}, type: shell, with: {{command: 'echo s{i} >> EFFECTS', "
        f"verify: 'grep -qx s{i} EFFECTS'}}}}\n"
        for i in range(3)
    )
    text = f"apiVersion: drctl/v1\nkind: Runbook\nmetadata: {{name: crash}}\nsteps:\n{steps}"

    def attempt(label: str, fault: str | None) -> tuple[Path, str, int]:
        work = tmp_path / label
        work.mkdir()
        effects = work / "effects"
        (work / "rb.yaml").write_text(text.replace("EFFECTS", str(effects)))
        url = cluster.url(f"crash-{label}")
        env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
        if fault:
            env["DRCTL_FAULT"] = fault
        ran = subprocess.run(
            [sys.executable, "-m", "drctl", "run", "rb.yaml", "--state", url],
            cwd=work, capture_output=True, text=True, env=env, timeout=WITHIN, check=False,
        )  # fmt: skip
        return effects, url, ran.returncode

    effects, url, code = attempt("clean", None)
    assert code == 0
    (run,) = json.loads(run_cli("runs", "--output", "json", "--state", url).stdout)
    events = len(run_cli("log", run["id"], "--output", "json", "--state", url).stdout.splitlines())
    assert events >= 8  # run_started, 3 x (started, succeeded), run_finished
    for n in range(1, events):
        effects, url, code = attempt(f"kill-{n}", f"event:{n}")
        assert code == -9, f"event {n}: drctl was not killed (exit {code})"
        (run,) = json.loads(run_cli("runs", "--output", "json", "--state", url).stdout)
        resumed = run_cli("resume", run["id"], "--state", url, timeout=WITHIN)
        assert resumed.returncode == 0, f"event {n}: {resumed.stderr}"
        assert effects.read_text().splitlines() == ["s0", "s1", "s2"], f"event {n}"
