"""The global brake across processes sharing the PostgreSQL store: freeze, halt, refuse, thaw.

One process runs a two-step runbook and holds in its first step; another freezes the
store. The run must halt before its second (mutating) step — journaled, exit 3 — a new
run and a resume must be refused naming who froze it and why, and after a thaw the
resume must finish the run with each effect once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration


def _runbook(tmp_path: Path, name: str = "braked") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"apiVersion: drctl/v1\nkind: Runbook\nmetadata: {{name: {name}}}\nsteps:\n"
        f"  - {{id: work, type: shell, with: {{command: 'for i in $(seq 1200); do test -e {tmp_path}/go && break; sleep 0.05; done; echo w >> {tmp_path}/effects', verify: 'grep -q w {tmp_path}/effects'}}}}\n"
        f"  - {{id: finish, type: shell, with: {{command: 'echo f >> {tmp_path}/effects', verify: 'grep -q f {tmp_path}/effects'}}}}\n"
    )
    return path


def _runs(state: str, cwd: Path) -> list[dict[str, object]]:
    out = run_cli("runs", "--output", "json", "--state", state, cwd=str(cwd)).stdout
    found: list[dict[str, object]] = json.loads(out or "[]")
    return found


@pytest.mark.timeout(180)
def test_a_freeze_halts_a_running_run_and_refuses_new_ones_until_thawed(
    tmp_path: Path, pg_state_url: str
) -> None:
    """Frozen from a second process: the run halts before its next mutating step; thaw, resume, done."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    runbook = _runbook(tmp_path)
    state = pg_state_url
    holder = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", str(runbook), "--state", state],
        cwd=a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _runs(state, b):
            assert time.monotonic() < deadline and holder.poll() is None, "the run never started"
            time.sleep(0.1)
        frozen = run_cli(
            "freeze", "--reason", "incident 7: hold all changes", "--state", state, cwd=str(b)
        )
        assert frozen.returncode == 0, frozen.stderr
        assert "incident 7" in frozen.stdout and "drctl thaw" in frozen.stdout
        (tmp_path / "go").touch()
        _, err = holder.communicate(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    assert holder.returncode == 3, err
    assert "halted before a mutating step" in err and "incident 7" in err, err
    assert (tmp_path / "effects").read_text() == "w\n"
    [run] = _runs(state, b)
    run_id = str(run["id"])
    assert run["status"] == "halted"
    log = run_cli("log", run_id, "--output", "json", "--state", state, cwd=str(b)).stdout
    events = [json.loads(line) for line in log.splitlines()]
    halted = [e for e in events if e["kind"] == "run_halted"]
    assert len(halted) == 1 and "incident 7" in halted[0]["data"]["reason"], events
    assert not [e for e in events if e["kind"] == "step_started" and e["step"] == "finish"]

    # While frozen: no new mutating run, no resume; each refusal names the freeze.
    again = run_cli("run", str(runbook), "--state", state, cwd=str(b))
    assert again.returncode == 3 and "incident 7" in again.stderr, again.stderr
    assert "drctl thaw" in again.stderr and len(_runs(state, b)) == 1
    refused = run_cli("resume", run_id, "--state", state, cwd=str(b))
    assert refused.returncode == 3 and "incident 7" in refused.stderr, refused.stderr
    listed = json.loads(run_cli("freezes", "--output", "json", "--state", state, cwd=str(a)).stdout)
    assert [f["reason"] for f in listed] == ["incident 7: hold all changes"]

    thawed = run_cli("thaw", "--reason", "incident over", "--state", state, cwd=str(a))
    assert thawed.returncode == 0 and "incident 7" in thawed.stdout, thawed.stderr
    resumed = run_cli("resume", run_id, "--state", state, cwd=str(a))
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "effects").read_text() == "w\nf\n"


def test_a_freeze_is_scoped_by_lock_prefix_and_spares_read_only_runs(tmp_path: Path) -> None:
    """--lock covers only keys with that prefix; a run that changes nothing starts while frozen."""
    state = str(tmp_path / "state.db")
    (tmp_path / "go").touch()
    runbook = _runbook(tmp_path)
    looker = tmp_path / "look.yaml"
    looker.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: look}\nsteps:\n"
        "  - {id: look, type: shell, with: {command: 'true', mutates: false}}\n"
    )
    assert (
        run_cli("freeze", "--lock", "other-", "--reason", "not you", "--state", state).returncode
        == 0
    )
    done = run_cli("run", str(runbook), "--state", state)
    assert done.returncode == 0, done.stderr
    assert run_cli("freeze", "--reason", "everyone", "--state", state).returncode == 0
    refused = run_cli("run", str(runbook), "--state", state)
    assert refused.returncode == 3 and "everyone" in refused.stderr, refused.stderr
    looked = run_cli("run", str(looker), "--state", state)
    assert looked.returncode == 0, looked.stderr
    listed = run_cli("freezes", "--state", state).stdout
    assert "lock keys starting 'other-'" in listed and "every run" in listed, listed


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("freeze", "--reason", "  "), "--reason is empty"),
        (("thaw", "--reason", "x", "--lock", "nope"), "no freeze on 'nope'"),
        (("freeze",), "--reason"),
    ],
)
def test_bad_brake_input_is_exit_2(tmp_path: Path, args: tuple[str, ...], said: str) -> None:
    """An empty reason, a thaw of no freeze, a missing --reason: exit 2 naming it, no traceback."""
    done = run_cli(*args, "--state", str(tmp_path / "state.db"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr
