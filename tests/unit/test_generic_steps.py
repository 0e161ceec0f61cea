"""Generic step types exercised directly through drctl.testing.FakeContext."""

from __future__ import annotations

from pathlib import Path

import pytest

from drctl.errors import StepError, StepTimeout
from drctl.steps.assertion import Assert, AssertInputs
from drctl.steps.shell import Shell, ShellInputs
from drctl.steps.wait import Wait, WaitInputs
from drctl.testing import FakeContext


def test_shell_apply_captures_output_and_checks_exit_codes(tmp_path: Path) -> None:
    """Output is captured and capped; an unexpected exit code fails with the last line."""
    inputs = ShellInputs(command="echo one; echo two; exit 3", expect_exit=[0])
    c = FakeContext(inputs)
    with pytest.raises(StepError, match="exited 3 \\(expected 0\\): two"):
        Shell().apply(c)  # type: ignore[arg-type]
    assert c.lines == ["one", "two"]
    big = FakeContext(ShellInputs(command="head -c 5000 /dev/zero | tr '\\0' x", output_limit=1024))
    Shell().apply(big)  # type: ignore[arg-type]
    assert big.outputs["stdout"] == "x" * 1024


def test_shell_argv_runs_without_a_shell(tmp_path: Path) -> None:
    """A list command is an argv: shell syntax in it is literal."""
    c = FakeContext(ShellInputs(command=["echo", "$HOME;", "x"]))
    Shell().apply(c)  # type: ignore[arg-type]
    assert c.outputs["stdout"] == "$HOME; x\n"


def test_shell_verify_and_undo(tmp_path: Path) -> None:
    """verify is the exit status of its command; undo runs its command."""
    marker = tmp_path / "m"
    inputs = ShellInputs(command=f"touch {marker}", verify=f"test -f {marker}", undo=f"rm {marker}")
    c = FakeContext(inputs)
    assert Shell().verify(c) is False  # type: ignore[arg-type]
    Shell().apply(c)  # type: ignore[arg-type]
    assert Shell().verify(c) is True  # type: ignore[arg-type]
    Shell().undo(c)  # type: ignore[arg-type]
    assert not marker.exists()


def test_shell_timeout_uses_the_remaining_time() -> None:
    """A command longer than the time left is killed and raises StepTimeout."""
    c = FakeContext(ShellInputs(command="sleep 60", grace=0.2), timeout=0.3)
    import time

    started = time.monotonic()
    # FakeContext's clock does not move by itself; give it a real deadline instead.
    c.remaining = lambda: max(0.0, 0.3 - (time.monotonic() - started))  # type: ignore[method-assign]
    with pytest.raises(StepTimeout):
        Shell().apply(c)  # type: ignore[arg-type]
    # Killed at its 0.3 s, not after the command's 60 s (room for a loaded machine).
    assert time.monotonic() - started < 20


def test_wait_duration_sleeps_on_the_context_clock() -> None:
    """wait: duration sleeps through the context (a fake clock here)."""
    c = FakeContext(WaitInputs(duration=30))
    Wait().apply(c)  # type: ignore[arg-type]
    assert c.slept == [30.0]


def test_wait_until_gives_up_at_the_deadline(tmp_path: Path) -> None:
    """wait: until polls every interval and fails after the deadline."""
    inputs = WaitInputs.model_validate(
        {
            "until": {
                "type": "shell",
                "with": {"command": "true", "verify": f"test -f {tmp_path}/x"},
            },
            "interval": 1,
            "deadline": 3,
        }
    )
    c = FakeContext(inputs)
    with pytest.raises(StepTimeout, match="gave up after 4 polls"):
        Wait().apply(c)  # type: ignore[arg-type]
    assert c.slept == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("value", "ok"),
    [(True, True), ("true", True), (False, False), ("False", False), (0, False), ("", False)],
)
def test_assert_truthiness(value: object, ok: bool) -> None:
    """assert passes on true values and fails with its message otherwise."""
    c = FakeContext(AssertInputs(that=value, message="lag too high"))
    if ok:
        Assert().apply(c)  # type: ignore[arg-type]
    else:
        with pytest.raises(StepError, match="lag too high"):
            Assert().apply(c)  # type: ignore[arg-type]
