"""The MongoDB example runbooks: validated, planned, linted, and run for real by the CLI.

``drctl run`` and ``drctl resume`` run in a fresh interpreter against the replica set
played by mockupdb in this process (tests/integration/mongo_fixtures.py), so the
engine, the journal, secret references and the steps are exercised together.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_cli
from tests.integration.mongo_fixtures import (
    MockReplicaSet,
    mock_rs,  # noqa: F401
    mock_rs5,  # noqa: F401
    mockup_servers,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PLANNED = "runbooks/mongo-planned-failover.yaml"
DISASTER = "runbooks/mongo-regional-disaster.yaml"


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _events(state: Path) -> list[dict[str, Any]]:
    runs = run_cli("runs", "--output", "json", "--state", str(state))
    assert runs.returncode == 0, _explain(runs)
    run_id = json.loads(runs.stdout)[0]["id"]
    log = run_cli("log", run_id, "--output", "json", "--state", str(state))
    assert log.returncode == 0, _explain(log)
    return [json.loads(line) for line in log.stdout.splitlines() if line.strip()]


def test_mongo_runbooks_validate_and_plan() -> None:
    """Both MongoDB runbooks validate and plan; only the regional disaster acknowledges DR001 and DR002."""
    result = run_cli("validate", PLANNED, DISASTER)
    assert result.returncode == 0, _explain(result)
    planned = run_cli("plan", PLANNED, "-p", "new_primary=db2:27017", "-p", "hold=db3:27017")
    assert planned.returncode == 0, _explain(planned)
    assert "Safety lints: none fired" in planned.stdout
    assert "step down the primary of rs (secondaries may catch up for 15s" in planned.stdout
    disaster = run_cli(
        "plan", DISASTER, "-p", "survivor=db4:27017", "-p", "lost=db1:27017,db2:27017,db3:27017",
        "--format", "json",
    )  # fmt: skip
    assert disaster.returncode == 0, _explain(disaster)
    plan = json.loads(disaster.stdout)
    text = json.dumps(plan)
    assert "DR001" in text and "DR002" in text
    assert "MONGO_SURVIVORS_URI" in text  # a reference, never a value


def test_regional_disaster_without_acknowledgement_is_refused(tmp_path: Path) -> None:
    """Without its acknowledgement the forced reconfig is an error for DR001 and DR002."""
    text = (REPO / DISASTER).read_text(encoding="utf-8")
    bare = tmp_path / "disaster.yaml"
    bare.write_text(text.replace("    acknowledge: [DR001, DR002]\n", ""), encoding="utf-8")
    result = run_cli("plan", str(bare), "-p", "survivor=d:1", "-p", "lost=a:1")
    assert result.returncode == 2, _explain(result)
    assert "DR001" in result.stdout + result.stderr
    assert "DR002" in result.stdout + result.stderr


def test_forced_reconfig_without_accept_data_loss_is_an_input_error(tmp_path: Path) -> None:
    """force: true without accept_data_loss: true fails validation at the step's with, by line and column."""
    text = (REPO / DISASTER).read_text(encoding="utf-8")
    bad = tmp_path / "disaster.yaml"
    bad.write_text(text.replace("      accept_data_loss: true\n", ""), encoding="utf-8")
    result = run_cli("validate", str(bad))
    assert result.returncode == 2, _explain(result)
    assert f"{bad}:" in result.stdout
    assert "needs accept_data_loss: true" in result.stdout


def test_planned_failover_runs_against_the_set(mock_rs: MockReplicaSet, tmp_path: Path) -> None:  # noqa: F811
    """drctl run of the planned failover freezes the held member, steps down, elects the chosen one and probes."""
    a, b, c = mock_rs.hosts
    state = tmp_path / "state.db"
    result = run_cli(
        "run", PLANNED, "-p", f"new_primary={c}", "-p", f"hold={b}", "--yes", "--state", str(state),
        env={"MONGO_URI": mock_rs.uri()}, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, _explain(result)
    assert mock_rs.primary == c
    assert mock_rs.frozen(b)
    assert [h for h, _ in mock_rs.sent("replSetStepDown")] == [a]
    assert mock_rs.config_member(c)["priority"] == 2.0  # type: ignore[index]
    assert mock_rs.sent("insert")
    assert "mongodb://" not in result.stdout + result.stderr  # the URI is a secret


def test_interrupted_step_down_is_verified_on_resume(
    mock_rs: MockReplicaSet,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A drctl killed right after the step-down resumes by verifying it, without stepping anyone down again."""
    _a, b, c = mock_rs.hosts
    state = tmp_path / "state.db"
    env = {"MONGO_URI": mock_rs.uri()}
    args = ("-p", f"new_primary={c}", "-p", f"hold={b}", "--yes", "--state", str(state))
    killed = run_cli(
        "run", PLANNED, *args, env={**env, "DRCTL_FAULT": "after-apply:step-down"}, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, _explain(killed)
    assert len(mock_rs.sent("replSetStepDown")) == 1
    resumed = run_cli("resume", "--last", "--yes", "--state", str(state), env=env, timeout=60)
    assert resumed.returncode == 0, _explain(resumed)
    assert len(mock_rs.sent("replSetStepDown")) == 1
    assert mock_rs.primary == c
    done = [e for e in _events(state) if e["step"] == "step-down" and e["kind"] == "step_succeeded"]
    assert len(done) == 1 and done[0]["data"]["verified_on_resume"] is True, done


def test_regional_disaster_runs_against_the_survivors(
    mock_rs5: MockReplicaSet,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With the primary's region down, drctl run forces the survivors' config and they take majority writes."""
    a, b, c, d, e = mock_rs5.hosts
    mock_rs5.down(a, b, c)
    result = run_cli(
        "run", DISASTER, "-p", f"survivor={d}", "-p", f"lost={a},{b},{c}", "--yes",
        "--state", str(tmp_path / "state.db"),
        env={"MONGO_SURVIVORS_URI": mock_rs5.uri([d, e])}, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, _explain(result)
    assert [m["host"] for m in mock_rs5.config["members"]] == [d, e]
    assert mock_rs5.primary in (d, e)
    [(host, doc)] = mock_rs5.sent("replSetReconfig")
    assert host == d and doc["force"] is True


def test_regional_disaster_stops_while_the_primary_answers(
    mock_rs5: MockReplicaSet,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Run against a set whose primary still answers, the disaster runbook fails at the forced reconfig and changes nothing."""
    a, b, c, d, _e = mock_rs5.hosts
    result = run_cli(
        "run", DISASTER, "-p", f"survivor={d}", "-p", f"lost={a},{b},{c}", "--yes",
        "--state", str(tmp_path / "state.db"),
        env={"MONGO_SURVIVORS_URI": mock_rs5.uri()}, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, _explain(result)
    assert "refusing a forced reconfig" in result.stdout + result.stderr
    assert mock_rs5.sent("replSetReconfig") == []
    assert len(mock_rs5.config["members"]) == 5
