"""DR006 and the patroni target's and steps' input checks, at compile time (offline)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from drctl.compiler.compile import compile_runbook
from drctl.errors import RunbookInvalid
from tests.conftest import RUNBOOKS, run_cli

SECRET = "s3cret-patroni-pw"

HEAD = """
apiVersion: drctl/v1
kind: Runbook
metadata: {name: patroni-lints}
targets:
  cluster: {type: patroni, members: ["http://127.0.0.1:8008"], username: drctl, password: "${env:PATRONI_PASSWORD}"}
  old: {type: postgres, dsn: "${env:OLD}", managed_by: cluster}
  new: {type: postgres, dsn: "${env:NEW}", managed_by: cluster}
  plain: {type: postgres, dsn: "${env:PLAIN}"}
steps:
"""
PAUSE = "  - {id: pause, type: patroni.pause, target: cluster}\n"
RESUME = "  - {id: resume, type: patroni.resume, target: cluster}\n"
FAILOVER = (
    "  - {id: lag, type: postgres.replication_lag, target: new, with: {primary: old}}\n"
    "  - {id: fence, type: postgres.fence, target: old}\n"
    "  - {id: promote, type: postgres.promote, target: new, with: {old_primary: old}}\n"
)


def _diags(path: str) -> list[tuple[str, str]]:
    try:
        compile_runbook(path)
    except RunbookInvalid as exc:
        return [(d.code, d.message) for d in exc.diagnostics]
    return []


def test_dr006_flags_each_change_to_a_managed_server_without_a_pause_before_it(
    write_runbook: Callable[..., str],
) -> None:
    """Fence and promote on managed targets with no patroni.pause before them are DR006 errors."""
    found = _diags(write_runbook(HEAD + FAILOVER + RESUME))
    dr006 = sorted(m.split(":")[1].strip() for c, m in found if c == "DR006")
    assert dr006 == ["fence", "promote"], found
    assert all("no patroni.pause of cluster before it" in m for c, m in found if c == "DR006")


def test_dr006_is_satisfied_by_a_pause_before_and_a_resume_after(
    write_runbook: Callable[..., str],
) -> None:
    """pause → fence → promote → resume compiles with no lint at all."""
    plan = compile_runbook(write_runbook(HEAD + PAUSE + FAILOVER + RESUME))
    assert plan.lints == ()


def test_dr006_warns_when_no_resume_follows_without_failing(
    write_runbook: Callable[..., str],
) -> None:
    """A pause with no resume after the change compiles, and the plan shows a DR006 warning."""
    path = write_runbook(HEAD + RESUME + PAUSE + FAILOVER)
    plan = compile_runbook(path)
    assert {(x.code, x.warning, x.acknowledged) for x in plan.lints} == {("DR006", True, False)}
    assert all("stays paused" in x.message for x in plan.lints)
    shown = run_cli("plan", path)
    assert shown.returncode == 0, shown.stderr
    assert "DR006 [warning] fence: no patroni.resume of cluster follows" in shown.stdout


def test_dr006_ignores_unmanaged_servers_and_a_pause_of_another_cluster(
    write_runbook: Callable[..., str],
) -> None:
    """A fence of an unmanaged target needs no pause; a pause of another cluster does not count."""
    other = HEAD.replace(
        "  plain:", '  elsewhere: {type: patroni, members: ["http://127.0.0.1:9008"]}\n  plain:'
    )
    assert _diags(write_runbook(HEAD + "  - {id: f, type: postgres.fence, target: plain}\n")) == []
    found = _diags(
        write_runbook(other + "  - {id: p, type: patroni.pause, target: elsewhere}\n" + FAILOVER)
    )
    assert [c for c, _ in found].count("DR006") == 2


def test_dr006_can_be_acknowledged_on_the_step(write_runbook: Callable[..., str]) -> None:
    """acknowledge: [DR006] on the step lets a runbook act on a managed server on purpose."""
    text = HEAD + "  - {id: f, type: postgres.fence, target: old, acknowledge: [DR006]}\n"
    plan = compile_runbook(write_runbook(text))
    assert [(x.code, x.acknowledged) for x in plan.lints] == [("DR006", True)]


def test_a_patroni_switchover_counts_as_fence_and_promote_for_the_lints(
    write_runbook: Callable[..., str],
) -> None:
    """A switchover needs a lag check before it (DR002) but no separate fence (it demotes first)."""
    switch = "  - {id: sw, type: patroni.switchover, target: cluster}\n"
    assert [c for c, _ in _diags(write_runbook(HEAD + switch))] == ["DR002"]
    lag = "  - {id: lag, type: patroni.status, target: cluster, with: {max_lag_bytes: 0}}\n"
    assert compile_runbook(write_runbook(HEAD + lag + switch)).lints == ()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ('{type: patroni, members: ["ftp://db1:8008"]}', "'ftp://db1:8008' is not a REST API URL"),
        ("{type: patroni, members: []}", "list should have at least 1 item"),
        ("{type: patroni}", "missing field 'members'"),
        ('{type: patroni, members: ["http://a:1"], username: u}', "username and password go together"),
        ('{type: patroni, members: ["http://a:1"], key_file: k}', "key_file needs cert_file"),
        ('{type: patroni, members: ["http://a:1"], request_timeout: 0}', "greater than 0"),
        ('{type: patroni, members: ["http://a:1"], verify_tls: maybe}', "valid boolean"),
        ('{type: patroni, members: ["http://a:1"], user: u}', "unknown field"),
        ('{type: postgres, dsn: "${env:D}", managed_by: clustr}', "no target named 'clustr'"),
        ('{type: postgres, dsn: "${env:D}", managed_by: plain}', "'plain' is a postgres target, not patroni"),
        ('{type: postgres, dsn: "${env:D}", managed_by: [cluster]}', "valid string"),
    ],
)  # fmt: skip
def test_bad_target_fields_are_refused_with_their_place(
    write_runbook: Callable[..., str], target: str, expected: str
) -> None:
    """Each bad patroni/managed_by field fails validate with exit 2 at file:line:col, no traceback."""
    path = write_runbook(HEAD.replace("  plain: {", f"  bad: {target}\n  plain: {{") + PAUSE)
    done = run_cli("validate", path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(rf"{re.escape(path)}:\d+:\d+: error E2\d\d: targets\.bad", done.stdout), (
        done.stdout
    )
    assert expected in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("{id: s, type: patroni.switchover, target: cluster, with: {scheduled_at: tomorrow}}", "not an ISO 8601 time"),
        ("{id: s, type: patroni.switchover, target: cluster, with: {scheduled_at: '2026-12-02T03:00:00'}}", "has no time zone"),
        ("{id: s, type: patroni.switchover, target: cluster, with: {wait_seconds: 0}}", "greater than 0"),
        ("{id: s, type: patroni.switchover, target: cluster, with: {candidat: pg2}}", "unknown field"),
        ("{id: s, type: patroni.failover, target: cluster}", "missing field 'candidate'"),
        ("{id: s, type: patroni.status, target: cluster, with: {max_lag_bytes: -1}}", "greater than or equal to 0"),
        ("{id: s, type: patroni.pause, target: cluster, with: {wait_seconds: 9999}}", "less than or equal to 600"),
        ("{id: s, type: patroni.status, target: old}", "patroni"),
        ("{id: s, type: patroni.status}", "target"),
    ],
)  # fmt: skip
def test_bad_step_inputs_are_refused_with_their_place(
    write_runbook: Callable[..., str], step: str, expected: str
) -> None:
    """Each bad patroni.* input fails validate with exit 2 at file:line:col, no traceback."""
    path = write_runbook(HEAD + PAUSE + f"  - {step}\n" + RESUME)
    done = run_cli("validate", path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(rf"{re.escape(path)}:\d+:\d+: error E2\d\d", done.stdout), done.stdout
    assert expected in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_the_password_is_never_in_the_plan(write_runbook: Callable[..., str]) -> None:
    """A plan (text, JSON, markdown) shows the password's reference, never its value."""
    path = write_runbook(HEAD + PAUSE + RESUME)
    for fmt in ("text", "json", "markdown"):
        done = run_cli("plan", path, "--format", fmt, env={"PATRONI_PASSWORD": SECRET})
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr


def test_a_literal_password_is_lint_dr005(write_runbook: Callable[..., str]) -> None:
    """A patroni target's password written as a literal is DR005, like any secret field."""
    path = write_runbook(HEAD.replace('"${env:PATRONI_PASSWORD}"', SECRET) + PAUSE + RESUME)
    found = _diags(path)
    assert any(c == "DR005" for c, _ in found), found
    assert all(SECRET not in m for _, m in found)


def test_the_example_runbooks_plan_with_no_lint() -> None:
    """Both Patroni runbooks compile with no safety lint fired and no shell step."""
    for name in ("patroni-switchover.yaml", "patroni-manual-failover.yaml"):
        plan = compile_runbook(str(RUNBOOKS / name), placeholders=True)
        assert plan.lints == (), name
        assert all(s.type != "shell" for s in plan.steps)
        assert json.dumps(plan.content())
