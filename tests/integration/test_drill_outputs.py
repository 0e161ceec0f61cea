"""Drill output for CI and dashboards, from a drill on a real PostgreSQL primary.

The canary writes to the sandbox's primary while a read-only check runs; the JUnit report
written by ``--report x.xml`` must validate against the JUnit XML schema, and the
OpenMetrics text must parse with Prometheus's own parser and carry the drill's figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xmlschema
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.integration.pg_sandbox import Pair, drctl, explain, shared_sandbox  # noqa: F401

SCHEMA = Path(__file__).parents[1] / "fixtures" / "junit.xsd"

RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: drill-outputs}}
objectives: {{rto: 60s, rpo: 0}}
targets:
  primary: {primary}
steps:
  - {{id: answers, type: postgres.sql, target: primary, with: {{query: "SELECT 1", expect: 1}}}}
"""


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_junit_and_openmetrics_of_a_real_drill(shared_sandbox: Pair, tmp_path: Path) -> None:  # noqa: F811
    """A real drill's JUnit report validates and its OpenMetrics figures match its JSON report."""
    pair = shared_sandbox
    runbook = tmp_path / "rb.yaml"
    runbook.write_text(RUNBOOK.format(primary=pair.target_yaml(pair.node1)))
    state = str(tmp_path / "state.db")
    junit = tmp_path / "drill.xml"
    done = drctl(
        "drill", str(runbook), "--canary-dsn", pair.node1.dsn, "--state", state,
        "--report", str(junit), "--max-rto-regression", "20%",
    )  # fmt: skip
    assert done.returncode == 0, explain(done)
    xmlschema.XMLSchema(str(SCHEMA)).validate(str(junit))
    text = junit.read_text()
    assert 'name="answers"' in text and 'name="RPO"' in text and "<failure" not in text, text
    run_id = json.loads(drctl("runs", "--drills", "--output", "json", "--state", state).stdout)[0][
        "id"
    ]

    metrics = tmp_path / "drill.prom"
    again = drctl(
        "drill", str(runbook), "--canary-dsn", pair.node1.dsn, "--state", state,
        "--report", str(metrics),
    )  # fmt: skip
    assert again.returncode == 0, explain(again)
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    rows = json.loads(drctl("runs", "--drills", "--output", "json", "--state", state).stdout)
    assert [r["id"] for r in rows][1] == run_id
    newest = rows[0]
    assert families["drctl_drill_rto_seconds"].samples[0].value == pytest.approx(newest["rto"])
    assert families["drctl_drill_missing_writes"].samples[0].value == newest["missing"] == 0
    assert families["drctl_drill_passed"].samples[0].value == 1
    # The trend: the newest drill is compared with the one before it.
    assert (
        newest["rto_baseline"] == pytest.approx(rows[1]["rto"])
        and newest["rto_baseline_drills"] == 1
    )
