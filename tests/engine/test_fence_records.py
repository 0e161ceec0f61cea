"""What ``ctx.fences()`` tells a step: the fence steps it waits for, as the executor knows them."""

from __future__ import annotations

from collections.abc import Callable

from drctl.compiler.compile import compile_runbook
from drctl.engine.context import fences_before
from drctl.engine.executor import Halt
from drctl.engine.status import StepStatus
from drctl.steps.base import FenceRecord, FenceStatus

RUNBOOK = """
apiVersion: drctl/v1
kind: Runbook
metadata: {name: fences}
acknowledge: [DR002]
steps:
  - {id: fence, type: shell, with: {command: "true", verify: "true", roles: [fence]}}
  - {id: aside, type: shell, requires: [], with: {command: "true", verify: "true", roles: [fence]}}
  - {id: promote, type: shell, requires: [fence], with: {command: "true", verify: "true", roles: [promote]}}
"""


def test_fences_are_those_on_the_path_with_their_state_now(
    write_runbook: Callable[..., str],
) -> None:
    """Only fences the step waits for are listed; a halted one reads in doubt, an ignored one ignored."""
    plan = compile_runbook(write_runbook(RUNBOOK))
    assert fences_before(plan, "promote", {"fence": Halt.IN_DOUBT, "aside": Halt.IN_DOUBT}) == (
        FenceRecord("fence", None, FenceStatus.IN_DOUBT),
    )
    ignored = fences_before(plan, "promote", {"fence": StepStatus.IGNORED})
    assert [f.status for f in ignored] == [FenceStatus.IGNORED]
    assert not ignored[0].status.proven
    assert fences_before(plan, "promote", {})[0].status is FenceStatus.PENDING
    assert fences_before(plan, "promote", {"fence": StepStatus.SUCCEEDED})[0].status.proven
