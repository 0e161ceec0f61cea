"""A step's own waits must fit in its timeout; the default timeout never cuts them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drctl.compiler.compile import compile_runbook
from drctl.errors import RunbookInvalid

HEAD = "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: t}\n"


def _errors(path: str) -> list[str]:
    with pytest.raises(RunbookInvalid) as caught:
        compile_runbook(path)
    return [f"{d.location}: {d.code} {d.message}" for d in caught.value.diagnostics]


def test_a_wait_deadline_longer_than_step_timeout_names_both(
    write_runbook: Callable[..., str],
) -> None:
    """wait deadline 5s under settings.step_timeout 2s is E213 at with.deadline, naming the setting's file:line:col."""
    path = write_runbook(
        HEAD
        + """settings: {step_timeout: 2s}
steps:
  - id: w
    type: wait
    with:
      until: {type: assert, with: {that: true}}
      deadline: 5s
"""
    )
    errors = _errors(path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}:10:17: E213 with.deadline (5s) is longer than ")
    assert f"settings.step_timeout (2s at {path}:4:26)" in errors[0]


def test_a_step_timeout_shorter_than_its_written_waits_is_refused(
    write_runbook: Callable[..., str],
) -> None:
    """A step's own timeout: shorter than promote's written catchup + wait is E213 naming both fields."""
    path = write_runbook(
        HEAD
        + """targets:
  db: {type: postgres, dsn: "host=127.0.0.1"}
steps:
  - id: p
    type: postgres.promote
    target: db
    timeout: 30s
    with: {catchup_seconds: 20, wait_seconds: 20, force: true}
    acknowledge: [DR001, DR002]
"""
    )
    errors = _errors(path)
    assert len(errors) == 1, errors
    assert "E213 with.catchup_seconds (20s) + with.wait_seconds (20s)" in errors[0]
    assert f"its timeout (30s at {path}:10:14)" in errors[0]


def test_the_default_timeout_never_cuts_a_steps_default_wait(
    write_runbook: Callable[..., str],
) -> None:
    """With no timeout written, aws.rds_failover's default 600 s wait gets 660 s; a short step keeps 300 s."""
    path = write_runbook(
        HEAD
        + """targets:
  aws: {type: aws, region: us-east-1}
steps:
  - {id: failover, type: aws.rds_failover, target: aws, with: {cluster: c1, target_instance: i2}}
  - {id: quick, type: shell, with: {command: "true", mutates: false}}
acknowledge: [DR001, DR002]
"""
    )
    plan = compile_runbook(path)
    assert plan.step("failover").timeout == 660.0
    assert plan.step("quick").timeout == 300.0
