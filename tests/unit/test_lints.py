"""Safety lints DR001–DR005, driven by step roles, and their acknowledgement."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drctl.compiler.compile import compile_runbook
from drctl.errors import RunbookInvalid
from tests.conftest import run_cli

HEAD = """
apiVersion: drctl/v1
kind: Runbook
metadata: {name: lints}
"""


def step(sid: str, roles: str, *, verify: bool = True, extra: str = "") -> str:
    v = ', verify: "true"' if verify else ""
    return (
        f'  - {{id: {sid}, type: shell{extra}, with: {{command: "true"{v}, roles: [{roles}]}}}}\n'
    )


def lint_codes(path: str) -> list[str]:
    try:
        plan = compile_runbook(path)
    except RunbookInvalid as exc:
        return sorted(d.code for d in exc.diagnostics)
    return sorted(f"{lint.code}(ack)" for lint in plan.lints)


SAFE = (
    step("lag", "lag_check")
    + step("fence", "fence")
    + step("promote", "promote")
    + step("dns", "traffic")
)


def test_a_safe_failover_fires_no_lint(write_runbook: Callable[..., str]) -> None:
    """lag check → fence → promote → traffic, all verified: clean."""
    assert lint_codes(write_runbook(HEAD + "steps:\n" + SAFE)) == []


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (step("lag", "lag_check") + step("promote", "promote"), ["DR001"]),
        (step("fence", "fence") + step("promote", "promote"), ["DR002"]),
        (step("promote", "promote"), ["DR001", "DR002"]),
        (
            step("lag", "lag_check")
            + step("fence", "fence")
            + step("dns", "traffic")
            + step("promote", "promote", extra=", requires: [fence]"),
            ["DR003"],
        ),
        (
            step("lag", "lag_check")
            + step("fence", "fence", verify=False)
            + step("promote", "promote"),
            ["DR004"],
        ),
    ],
    ids=["no-fence", "no-lag-check", "neither", "traffic-first", "unverified-mutation"],
)
def test_each_lint_fires_on_its_mistake(
    write_runbook: Callable[..., str], steps: str, expected: list[str]
) -> None:
    """Each lint is an error with its code when its rule is broken."""
    assert lint_codes(write_runbook(HEAD + "steps:\n" + steps)) == expected


def test_fence_in_a_parallel_branch_does_not_count(write_runbook: Callable[..., str]) -> None:
    """Lints follow the dependency graph, not the file order: a fence the promote does not wait for is no fence."""
    steps = (
        step("lag", "lag_check")
        + step("fence", "fence", extra=", requires: []")
        + step("promote", "promote", extra=", requires: [lag]")
    )
    assert lint_codes(write_runbook(HEAD + "steps:\n" + steps)) == ["DR001"]


def test_a_later_verify_step_satisfies_dr004(write_runbook: Callable[..., str]) -> None:
    """An unverified mutation followed by a verify step that depends on it is fine."""
    steps = (
        step("change", "fence", verify=False)
        + '  - {id: probe, type: http, with: {url: "http://x/"}}\n'
    )
    assert "DR004" not in lint_codes(write_runbook(HEAD + "steps:\n" + steps))


def test_acknowledged_lints_are_kept_in_the_plan(write_runbook: Callable[..., str]) -> None:
    """Acknowledging on the step or for the runbook turns the error into a plan note."""
    steps = step("promote", "promote", extra=", acknowledge: [DR001]")
    path = write_runbook(HEAD + "acknowledge: [DR002]\nsteps:\n" + steps)
    assert lint_codes(path) == ["DR001(ack)", "DR002(ack)"]


def test_literal_secrets_fire_dr005_and_are_masked(write_runbook: Callable[..., str]) -> None:
    """A password in clear is an error; acknowledged, the plan still shows *** not the value."""
    from drctl.render.plan import as_json, as_text

    body = (
        HEAD
        + """
targets:
  db: {type: postgres, dsn: "postgresql://app:hunter2hunter2@db/x"}
steps:
  - id: a
    type: shell
    with: {command: "true", verify: "true", env: {DB_PASSWORD: "p4ssw0rd-literal"}}
"""
    )
    assert lint_codes(write_runbook(body)) == ["DR005", "DR005"]
    plan = compile_runbook(
        write_runbook(
            HEAD.replace("metadata", "acknowledge: [DR005]\nmetadata") + body[len(HEAD) :]
        )
    )
    for text in (as_text(plan), as_json(plan)):
        assert "hunter2hunter2" not in text
        assert "p4ssw0rd-literal" not in text
        assert "***" in text


def test_secret_references_do_not_fire_dr005(write_runbook: Callable[..., str]) -> None:
    """References in secret-looking fields are the right way and pass."""
    body = (
        HEAD
        + """
targets:
  db: {type: postgres, dsn: "postgresql://app:${env:PW}@db/x"}
steps:
  - {id: a, type: shell, with: {command: "true", verify: "true", env: {DB_PASSWORD: "${file:~/.pw}"}}}
"""
    )
    assert lint_codes(write_runbook(body)) == []


def test_a_fence_under_on_failure_continue_does_not_satisfy_dr001(
    write_runbook: Callable[..., str],
) -> None:
    """`drctl validate` exits 2 with DR001 naming the fence that may fail and why it does not count."""
    steps = (
        step("lag", "lag_check")
        + step("fence", "fence", extra=", on_failure: continue")
        + step("promote", "promote")
    )
    result = run_cli("validate", write_runbook(HEAD + "steps:\n" + steps))
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "DR001" in out
    assert "fence step 'fence' has on_failure: continue" in out
    assert "Traceback" not in out
    # A fence that stops the run when it fails, or hands over to a fallback, still counts.
    for extra in (", on_failure: abort", ", on_failure: {run: stop}"):
        steps = (
            step("lag", "lag_check")
            + step("fence", "fence", extra=extra)
            + step("promote", "promote")
        )
        fallbacks = "fallbacks:\n" + step("stop", "fence")
        assert lint_codes(write_runbook(HEAD + "steps:\n" + steps + fallbacks)) == [], extra


def test_a_fence_behind_a_when_the_promote_does_not_share_does_not_satisfy_dr001(
    write_runbook: Callable[..., str],
) -> None:
    """A fence behind its own `when:` may be skipped while the promote runs: DR001 names it."""
    # It depends on an earlier step's output, so only the run decides it.
    when = ', when: "{{ steps.lag.outputs.fence }}"'
    steps = (
        step("lag", "lag_check") + step("fence", "fence", extra=when) + step("promote", "promote")
    )
    try:
        compile_runbook(write_runbook(HEAD + "steps:\n" + steps))
    except RunbookInvalid as exc:
        found = [d for d in exc.diagnostics if d.code == "DR001"]
    else:
        found = []
    assert len(found) == 1, "a fence that may be skipped satisfied DR001"
    assert "fence step 'fence' runs only when" in found[0].message
    assert "does not share" in found[0].message
    # The same condition on the promote: both run or neither does, so the fence counts.
    shared = step("lag", "lag_check") + step("fence", "fence", extra=when)
    shared += step("promote", "promote", extra=when)
    assert lint_codes(write_runbook(HEAD + "steps:\n" + shared)) == []
