"""Gates other people open, through the shared PostgreSQL store, from other processes.

The run stops at a two-person gate saying who may approve and how; the starter's own
approval is refused (and journaled); another person's approval from another process and
directory opens it for a resume; a changed plan voids it; approvals expire; bad gate
options and bad ``drctl approve`` calls are exit 2 naming them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration

RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: two-person}}
settings: {{identity_env: DRCTL_TEST_ACTOR}}
steps:
  - {{id: go, type: approve, approve: {approve}, with: {{message: "{message}"}}}}
  - {{id: act, type: shell, with: {{command: "echo acted >> {fx}", verify: "grep -q acted {fx}"}}}}
"""


def _as(actor: str, *args: str, cwd: Path) -> tuple[int, str, str]:
    done = run_cli(*args, cwd=str(cwd), env={"DRCTL_TEST_ACTOR": actor})
    return done.returncode, done.stdout, done.stderr


def _write(tmp: Path, approve: str, message: str = "promote node3?") -> Path:
    path = tmp / "rb.yaml"
    path.write_text(RUNBOOK.format(approve=approve, message=message, fx=tmp / "fx"))
    return path


def _run_id(state: str, cwd: Path) -> str:
    runs = json.loads(run_cli("runs", "--output", "json", "--state", state, cwd=str(cwd)).stdout)
    return str(runs[0]["id"])


def _journal(state: str, run_id: str, cwd: Path) -> list[dict[str, object]]:
    out = run_cli("log", run_id, "--output", "json", "--state", state, cwd=str(cwd)).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    return a, b


def test_another_person_opens_a_gate_the_starter_cannot(
    tmp_path: Path, dirs: tuple[Path, Path], pg_state_url: str
) -> None:
    """--yes does not open it; the starter is refused; alice's approval from elsewhere does."""
    a, b = dirs
    state = pg_state_url
    runbook = _write(tmp_path, "{not_by_starter: true}")
    code, _, err = _as("carol", "run", str(runbook), "--yes", "--state", state, cwd=a)
    assert code == 4, err
    run_id = _run_id(state, a)
    assert "needs 1 person other than carol" in err and f"drctl approve {run_id} go" in err, err
    code, _, err = _as("carol", "approve", run_id, "go", "--state", state, cwd=a)
    assert code == 3 and "carol started the run" in err, err
    code, out, err = _as(
        "alice", "approve", run_id, "go", "--comment", "lag is 0", "--state", state, cwd=b
    )
    assert code == 0, err
    assert "promote node3?" in out and "1 of 1 approvals (alice)" in out, out
    code, _, err = _as("carol", "resume", run_id, "--state", state, cwd=a)
    assert code == 0, err
    assert (tmp_path / "fx").read_text() == "acted\n"
    events = _journal(state, run_id, a)
    given = [e for e in events if e["kind"] == "approval_given"]
    refused = [e for e in events if e["kind"] == "approval_refused"]
    assert [g["data"]["by"] for g in given] == ["alice"]  # type: ignore[index]
    assert given[0]["data"]["comment"] == "lag is 0" and given[0]["data"]["how"] == "drctl approve"  # type: ignore[index]
    assert [r["data"]["by"] for r in refused] == ["carol"]  # type: ignore[index]
    granted = [e for e in events if e["kind"] == "approval_granted"]
    assert len(granted) == 1 and "alice" in str(granted[0]["data"])


def test_two_approvals_a_changed_plan_and_expiry(
    tmp_path: Path, dirs: tuple[Path, Path], pg_state_url: str
) -> None:
    """count: 2 needs two people; approving twice is refused; a changed plan voids both; they expire."""
    a, b = dirs
    state = pg_state_url
    runbook = _write(tmp_path, "{count: 2, not_by_starter: true, expires: 1h}")
    assert _as("carol", "run", str(runbook), "--state", state, cwd=a)[0] == 4
    run_id = _run_id(state, a)
    assert _as("alice", "approve", run_id, "go", "--state", state, cwd=b)[0] == 0
    code, _, err = _as("alice", "approve", run_id, "go", "--state", state, cwd=b)
    assert code == 3 and "approved go already" in err, err
    code, _, err = _as("carol", "resume", run_id, "--state", state, cwd=a)
    assert code == 4 and "1 of 2 approvals (alice)" in err, err
    assert _as("bob", "approve", run_id, "go", "--state", state, cwd=b)[0] == 0

    # The gate's text changed: the plan hash and the gate digest with it; both are void.
    _write(tmp_path, "{count: 2, not_by_starter: true, expires: 1s}", "promote node2?")
    code, _, err = _as(
        "carol", "resume", run_id, "--allow-changed-plan", "--yes", "--state", state, cwd=a
    )
    assert code == 4, err
    assert "0 of 2 approvals" in err and "void" in err and "alice" in err, err
    assert not (tmp_path / "fx").exists()

    # Approved again for the new gate, then left past its expiry: expired, not counted.
    assert _as("alice", "approve", run_id, "go", "--state", state, cwd=b)[0] == 0
    assert _as("bob", "approve", run_id, "go", "--state", state, cwd=b)[0] == 0
    time.sleep(1.5)  # past the 1 s expiry, however slow the calls before were
    code, _, err = _as(
        "carol", "resume", run_id, "--allow-changed-plan", "--yes", "--state", state, cwd=a
    )
    assert code == 4 and "expired: alice, bob" in err, err
    assert not (tmp_path / "fx").exists()


@pytest.mark.parametrize(
    ("approve", "said"),
    [
        ("{count: 0}", "count"),
        ("{expires: soon}", "expires"),
        ("{count: 2, by: alice}", "by"),
        ("maybe", "approve"),
    ],
)
def test_bad_gate_options_are_positioned(tmp_path: Path, approve: str, said: str) -> None:
    """Every bad approve option is an error at its line and column, exit 2."""
    runbook = _write(tmp_path, approve)
    done = run_cli("validate", str(runbook))
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert f"{runbook}:6:" in out and said in out and "Traceback" not in out, out


def test_a_bad_identity_variable_name_is_positioned(tmp_path: Path) -> None:
    """settings.identity_env must be an environment variable name."""
    runbook = _write(tmp_path, "true")
    runbook.write_text(runbook.read_text().replace("DRCTL_TEST_ACTOR", "1-actor"))
    done = run_cli("validate", str(runbook))
    assert done.returncode == 2 and f"{runbook}:4:" in done.stdout + done.stderr


def test_approving_what_is_not_a_waiting_gate_is_exit_2(tmp_path: Path) -> None:
    """An unknown step, a step that is no gate, a gate not reached yet: exit 2 naming it."""
    state = str(tmp_path / "state.db")
    runbook = _write(tmp_path, "{not_by_starter: true}")
    env = {"DRCTL_TEST_ACTOR": "carol"}
    assert run_cli("run", str(runbook), "--state", state, env=env).returncode == 4
    run_id = _run_id(state, tmp_path)
    for step, said in (("nope", "has no gate 'nope'"), ("act", "has no gate 'act'")):
        done = run_cli("approve", run_id, step, "--state", state)
        assert done.returncode == 2 and said in done.stderr, done.stderr
    assert run_cli("approve", "no-such-run", "go", "--state", state).returncode == 2
