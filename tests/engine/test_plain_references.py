"""A reference in a target's plain field (``user: ${env:USER}``) is configuration: its value is not masked."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli

RUNBOOK = """apiVersion: drctl/v1
kind: Runbook
metadata: {name: plain-refs}
targets:
  db: {type: postgres, dsn: "${env:T_DSN}", host: "${env:T_HOST}", os_user: "${env:T_USER}"}
steps:
  - id: say
    type: shell
    with: {command: "echo user=root host=db-main.internal pw=s3cr3tpw; echo ${env:T_TOKEN}", verify: "true"}
"""


def test_only_secret_places_mask_their_values(tmp_path: Path) -> None:
    """os_user/host values stay readable in output and journal; the DSN's password and a step's reference are masked."""
    path = tmp_path / "r.yaml"
    path.write_text(RUNBOOK)
    env = {
        "T_DSN": "host=db-main.internal user=app password=s3cr3tpw",
        "T_HOST": "db-main.internal",
        "T_USER": "root",
        "T_TOKEN": "tok-123456",
    }
    state = str(tmp_path / "state.db")
    ran = run_cli("run", str(path), "--state", state, env=env, cwd=str(tmp_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    log = run_cli("log", "--last", "--state", state, cwd=str(tmp_path)).stdout
    for shown in (ran.stdout + ran.stderr, log):
        assert "user=root host=db-main.internal pw=***" in shown, shown
        assert "tok-123456" not in shown and "s3cr3tpw" not in shown
