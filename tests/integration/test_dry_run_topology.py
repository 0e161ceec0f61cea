"""A dry run on a real three-node topology: read-only steps run, mutations are only checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.pg_sandbox import (
    ThreeNodes,
    drctl,
    explain,
    in_recovery,
    journal,
    three_nodes,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: dry-three}}
targets:
  old_primary: {primary}
  standby_a: {a}
  standby_b: {b}
steps:
  - {{id: lag, type: postgres.replication_lag, target: standby_a, with: {{primary: old_primary}}}}
  - id: sibling
    type: postgres.sql
    target: standby_b
    requires: [lag]
    with: {{query: "SELECT pg_is_in_recovery()", expect: {sibling_expect}}}
  - {{id: fence, type: postgres.fence, target: old_primary, with: {{mode: read_only}}}}
  - id: promote
    type: postgres.promote
    target: standby_a
    with: {{old_primary: old_primary, catchup_seconds: 2}}
  - id: is-primary
    type: postgres.sql
    target: standby_a
    with: {{query: "SELECT NOT pg_is_in_recovery()", expect: true}}
"""


@pytest.mark.integration
def test_a_dry_run_on_three_nodes_fails_where_the_run_would_and_defers_what_follows_the_promote(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Against a primary and two standbys, a dry run runs the lag check and queries for real, defers the post-promote query, fails on a wrong expectation, and changes nothing."""
    topo = three_nodes
    a, b = topo.standbys
    state = ["--state", str(tmp_path / "state.db")]

    def write(sibling_expect: str) -> str:
        path = tmp_path / f"dry-{sibling_expect}.yaml"
        path.write_text(
            _RUNBOOK.format(
                primary=topo.target_yaml(topo.primary),
                a=topo.target_yaml(a),
                b=topo.target_yaml(b),
                sibling_expect=sibling_expect,
            )
        )
        return str(path)

    passing = drctl("run", write("true"), "--dry-run", *state)
    assert passing.returncode == 0, explain(passing)
    assert "1 deferred until earlier steps take effect" in passing.stdout, explain(passing)
    checked = {
        e["step"]: e["data"] for e in journal(tmp_path / "state.db") if e["kind"] == "step_checked"
    }
    assert checked["lag"]["ran"] is True and checked["sibling"]["ran"] is True
    assert "ran" not in checked["fence"] and "ran" not in checked["promote"]
    assert checked["is-primary"]["deferred"] == "promote acts on standby_a first", json.dumps(
        checked
    )

    failing = drctl("run", write("false"), "--dry-run", *state)
    assert failing.returncode == 1, explain(failing)
    assert "sibling: CHECK FAILED" in failing.stdout, explain(failing)

    # Nothing changed: the primary still takes writes, both standbys are still standbys.
    assert not in_recovery(topo.primary.dsn)
    assert in_recovery(a.dsn) and in_recovery(b.dsn)
