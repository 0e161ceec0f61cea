"""Two working directories sharing the PostgreSQL state store: one lock, one journal."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration


def test_second_directory_is_locked_out_then_resumes_the_same_run(
    tmp_path: Path, pg_state_url: str
) -> None:
    """A run in dir A holds the lock; dir B gets exit 3 naming it, then resumes A's run id."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    runbook = tmp_path / "shared.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: shared}\nsteps:\n"
        f"  - {{id: work, type: shell, with: {{command: 'for i in $(seq 1200); do test -e {tmp_path}/go && break; sleep 0.05; done; echo w >> {tmp_path}/effects', verify: 'grep -q w {tmp_path}/effects'}}}}\n"
        "  - {id: gate, type: approve}\n"
        f"  - {{id: finish, type: shell, with: {{command: 'echo f >> {tmp_path}/effects', verify: 'grep -q f {tmp_path}/effects'}}}}\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", str(runbook), "--state", pg_state_url],
        cwd=a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    # The run exists once it holds the lock; its first step holds it until `go` exists.
    deadline = time.monotonic() + 60
    while not json.loads(
        run_cli("runs", "--output", "json", "--state", pg_state_url, cwd=str(b)).stdout or "[]"
    ):
        assert time.monotonic() < deadline and holder.poll() is None, "dir A's run never started"
        time.sleep(0.1)
    locked_out = run_cli("run", str(runbook), "--state", pg_state_url, cwd=str(b))
    (tmp_path / "go").touch()
    _, err = holder.communicate(timeout=60)
    assert holder.returncode == 4, err
    assert locked_out.returncode == 3, locked_out.stderr
    assert "is held by run" in locked_out.stderr
    runs = json.loads(
        run_cli("runs", "--output", "json", "--state", pg_state_url, cwd=str(b)).stdout
    )
    assert len(runs) == 1
    run_id = runs[0]["id"]
    assert runs[0]["status"] == "waiting_approval"
    resumed = run_cli("resume", run_id, "--approve", "gate", "--state", pg_state_url, cwd=str(b))
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "effects").read_text() == "w\nf\n"
    log = run_cli("log", run_id, "--output", "json", "--state", pg_state_url, cwd=str(b)).stdout
    tokens = {json.loads(line)["token"] for line in log.splitlines()}
    assert len(tokens) == 2  # the first run's token and the resume's higher one
