"""Targets decided at run time, executed against the machine's PostgreSQL (127.0.0.1:5432).

Two targets reach the same server under different ``application_name``s, so a query
shows which target a step really used.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.conftest import PG_ADMIN_URL, require_or_skip
from tests.integration.pg_sandbox import (
    ThreeNodes,
    drctl,
    explain,
    in_recovery,
    journal,
    one,
    three_nodes,  # noqa: F401
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _machine_postgres() -> None:
    import psycopg

    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        require_or_skip(f"PostgreSQL at {PG_ADMIN_URL}: {exc}")


def _runbook(path: Path, steps: str) -> Path:
    sep = "&" if "?" in PG_ADMIN_URL else "?"
    targets = "".join(
        f'  {name}: {{type: postgres, dsn: "{PG_ADMIN_URL}{sep}application_name=drctl_{name}"}}\n'
        for name in ("a", "b", "c")
    )
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: run-time-targets}\n"
        f"targets:\n{targets}steps:\n{steps}"
    )
    return path


def _pick(names: str) -> str:
    return f'  - {{id: pick, type: shell, with: {{command: "echo {names}", mutates: false}}}}\n'


def _asks(expect: str) -> str:
    return f"query: \"SELECT current_setting('application_name')\", expect: {expect}"


def test_a_run_time_target_is_the_rendered_one_and_journaled(tmp_path: Path) -> None:
    """The dry run says the target is decided at run time; the run acts on the one its template named (b) and journals it."""
    steps = _pick("b") + (
        '  - {id: ask, type: postgres.sql, target: "{{ steps.pick.outputs.stdout }}",\n'
        f"     target_one_of: [a, b], with: {{{_asks('drctl_b')}}}}}\n"
    )
    state = tmp_path / "state.db"
    runbook = _runbook(tmp_path / "r.yaml", steps)
    dry = drctl("run", str(runbook), "--dry-run", "--state", str(state))
    assert dry.returncode == 0, explain(dry)
    assert (
        "not checked: its target is decided at run time from steps.pick.outputs.stdout: "
        "one of a, b" in dry.stdout
    ), explain(dry)
    done = drctl("run", str(runbook), "--state", str(state))
    assert done.returncode == 0, explain(done)
    started = [e for e in journal(state) if e["kind"] == "step_started" and e["step"] == "ask"]
    assert len(started) == 1 and started[0]["data"]["target"] == "b", started
    assert "ask: started (attempt 1) on b" in done.stdout, explain(done)


def test_a_run_time_target_outside_its_choices_fails_the_step_clearly(tmp_path: Path) -> None:
    """A template naming c when the step may take only a or b fails that step (exit 1) naming both."""
    steps = _pick("c") + (
        '  - {id: ask, type: postgres.sql, target: "{{ steps.pick.outputs.stdout }}",\n'
        f"     target_one_of: [a, b], with: {{{_asks('drctl_c')}}}}}\n"
    )
    state = tmp_path / "state.db"
    done = drctl("run", str(_runbook(tmp_path / "r.yaml", steps)), "--state", str(state))
    assert done.returncode == 1, explain(done)
    assert (
        "target: steps.pick.outputs.stdout named 'c', which is not one of the targets this "
        "step may take (a, b)" in done.stdout + done.stderr
    ), explain(done)


def test_a_fan_out_over_run_time_targets_runs_only_the_listed_ones(tmp_path: Path) -> None:
    """for_each over a run-time list of names runs ask[a] and ask[c] on their own targets and skips ask[b], saying why."""
    steps = _pick("a c") + (
        '  - {id: ask, type: postgres.sql, for_each: "{{ steps.pick.outputs.stdout.split() }}",\n'
        '     target: "{{ item }}", target_one_of: [a, b, c],\n'
        "     with: {" + _asks('"drctl_{{ item }}"') + "}}\n"
    )
    state = tmp_path / "state.db"
    runbook = _runbook(tmp_path / "r.yaml", steps)
    plan = drctl("plan", str(runbook))
    assert plan.returncode == 0, explain(plan)
    assert "runs only if b is among steps.pick.outputs.stdout.split() at run time" in plan.stdout
    done = drctl("run", str(runbook), "--state", str(state))
    assert done.returncode == 0, explain(done)
    events = journal(state)
    succeeded = {e["step"] for e in events if e["kind"] == "step_succeeded"}
    assert {"ask[a]", "ask[c]"} <= succeeded and "ask[b]" not in succeeded
    skipped = [e for e in events if e["kind"] == "step_skipped"]
    assert [(e["step"], e["data"]["reason"]) for e in skipped] == [
        ("ask[b]", "b is not among steps.pick.outputs.stdout.split() (a, c)")
    ]


def test_a_run_time_fan_out_naming_an_unplanned_target_fails(tmp_path: Path) -> None:
    """A run-time list naming a target outside target_one_of fails the fan-out's steps, naming it."""
    steps = _pick("a c") + (
        '  - {id: ask, type: postgres.sql, for_each: "{{ steps.pick.outputs.stdout.split() }}",\n'
        '     target: "{{ item }}", target_one_of: [a, b],\n'
        "     with: {" + _asks('"drctl_{{ item }}"') + "}}\n"
    )
    state = tmp_path / "state.db"
    done = drctl("run", str(_runbook(tmp_path / "r.yaml", steps)), "--state", str(state))
    assert done.returncode == 1, explain(done)
    assert "for_each: steps.pick.outputs.stdout.split() named c, not among the targets" in (
        done.stdout + done.stderr
    ), explain(done)


