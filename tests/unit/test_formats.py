"""One output-format vocabulary: -o/--format everywhere, md and markdown both, --output kept as a hidden alias; log --last."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli

RUNBOOK = (
    "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: f}\n"
    "steps:\n  - {id: a, type: shell, with: {command: 'true', verify: 'true'}}\n"
)


def test_markdown_is_spelt_either_way_with_o_or_format(tmp_path: Path) -> None:
    """plan -o md, plan --format md and plan --format markdown print the same document."""
    path = tmp_path / "r.yaml"
    path.write_text(RUNBOOK)
    outs = {
        run_cli("plan", str(path), *flag).stdout
        for flag in (("-o", "md"), ("--format", "md"), ("--format", "markdown"), ("-o", "MARKDOWN"))
    }
    assert len(outs) == 1 and next(iter(outs)).startswith("### drctl plan")


def test_drill_accepts_markdown_and_names_the_choices_on_a_bad_one() -> None:
    """drill's --format takes the shared names (markdown too) and a wrong value lists them, exit 2."""
    bad = run_cli("drill", "--format", "pdf")
    assert bad.returncode == 2
    assert "'pdf' is not one of markdown, html, json" in bad.stderr
    help_text = run_cli("drill", "--help").stdout
    assert "-o, --format FORMAT" in help_text and "markdown (md)" in help_text


def test_run_status_runs_and_log_take_o_and_the_old_output(tmp_path: Path) -> None:
    """run/runs/status/log take -o json; --output json still works and is hidden from help; log --last reads the newest run."""
    path = tmp_path / "r.yaml"
    path.write_text(RUNBOOK)
    state = str(tmp_path / "state.db")
    ran = run_cli("run", str(path), "-o", "json", "--state", state)
    assert ran.returncode == 0, ran.stderr
    assert all(json.loads(line) for line in ran.stdout.splitlines() if line.strip())
    (run,) = json.loads(run_cli("runs", "-o", "json", "--state", state).stdout)
    assert json.loads(run_cli("runs", "--output", "json", "--state", state).stdout) == [run]
    assert json.loads(run_cli("status", "-o", "json", "--state", state).stdout)["id"] == run["id"]
    by_id = run_cli("log", run["id"], "-o", "json", "--state", state).stdout
    last = run_cli("log", "--last", "--format", "json", "--state", state)
    assert last.returncode == 0, last.stderr
    assert last.stdout == by_id and by_id.strip()
    for command in ("run", "resume", "status", "runs", "log"):
        shown = run_cli(command, "--help").stdout
        assert "-o, --format" in shown and "--output" not in shown, command
    neither = run_cli("log", "--state", state)
    assert neither.returncode == 2 and "give a RUN_ID or --last" in neither.stderr
