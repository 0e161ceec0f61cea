"""``drctl sandbox up --patroni``: a real Patroni cluster beside the plain nodes, in status, removed by down."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.pg_sandbox import (
    _skip_without_postgres,
    drctl,
    explain,
    free_base_port,
    shared_dir,
)

pytestmark = pytest.mark.integration


def test_sandbox_up_patroni_lists_members_runs_the_switchover_and_down_removes_it() -> None:
    """up --patroni starts three Patroni members; status json lists them; the switchover
    runbook runs on its params; down stops and removes everything."""
    _skip_without_postgres()
    parent = shared_dir("drctl-sbp-")
    root = parent / "sb"
    base = free_base_port(width=20)
    try:
        up = drctl("sandbox", "up", "--patroni", "--dir", str(root), "--base-port", str(base))
        assert up.returncode == 0, explain(up)
        assert "patroni" in up.stdout
        shown = drctl("sandbox", "status", "--dir", str(root), "--format", "json")
        assert shown.returncode == 0, explain(shown)
        patroni = json.loads(shown.stdout)["patroni"]
        assert patroni["paused"] is False
        members = {m["name"]: m for m in patroni["members"]}
        assert set(members) == {"pg1", "pg2", "pg3"}
        leader = next(n for n, m in members.items() if m["role"] == "leader")
        assert all(m["state"] == "streaming" for n, m in members.items() if n != leader)
        assert all(m["api_url"].startswith("http://127.0.0.1:") for m in members.values())
        assert all(isinstance(m["timeline"], int) for m in members.values())
        secret = (root / "patroni" / "restapi.secret").read_text()
        run = drctl(
            "run", "runbooks/patroni-switchover.yaml", "--params-file",
            patroni["params"]["switchover"], "--yes", "--state", str(parent / "state.db"),
        )  # fmt: skip
        assert run.returncode == 0, explain(run)
        assert secret not in run.stdout + run.stderr
        after = json.loads(
            drctl("sandbox", "status", "--dir", str(root), "--format", "json").stdout
        )
        now = next(m["name"] for m in after["patroni"]["members"] if m["role"] == "leader")
        assert now != leader
        text = drctl("sandbox", "status", "--dir", str(root))
        assert "patroni" in text.stdout and now in text.stdout
    finally:
        down = drctl("sandbox", "down", "--dir", str(root))
        shutil.rmtree(parent, ignore_errors=True)
    assert down.returncode == 0, explain(down)
    assert not Path(root).exists()
