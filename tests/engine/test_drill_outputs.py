"""Drill results where CI and dashboards read them: JUnit XML, OpenMetrics, trends, regression.

Drills run for real through the engine against SQLite with a canary that writes into a
list (real databases are in tests/integration/test_drill_outputs.py); the JUnit text is
checked against the JUnit XML schema and the OpenMetrics text by Prometheus's own parser.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from drctl.compiler.params import ParamInput
from drctl.drill import run as drill_run
from drctl.drill.canary import CanarySpec
from drctl.drill.measure import RegressionLimit, Verdict
from drctl.drill.report import build, drill_event, drills
from drctl.engine import events as ev
from drctl.engine.executor import Interrupts, Options
from drctl.engine.runs import abort, find_run
from drctl.render import drill as render
from drctl.render.junit import as_junit
from drctl.state.base import Event
from tests.conftest import run_cli
from tests.engine.conftest import HEAD, Harness
from tests.unit.test_canary_writer import ListCanary

SCHEMA = xmlschema.XMLSchema(str(Path(__file__).parents[1] / "fixtures" / "junit.xsd"))

PLAIN = (
    HEAD
    + """objectives: {rto: 60s, rpo: 0}
steps:
  - {id: first, type: shell, with: {command: "true", mutates: false}}
  - {id: second, type: shell, with: {command: "true", verify: "true"}}
"""
)
FAILING = (
    HEAD
    + """objectives: {rto: 60s}
steps:
  - {id: first, type: shell, with: {command: "true", mutates: false}}
  - {id: broken, type: shell, with: {command: "exit 3", verify: "true"}}
  - {id: never, type: shell, requires: [broken], with: {command: "true", verify: "true"}}
"""
)


def _drill(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    regression: RegressionLimit | None = None,
) -> Any:
    canary = ListCanary()
    monkeypatch.setattr(drill_run, "make_canary", lambda spec, drill_id, first_seq=1: canary)
    runner = drill_run.DrillRunner(
        harness.store, lambda plan: [harness.sink], harness.gate, Interrupts(), harness.clock
    )
    return runner.drill(
        harness.write(text), ParamInput(()), Options(), CanarySpec("list", "list://"),
        regression=regression,
    )  # fmt: skip


def _set_rto(harness: Harness, run_id: str, rto: float) -> None:
    """Give an earlier drill a known RTO: a later drill_measured of a run is the one read."""
    measured = drill_event(harness.store.events(run_id))
    assert measured is not None
    again = replace(measured, measurement={**measured.measurement, "rto": rto})
    harness.store.append(run_id, Event(ev.DRILL_MEASURED, 0.0, data=again.to_json()), None)


def test_regression_limit_compares_with_the_median_of_the_last_drills() -> None:
    """The baseline is the median of the newest N earlier RTOs; no earlier drill judges nothing."""
    verdict = Verdict(60.0, 0.0, True, True)
    limit = RegressionLimit(0.2, 3)
    # The newest three are 1.0, 5.0 and 1.1: median 1.1, so up to 1.32 s is allowed.
    judged = limit.judge(verdict, 1.3, [1.0, 5.0, 1.1, 100.0])
    assert (judged.rto_baseline, judged.rto_baseline_drills) == (1.1, 3)
    assert judged.rto_regression_met is True and judged.passed
    slower = limit.judge(verdict, 1.4, [1.0, 5.0, 1.1, 100.0])
    assert slower.rto_regression_met is False and not slower.passed
    first = limit.judge(verdict, 1000.0, [])
    assert first.rto_regression_met is None and first.passed
    assert first.rto_regression_allowed == 0.2


def test_a_drill_slower_than_its_history_fails_and_says_so(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a recent median far below its RTO, a drill that met its objectives exits 1."""
    limit = RegressionLimit(0.2, 10)
    first = _drill(harness, monkeypatch, PLAIN, limit)
    # The first drill has nothing to compare with: it passes, saying there is no baseline.
    assert first.exit_code == 0 and first.verdict.rto_regression_met is None
    _set_rto(harness, first.run_id, 1e-9)
    slow = _drill(harness, monkeypatch, PLAIN, limit)
    assert slow.verdict.rto_met and slow.verdict.rpo_met
    assert slow.verdict.rto_regression_met is False and slow.exit_code == 1
    report = build(harness.store, slow.run_id)
    text = render.as_markdown(report)
    assert "| RTO against recent drills |" in text and "MISSED" in text, text
    assert "FAILED: objectives missed" in text
    # The verdict was journaled: a report rebuilt later says the same.
    assert report.drill.verdict["rto_baseline"] == pytest.approx(1e-9)
    _set_rto(harness, slow.run_id, 1e6)
    _set_rto(harness, first.run_id, 1e6)
    fast = _drill(harness, monkeypatch, PLAIN, limit)
    assert fast.verdict.rto_regression_met is True and fast.exit_code == 0


