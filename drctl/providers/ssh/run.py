"""``ssh.run``: the ``shell`` step, on a host reached over SSH."""

from __future__ import annotations

from pydantic import Field

from drctl.providers.ssh.session import (
    connect,
    describe_endpoint,
    import_client,
    run_remote,
)
from drctl.runbook.model import Duration
from drctl.runbook.targets import SshTarget
from drctl.steps.base import StepContext, published, short
from drctl.steps.command import Command, CommandInputs, CommandStep, command_text
from drctl.steps.process import Completed


class SshRunInputs(CommandInputs):
    command: Command = Field(
        description="A command line for the remote /bin/sh -c, or an argv list (quoted word by word)."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment for the command; values may be secret references (sent over the channel, never on a command line).",
    )
    cwd: str | None = Field(default=None, description="Remote working directory.")
    grace: Duration = Field(
        default=5.0,
        description="Seconds between TERM and KILL to the remote process group on timeout.",
    )


Ctx = StepContext[SshRunInputs, SshTarget]


class SshRun(CommandStep[SshRunInputs, SshTarget]):
    """Run a command on an SSH host; exit codes decide success, optional check/verify/undo commands.

    The host key must already be in the target's ``known_hosts`` (``[host]:port`` for a
    port other than 22): an unknown or changed key fails the step before anything runs,
    and nothing is ever added to the file. Only the target's own credentials are offered
    (``key_file`` with ``key_passphrase``, the agent with ``agent: true``, ``password``).
    Connecting is bounded by the target's ``connect_timeout``, the command by the step's
    ``timeout``: past it the remote process group gets TERM, then KILL after ``grace``
    seconds, and so does it if drctl's connection drops. stdout and stderr are merged,
    streamed to the log, captured up to ``output_limit`` bytes and redacted like every
    other output; ``env`` values travel over the channel, never on a command line.
    A dry run connects (proving reachability, host key and login) and runs ``check``.
    Publishes ``exit_code`` and ``stdout``.
    """

    name = "ssh.run"
    outputs = published(
        {
            "exit_code": "The remote command's exit code.",
            "stdout": "What the command wrote (stdout and stderr, redacted).",
        }
    )
    Inputs = SshRunInputs
    target_types = frozenset({"ssh"})
    target_required = True

    def warm_up(self) -> None:
        import_client()

    def describe(self, inputs: SshRunInputs, target: str | None) -> str:
        return f"run `{short(command_text(inputs.command))}` on {target}"

    def run(self, ctx: Ctx, command: Command) -> Completed:
        inputs = ctx.inputs
        return run_remote(
            ctx, ctx.target, command, env=inputs.env, cwd=inputs.cwd,
            limit=inputs.output_limit, grace=inputs.grace,
        )  # fmt: skip

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        if inputs.check is not None:
            super().check(ctx)
        else:
            # Nothing to run read-only: prove the host answers, is the known one, and lets us in.
            with connect(ctx.target, ctx):
                pass
        passed = "host key, login and check command" if inputs.check else "host key and login"
        where = describe_endpoint(ctx.target)
        return f"run `{short(command_text(inputs.command))}` on {where} ({passed} ok)"
