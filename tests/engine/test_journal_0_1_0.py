"""Runs journaled by drctl 0.1.0 read back, render as 0.1.0 rendered them, and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from drctl.drill.report import build
from drctl.render import drill as drill_render
from drctl.state.sqlite import SqliteStore
from tests import fixtures as fx
from tests.conftest import run_cli


def _cli(tmp: Path, *args: str) -> str:
    result = run_cli(
        *args,
        "--state",
        str(tmp / "state.db"),
        cwd=str(tmp),
        env={"FIXTURE_TOKEN": "tok-fixture-resumed"},
    )
    assert result.returncode in (0, 4), result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("name", fx.RUNS)
def test_log_and_status_render_as_0_1_0_did(tmp_path: Path, name: str) -> None:
    """drctl log (text and JSON) and drctl status print a 0.1.0 journal as 0.1.0 printed it."""
    run = fx.load(tmp_path / "state.db", name)
    assert _cli(tmp_path, "log", run.id) == (fx.JOURNALS / f"{name}.log.txt").read_text()
    assert (
        _cli(tmp_path, "log", run.id, "--output", "json")
        == (fx.JOURNALS / f"{name}.log.jsonl").read_text()
    )
    assert _cli(tmp_path, "status", run.id) == (fx.JOURNALS / f"{name}.status.txt").read_text()
    assert json.loads(_cli(tmp_path, "status", run.id, "--output", "json")) == json.loads(
        (fx.JOURNALS / f"{name}.status.json").read_text()
    )


@pytest.mark.parametrize("name", ["drill_paused", "drill_measured"])
def test_drill_report_renders_as_0_1_0_did(tmp_path: Path, name: str) -> None:
    """A drill journaled by 0.1.0 gives 0.1.0's Markdown and JSON report.

    Changed on purpose: a step stopped at its gate is ``waiting`` (0.1.0 said
    ``started``, as for a step that began and never ended, now ``running``), and a
    paused drill's headline says PAUSED and how to continue (0.1.0 said FAILED).
    """
    run = fx.load(tmp_path / "state.db", name)
    report = build(SqliteStore(tmp_path / "state.db"), run.id)
    assert drill_render.as_markdown(report) == (fx.JOURNALS / f"{name}.report.md").read_text()
    assert json.loads(drill_render.as_json(report)) == json.loads(
        (fx.JOURNALS / f"{name}.report.json").read_text()
    )


def _workdir(tmp: Path) -> Path:
    work = tmp / "work"
    work.mkdir()
    for runbook in ("runbook.yaml", "rollback.yaml"):
        shutil.copy(fx.JOURNALS / runbook, work / runbook)
    return work


def test_run_stopped_at_a_gate_by_0_1_0_resumes_to_the_end(tmp_path: Path) -> None:
    """A 0.1.0 run waiting for approval resumes (same plan hash) and runs only what was left."""
    work = _workdir(tmp_path)
    run = fx.load(tmp_path / "state.db", "stopped", workdir=work)
    out = _cli(tmp_path, "resume", run.id, "--approve", "promote")
    assert "run finished: succeeded (exit 0)" in out
    assert (work / "promoted").exists()
    assert not (work / "greeted").exists()  # done in 0.1.0's run: not run again
    events = SqliteStore(tmp_path / "state.db").events(run.id)
    new = [(e.kind, e.step) for e in events[len(fx.events("stopped")) :]]
    assert new == [
        ("run_resumed", None),
        ("approval_granted", "promote"),
        ("step_started", "promote"),
        ("step_succeeded", "promote"),
        ("run_finished", None),
    ]


def test_finished_and_rolled_back_runs_of_0_1_0_are_not_run_again(tmp_path: Path) -> None:
    """Resume reads a finished 0.1.0 run as done, and refuses a rolled-back one."""
    work = _workdir(tmp_path)
    done = fx.load(tmp_path / "state.db", "finished", workdir=work)
    again = run_cli("resume", done.id, "--state", str(tmp_path / "state.db"), cwd=str(tmp_path))
    assert again.returncode == 0
    assert len(SqliteStore(tmp_path / "state.db").events(done.id)) == len(fx.events("finished"))
    back = fx.load(tmp_path / "state.db", "rolled_back", workdir=work)
    refused = run_cli(
        "resume",
        back.id,
        "--state",
        str(tmp_path / "state.db"),
        cwd=str(tmp_path),
        env={"FIXTURE_TOKEN": "tok-fixture-resumed"},
    )
    assert refused.returncode == 1
    assert "was rolled back; start a new run" in refused.stderr


def test_paused_drill_of_0_1_0_finishes_unmeasured(tmp_path: Path) -> None:
    """A drill 0.1.0 paused at its gate is found as paused, and --unmeasured finishes it."""
    work = _workdir(tmp_path)
    run = fx.load(tmp_path / "state.db", "drill_paused", workdir=work)
    refused = run_cli(
        "resume",
        run.id,
        "--state",
        str(tmp_path / "state.db"),
        cwd=str(tmp_path),
        env={"FIXTURE_TOKEN": "tok-fixture-resumed"},
    )
    assert refused.returncode == 2
    assert "drctl drill --resume" in refused.stderr + refused.stdout
    out = _cli(tmp_path, "resume", run.id, "--unmeasured", "--approve", "promote")
    assert "run finished: succeeded (exit 0)" in out
