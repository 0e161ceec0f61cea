"""The ``shell`` step type."""

from __future__ import annotations

from pydantic import Field

from drctl.errors import StepError
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepContext, StepInputs, StepType, short
from drctl.steps.process import Completed, last_line, run_command

Command = str | list[str]


class ShellInputs(StepInputs):
    command: Command = Field(
        description="A shell command line, or an argv list run without a shell."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment; values may be secret references."
    )
    cwd: str | None = Field(default=None, description="Working directory.")
    expect_exit: list[int] = Field(default=[0], description="Exit codes that mean success.")
    check: Command | None = Field(
        default=None, description="Read-only preflight command; exit 0 means ready."
    )
    verify: Command | None = Field(
        default=None, description="Postcondition command; exit 0 means the effect is in place."
    )
    undo: Command | None = Field(default=None, description="Command that reverses the step.")
    mutates: bool = Field(default=True, description="Whether the command changes anything.")
    roles: list[Role] = Field(
        default_factory=list,
        description="Extra roles for the safety lints, e.g. [fence] for a fencing script.",
    )
    output_limit: int = Field(
        default=65536, ge=1024, le=16 * 1024 * 1024, description="Bytes of output kept."
    )
    grace: Duration = Field(
        default=5.0, description="Seconds between SIGTERM and SIGKILL on timeout."
    )


class Shell(StepType):
    """Run a local command; exit codes decide success, optional check/verify/undo commands.

    With a string the command runs through ``/bin/sh -c``; with a list it runs as an
    argv without a shell. A timeout kills the whole process group. Output is captured
    up to ``output_limit`` bytes and redacted like every other output.
    """

    name = "shell"
    Inputs = ShellInputs
    roles = frozenset({Role.MUTATING})
    target_types = frozenset({"local"})

    def step_roles(self, inputs: StepInputs) -> frozenset[Role]:
        assert isinstance(inputs, ShellInputs)
        roles = set(inputs.roles)
        if inputs.mutates:
            roles.add(Role.MUTATING)
        # A verify command proves this step's own effect (``verifies``); the VERIFY role
        # is for steps that check the world after others, declared with roles: [verify].
        return frozenset(roles)

    def verifies(self, inputs: StepInputs) -> bool:
        assert isinstance(inputs, ShellInputs)
        return inputs.verify is not None

    def describe(self, inputs: StepInputs, target: str | None) -> str:
        assert isinstance(inputs, ShellInputs)
        cmd = inputs.command if isinstance(inputs.command, str) else " ".join(inputs.command)
        return f"run `{short(cmd)}`"

    def undoable(self, inputs: StepInputs) -> bool:
        assert isinstance(inputs, ShellInputs)
        return inputs.undo is not None

    @staticmethod
    def _run(ctx: StepContext, command: Command) -> Completed:
        inputs = ctx.inputs
        assert isinstance(inputs, ShellInputs)
        return run_command(
            ctx,
            command,
            env=inputs.env,
            cwd=inputs.cwd,
            limit=inputs.output_limit,
            grace=inputs.grace,
        )

    def check(self, ctx: StepContext) -> str | None:
        inputs = ctx.inputs
        assert isinstance(inputs, ShellInputs)
        if inputs.check is not None:
            done = self._run(ctx, inputs.check)
            if done.exit_code != 0:
                raise StepError(f"check command exited {done.exit_code}: {last_line(done.output)}")
        return None

    def apply(self, ctx: StepContext) -> None:
        inputs = ctx.inputs
        assert isinstance(inputs, ShellInputs)
        done = self._run(ctx, inputs.command)
        ctx.output("exit_code", done.exit_code)
        ctx.output("stdout", done.output)
        if done.exit_code not in inputs.expect_exit:
            expected = ", ".join(str(c) for c in inputs.expect_exit)
            raise StepError(
                f"command exited {done.exit_code} (expected {expected}): {last_line(done.output)}"
            )

    def verify(self, ctx: StepContext) -> bool:
        inputs = ctx.inputs
        assert isinstance(inputs, ShellInputs)
        if inputs.verify is None:
            return True
        return self._run(ctx, inputs.verify).exit_code == 0

    def undo(self, ctx: StepContext) -> None:
        inputs = ctx.inputs
        assert isinstance(inputs, ShellInputs)
        if inputs.undo is None:
            raise StepError("no undo command")
        done = self._run(ctx, inputs.undo)
        if done.exit_code != 0:
            raise StepError(f"undo command exited {done.exit_code}: {last_line(done.output)}")
