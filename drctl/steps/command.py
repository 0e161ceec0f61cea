"""What the ``shell`` and ``ssh.run`` steps share: a command, judged by its exit code,
with optional check, verify and undo commands. Only where the command runs differs."""

from __future__ import annotations

from abc import abstractmethod
from typing import Generic, TypeVar

from pydantic import Field

from drctl.errors import StepError
from drctl.runbook.model import Duration, no_items
from drctl.runbook.targets import TargetModel
from drctl.steps.base import Role, StepContext, StepInputs, StepType, short
from drctl.steps.process import Completed, last_line

Command = str | list[str]


class CommandInputs(StepInputs):
    command: Command = Field(description="A command line for /bin/sh -c, or an argv list.")
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
        default_factory=no_items,
        description="Extra roles for the safety lints, e.g. [fence] for a fencing script.",
    )
    output_limit: int = Field(
        default=65536, ge=1024, le=16 * 1024 * 1024, description="Bytes of output kept."
    )
    grace: Duration = Field(default=5.0, description="Seconds between TERM and KILL on timeout.")


def command_text(command: Command) -> str:
    return command if isinstance(command, str) else " ".join(command)


CI = TypeVar("CI", bound=CommandInputs)
CT = TypeVar("CT", bound=TargetModel | None)


class CommandStep(StepType[CI, CT], Generic[CI, CT]):
    """Base of command-running step types; subclasses say where the command runs."""

    roles = frozenset({Role.MUTATING})

    @abstractmethod
    def run(self, ctx: StepContext[CI, CT], command: Command) -> Completed:
        """Run ``command`` with the step's env, cwd, output limit and grace."""

    def step_roles(self, inputs: CI) -> frozenset[Role]:
        roles = set(inputs.roles)
        if inputs.mutates:
            roles.add(Role.MUTATING)
        # A verify command proves this step's own effect (``verifies``); the VERIFY role
        # is for steps that check the world after others, declared with roles: [verify].
        return frozenset(roles)

    def verifies(self, inputs: CI) -> bool:
        return inputs.verify is not None

    def undoable(self, inputs: CI) -> bool:
        return inputs.undo is not None

    def describe(self, inputs: CI, target: str | None) -> str:
        where = f" on {target}" if target else ""
        return f"run `{short(command_text(inputs.command))}`{where}"

    def check(self, ctx: StepContext[CI, CT]) -> str | None:
        inputs = ctx.inputs
        if inputs.check is not None:
            done = self.run(ctx, inputs.check)
            if done.exit_code != 0:
                raise StepError(f"check command exited {done.exit_code}: {last_line(done.output)}")
        return None

    def apply(self, ctx: StepContext[CI, CT]) -> None:
        inputs = ctx.inputs
        done = self.run(ctx, inputs.command)
        ctx.output("exit_code", done.exit_code)
        ctx.output("stdout", done.output)
        if done.exit_code not in inputs.expect_exit:
            expected = ", ".join(str(c) for c in inputs.expect_exit)
            raise StepError(
                f"command exited {done.exit_code} (expected {expected}): {last_line(done.output)}"
            )

    def verify(self, ctx: StepContext[CI, CT]) -> bool:
        inputs = ctx.inputs
        if inputs.verify is None:
            return True
        return self.run(ctx, inputs.verify).exit_code == 0

    def undo(self, ctx: StepContext[CI, CT]) -> None:
        inputs = ctx.inputs
        if inputs.undo is None:
            raise StepError("no undo command")
        done = self.run(ctx, inputs.undo)
        if done.exit_code != 0:
            raise StepError(f"undo command exited {done.exit_code}: {last_line(done.output)}")
