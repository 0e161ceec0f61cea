"""``drctl check``: the dry run as a readiness check, compared with the previous check.

Real shell checks against files the test creates; the OpenMetrics output is read back by
Prometheus's own parser.
"""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from drctl.engine import events as ev
from drctl.engine.readiness import drift
from tests.conftest import run_cli
from tests.engine.conftest import HEAD


def _runbook(tmp: Path) -> Path:
    path = tmp / "rb.yaml"
    path.write_text(
        HEAD
        + "steps:\n"
        + "  - {id: look, type: shell, with: {command: 'true', mutates: false}}\n"
        + f"  - {{id: switch, type: shell, with: {{command: 'touch {tmp}/switched', check: 'test -e {tmp}/ready', verify: 'test -e {tmp}/switched'}}}}\n"
    )
    return path


def test_a_check_says_not_ready_then_ready_and_what_changed(tmp_path: Path) -> None:
    """Exit 1 while a precondition fails, exit 0 once it holds, with the change named; nothing applied."""
    runbook, state = _runbook(tmp_path), str(tmp_path / "state.db")
    first = run_cli("check", str(runbook), "--state", state)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "NOT READY" in first.stdout and "First check" in first.stdout, first.stdout
    (tmp_path / "ready").touch()
    second = run_cli("check", str(runbook), "--state", state, "--format", "json")
    assert second.returncode == 0, second.stdout + second.stderr
    data = json.loads(second.stdout)
    assert data["ready"] is True and data["previous"] is not None
    assert any(d.startswith("switch: was failed, now ok") for d in data["drift"]), data["drift"]
    assert not (tmp_path / "switched").exists()  # a check changes nothing
    third = run_cli("check", str(runbook), "--state", state, "--format", "prometheus")
    assert third.returncode == 0, third.stderr
    families = {f.name: f for f in text_string_to_metric_families(third.stdout)}
    assert families["drctl_check_ready"].samples[0].value == 1
    assert families["drctl_check_drift"].samples[0].value == 0
    steps = {s.labels["step"]: s.value for s in families["drctl_check_step_ok"].samples}
    assert steps == {"look": 1, "switch": 1}
    assert "drctl_check_since_last_drill_success_seconds" not in families  # no drill yet


def test_drift_names_figures_that_grew_values_that_changed_and_reordered_lists() -> None:
    """Numbers grow or fall (bytes shown as sizes), strings change, a reordered ranking is said so."""

    def reading(values: dict[str, object], status: str = "ok") -> ev.CheckReading:
        return ev.CheckReading("lag", "postgres.replication_lag", status, 0.1, "", dict(values))

    before = [reading({"lag_bytes": 0, "ttl": 60, "ranking": ["node2", "node3"], "checked_at": 1})]
    after = [
        reading(
            {"lag_bytes": 40_000_000, "ttl": 300, "ranking": ["node3", "node2"], "checked_at": 2}
        )
    ]
    said = drift(before, after)
    assert "lag: lag_bytes grew from 0 B to 40.0 MB" in said
    assert "lag: ttl grew from 60 to 300" in said
    assert "lag: ranking order changed from ['node2', 'node3'] to ['node3', 'node2']" in said
    assert not any("checked_at" in d for d in said)
    assert drift(after, after) == ()


def test_a_check_of_an_invalid_runbook_is_exit_2(tmp_path: Path) -> None:
    """A runbook that does not compile is exit 2 with its position, and no check is recorded."""
    path = tmp_path / "bad.yaml"
    path.write_text(HEAD + "steps:\n  - {id: x, type: nope}\n")
    state = tmp_path / "state.db"
    done = run_cli("check", str(path), "--state", str(state))
    assert done.returncode == 2 and f"{path}:5:" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
