"""What the compiler warns of without refusing: stale acknowledgements, and validate's hash in words."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from drctl.compiler.compile import compile_runbook
from tests.conftest import run_cli

STALE = """
apiVersion: drctl/v1
kind: Runbook
metadata: {name: stale}
acknowledge: [DR003]
steps:
  - id: a
    type: shell
    with: {command: "true", verify: "true"}
    acknowledge: [DR004]
  - id: b
    type: shell
    with: {command: "true"}
    acknowledge: [DR004]
"""


def test_a_stale_acknowledge_is_warned_of_where_it_is_written(
    write_runbook: Callable[..., str],
) -> None:
    """An acknowledge: entry for a lint that does not fire there is a W280 warning at the entry; a needed one is not."""
    path = write_runbook(STALE)
    plan = compile_runbook(path)
    found = sorted((w.code, w.location, w.message) for w in plan.warnings)
    assert found == [
        ("W280", f"{path}:4:15", "the runbook acknowledges DR003, which does not fire there"),
        ("W280", f"{path}:9:19", "step 'a' acknowledges DR004, which does not fire there"),
    ]
    # b's DR004 is needed (its shell step has no verify): no warning for it.
    assert [(lint.code, lint.step, lint.acknowledged) for lint in plan.lints] == [
        ("DR004", "b", True)
    ]


def test_validate_shows_plans_hash_or_says_why_not(tmp_path: Path) -> None:
    """validate prints the hash plan prints; with stand-ins for required params it says the hash is of those."""
    runbook = tmp_path / "r.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: h}\n"
        "params: {region: {type: str, required: true}}\n"
        "steps:\n  - {id: a, type: shell, with: {command: 'echo {{ params.region }}', verify: 'true'}}\n"
    )
    planned = run_cli("plan", str(runbook), "-p", "region=west", "--format", "json")
    assert planned.returncode == 0, planned.stderr
    plan_hash = json.loads(planned.stdout)["hash"]

    same = run_cli("validate", str(runbook), "-p", "region=west")
    assert same.returncode == 0, same.stdout
    assert same.stdout == f"{runbook}: ok (1 steps, plan hash {plan_hash})\n"

    stand_in = run_cli("validate", str(runbook))
    assert stand_in.returncode == 0, stand_in.stdout
    assert plan_hash not in stand_in.stdout
    assert (
        "of stand-ins for region; a run's hash, as drctl plan shows it with the real values, differs"
        in (stand_in.stdout)
    )


def test_warnings_reach_the_operator_of_plan_and_validate(tmp_path: Path) -> None:
    """plan writes compiler warnings to stderr (stdout stays the plan); validate lists them and exits 0."""
    runbook = tmp_path / "r.yaml"
    runbook.write_text(STALE)
    params = tmp_path / "p.yaml"
    params.write_text("unused: 1\n")
    planned = run_cli("plan", str(runbook), "--params-file", str(params))
    assert planned.returncode == 0, planned.stderr
    assert f"{params}:1:1: warning W230:" in planned.stderr
    assert planned.stderr.count("warning W280") == 2
    assert "W230" not in planned.stdout and "W280" not in planned.stdout
    checked = run_cli("validate", str(runbook), "--params-file", str(params))
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.count(": warning ") == 3
    assert checked.stdout.endswith("3 warnings\n")


def test_a_run_with_a_shared_params_file_warns_once_and_runs(tmp_path: Path) -> None:
    """drctl run with a params file holding keys the runbook does not declare runs, after one W230 warning on stderr."""
    runbook = tmp_path / "r.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: w}\n"
        "params: {who: {type: str, required: true}}\n"
        "steps:\n  - {id: a, type: shell, with: {command: 'echo {{ params.who }}', verify: 'true'}}\n"
    )
    params = tmp_path / "p.yaml"
    params.write_text("who: ops\nprimary_dsn: x\nssh_port: 22\ndns_zone: example.\n")
    ran = run_cli(
        "run", str(runbook), "--params-file", str(params), "--state", str(tmp_path / "s.db")
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stderr.count("warning W230") == 1, ran.stderr
    assert (
        "3 keys this runbook does not declare, ignored: primary_dsn, ssh_port, dns_zone"
        in ran.stderr
    )
    assert "error" not in ran.stderr