def test_a_failed_run_is_no_baseline(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drills whose run failed measured no failover: they are left out of the median."""
    failed = _drill(harness, monkeypatch, FAILING)
    assert failed.exit_code == 1
    _set_rto(harness, failed.run_id, 1e-9)
    abort(find_run(harness.store, failed.run_id), "given up", harness.store)
    # Same runbook name (t) as PLAIN: only the failed run is in its history.
    judged = _drill(harness, monkeypatch, PLAIN, RegressionLimit(0.0, 10))
    assert judged.verdict.rto_baseline is None and judged.exit_code == 0


def test_junit_report_is_schema_valid_with_one_case_per_objective_and_step(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed drill's JUnit XML validates; the failed step fails, the unreached one is skipped."""
    result = _drill(harness, monkeypatch, FAILING, RegressionLimit(0.2))
    text = as_junit(build(harness.store, result.run_id))
    SCHEMA.validate(text)
    doc = SCHEMA.to_dict(text)
    suite = doc["testsuite"][0]
    cases = {c["@name"]: c for c in suite["testcase"]}
    assert set(cases) == {"RPO", "RTO", "RTO regression", "first", "broken", "never"}
    assert (
        "failure" in cases["broken"] and "exit" in json.dumps(cases["broken"], default=str).lower()
    )
    assert "skipped" in cases["never"] and "skipped" in cases["RPO"]  # no RPO objective
    assert "skipped" in cases["RTO regression"]  # no earlier drill
    assert (
        not {"failure", "error", "skipped"} & set(cases["RTO"]) and "failure" not in cases["first"]
    )
    assert (suite["@tests"], suite["@failures"], suite["@skipped"]) == (6, 1, 3)


def test_openmetrics_figures_parse_and_match_the_report(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prometheus's parser reads the drill's figures back as the report has them."""
    result = _drill(harness, monkeypatch, PLAIN)
    report = build(harness.store, result.run_id)
    families = {f.name: f for f in text_string_to_metric_families(render.as_openmetrics(report))}
    value = {name: f.samples[0].value for name, f in families.items() if f.samples}
    assert value["drctl_drill_passed"] == 1
    assert value["drctl_drill_rto_seconds"] == pytest.approx(report.drill.rto)
    assert value["drctl_drill_missing_writes"] == 0
    assert value["drctl_drill_acknowledged_writes"] == report.drill.measurement["acknowledged"] > 0
    assert value["drctl_drill_rto_objective_seconds"] == 60
    assert families["drctl_drill_rto_seconds"].unit == "seconds"
    steps = {s.labels["step"] for s in families["drctl_drill_step_duration_seconds"].samples}
    assert steps == {"first", "second"}
    assert families["drctl_drill_run"].samples[0].labels["run_id"] == result.run_id
    assert value["drctl_drill_last_success_timestamp_seconds"] == pytest.approx(report.started_at)


def test_drills_json_gives_each_drill_its_trend(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runs --drills --format json: each drill has the median RTO of its runbook's earlier ones."""
    ids = [_drill(harness, monkeypatch, PLAIN).run_id for _ in range(3)]
    for run_id, rto in zip(ids, (2.0, 4.0, 6.0), strict=True):
        _set_rto(harness, run_id, rto)
    rows = json.loads(render.drills_json(drills(harness.store)))
    assert [r["id"] for r in rows] == ids[::-1]
    newest, middle, oldest = rows
    assert (newest["rto_baseline"], newest["rto_baseline_drills"]) == (3.0, 2)
    assert newest["rto_change"] == pytest.approx(1.0)
    assert middle["rto_baseline"] == 2.0 and oldest["rto_baseline"] is None


@pytest.mark.parametrize("given", ["fast", "-5%", "inf", "", "20%%"])
def test_a_bad_regression_limit_is_exit_2_naming_the_flag(tmp_path: Path, given: str) -> None:
    """--max-rto-regression that is no percentage is refused before any canary writes."""
    runbook = tmp_path / "rb.yaml"
    runbook.write_text(PLAIN)
    state = tmp_path / "state.db"
    done = run_cli(
        "drill", str(runbook), "--canary-dsn", "host=127.0.0.1 port=1", "--state", str(state),
        "--max-rto-regression", given,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--max-rto-regression" in done.stderr and "Traceback" not in done.stderr
    assert not state.exists()
