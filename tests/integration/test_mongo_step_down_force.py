"""mongo.step_down's ``force``: over the wire to mockupdb's replica set, and held to consent at compile time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from drctl.compiler.compile import compile_runbook
from drctl.errors import RunbookInvalid
from drctl.providers.mongo.step_down import StepDown, StepDownInputs
from tests.integration.mongo_fixtures import (
    MockReplicaSet,
    RealContext,
    mock_rs,  # noqa: F401
    mockup_servers,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_forced_step_down_goes_through_with_no_secondary_caught_up(mock_rs: MockReplicaSet) -> None:  # noqa: F811
    """With every secondary behind, a plain step-down is refused but force: true sends force and the primary steps down."""
    a, b, c = mock_rs.hosts
    mock_rs.set_lag(b, 60)
    mock_rs.set_lag(c, 60)
    inputs = StepDownInputs(
        catch_up_seconds=1, step_down_seconds=30, force=True, accept_data_loss=True
    )
    ctx = RealContext(inputs, target=mock_rs.target(None), timeout=20.0)
    assert "step down" in (StepDown().check(ctx) or "")
    StepDown().apply(ctx)
    [(host, doc)] = mock_rs.sent("replSetStepDown")
    assert host == a
    assert {k: doc[k] for k in ("replSetStepDown", "secondaryCatchUpPeriodSecs", "force")} == {
        "replSetStepDown": 30, "secondaryCatchUpPeriodSecs": 1, "force": True,
    }  # fmt: skip
    assert StepDown().verify(ctx)
    assert any("forced" in line for line in ctx.lines)


def test_force_needs_accept_data_loss_and_is_linted_dr002(
    write_runbook: Callable[..., str],
) -> None:
    """force without accept_data_loss is refused; with it the step trips DR002 until acknowledged."""
    with pytest.raises(ValidationError, match="needs accept_data_loss: true"):
        StepDownInputs(force=True)
    text = """
        apiVersion: drctl/v1
        kind: Runbook
        metadata: {name: forced}
        targets: {rs: {type: mongo, uri: "mongodb://a:27017/?replicaSet=rs0"}}
        steps:
          - {id: down, type: mongo.step_down, target: rs, with: {force: true, accept_data_loss: true}%s}
    """
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(write_runbook(text % ""))
    assert [d.code for d in info.value.diagnostics] == ["DR002"]
    plan: Any = compile_runbook(write_runbook(text % ", acknowledge: [DR002]"))
    assert "force" in plan.steps[0].description