# -- on a three-node topology ---------------------------------------------------------------

THREE_NODE_STEPS = """  - id: choose
    type: postgres.choose_primary
    with: {old_primary: node1, candidates: [node2, node3]}
  - {id: fence, type: postgres.fence, target: node1, with: {mode: hard}}
  - id: promote
    type: postgres.promote
    target: "{{ steps.choose.outputs.target }}"
    with: {old_primary: node1}
  - id: follow
    type: postgres.follow
    for_each: "{{ steps.choose.outputs.others }}"
    target: "{{ item }}"
    with: {new_primary: "{{ steps.choose.outputs.target }}"}
"""


def test_kill_9_after_a_run_time_promote_resumes_on_the_chosen_node(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """drctl killed -9 right after promoting the chosen node resumes verifying that node (one promotion), and the other follows it."""
    topo = three_nodes
    targets = "".join(f"  {n.name}: {topo.target_yaml(n)}\n" for n in topo.nodes)
    runbook = tmp_path / "three.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: three-node-run-time}\n"
        f"targets:\n{targets}settings: {{step_timeout: 90s}}\nsteps:\n{THREE_NODE_STEPS}"
    )
    state = tmp_path / "state.db"
    killed = drctl(
        "run", str(runbook), "--yes", "--state", str(state),
        env={"DRCTL_FAULT": "after-apply:promote"},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    resumed = drctl("resume", "--last", "--yes", "--state", str(state))
    assert resumed.returncode == 0, explain(resumed)

    events = journal(state)
    chosen = next(
        e["data"]["outputs"]["target"]
        for e in events
        if e["kind"] == "step_succeeded" and e["step"] == "choose"
    )
    other = "node3" if chosen == "node2" else "node2"
    promoted = [e for e in events if e["kind"] == "step_succeeded" and e["step"] == "promote"]
    assert len(promoted) == 1 and promoted[0]["data"].get("verified_on_resume") is True
    assert [
        e["data"]["target"]
        for e in events
        if e["kind"] == "step_started" and e["step"] == "promote"
    ] == [chosen]
    skipped = [e["step"] for e in events if e["kind"] == "step_skipped"]
    assert skipped == [f"follow[{chosen}]"]
    nodes = {n.name: n for n in topo.nodes}
    assert not in_recovery(nodes[chosen].dsn)
    assert in_recovery(nodes[other].dsn)
    assert one(nodes[other].dsn, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert one(nodes[other].dsn, "SELECT received_tli FROM pg_stat_wal_receiver") == 2
