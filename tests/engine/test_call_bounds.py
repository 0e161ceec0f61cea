"""Which calls into step types may skip the call thread: only those bounded by themselves."""

from __future__ import annotations

from drctl.steps.registry import get_step_type


def test_only_self_bounded_calls_skip_the_call_thread() -> None:
    """A fixed wait and a local command bound their own calls; a polling wait and the default do not."""
    wait, shell, approve = get_step_type("wait"), get_step_type("shell"), get_step_type("approve")

    assert wait.returns_in_time(wait.Inputs.model_validate({"duration": "1s"}))
    assert not wait.returns_in_time(
        wait.Inputs.model_validate({"until": {"type": "shell", "with": {"command": "true"}}})
    )
    assert shell.returns_in_time(shell.Inputs.model_validate({"command": ["/bin/true"]}))
    assert not approve.returns_in_time(approve.Inputs.model_validate({"message": "go?"}))
