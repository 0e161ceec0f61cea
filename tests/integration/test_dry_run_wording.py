"""A dry run's lines read as sentences and name targets, not step ids (real sandbox pair)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.pg_sandbox import Pair, drctl, explain, shared_sandbox  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.integration
def test_dry_run_fence_lines_name_the_target_and_read_as_would(
    shared_sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A fence's dry-run line names its target (not the step id); one on a standby says it would do nothing, grammatically."""
    pair = shared_sandbox
    runbook = tmp_path / "fence.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: wording}\n"
        f"targets:\n  db_primary: {pair.target_yaml(pair.node1)}\n"
        f"  db_standby: {pair.target_yaml(pair.node2)}\n"
        "steps:\n"
        "  - {id: fence-a, type: postgres.fence, target: db_primary, with: {mode: read_only}}\n"
        "  - {id: fence-b, type: postgres.fence, target: db_standby, with: {mode: read_only}}\n"
    )
    dry = drctl("run", str(runbook), "--dry-run", "--state", str(tmp_path / "state.db"))
    assert dry.returncode == 0, explain(dry)
    out = dry.stdout + dry.stderr
    assert "fence-a: would fence db_primary: " in out, explain(dry)
    assert "fence fence-a" not in out
    assert "fence-b: would do nothing: the server is a standby and takes no writes already" in out
    assert "would the server" not in out
