"""The ``shell`` step type."""

from __future__ import annotations

from pydantic import Field

from drctl.runbook.model import Duration
from drctl.runbook.targets import LocalTarget
from drctl.steps.base import StepContext, published
from drctl.steps.command import Command, CommandInputs, CommandStep
from drctl.steps.process import Completed, run_command


class ShellInputs(CommandInputs):
    command: Command = Field(
        description="A shell command line, or an argv list run without a shell."
    )
    grace: Duration = Field(
        default=5.0, description="Seconds between SIGTERM and SIGKILL on timeout."
    )


class Shell(CommandStep[ShellInputs, LocalTarget | None]):
    """Run a local command; exit codes decide success, optional check/verify/undo commands.

    With a string the command runs through ``/bin/sh -c``; with a list it runs as an
    argv without a shell. A timeout kills the whole process group. Output is captured
    up to ``output_limit`` bytes and redacted like every other output.
    """

    name = "shell"
    outputs = published(
        {
            "exit_code": "The command's exit code.",
            "stdout": "What the command wrote (stdout and stderr, redacted).",
        }
    )
    Inputs = ShellInputs
    target_types = frozenset({"local"})

    def returns_in_time(self, inputs: ShellInputs) -> bool:
        # run_command kills the process group at the deadline and bounds every wait
        # after it (grace, SIGKILL, the output reader): a shell call cannot hang.
        return True

    def run(self, ctx: StepContext[ShellInputs, LocalTarget | None], command: Command) -> Completed:
        inputs = ctx.inputs
        return run_command(
            ctx,
            command,
            env=inputs.env,
            cwd=inputs.cwd,
            limit=inputs.output_limit,
            grace=inputs.grace,
        )
