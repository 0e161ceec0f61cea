"""``ssh.run``: the ``shell`` step, on a host reached over SSH."""

from __future__ import annotations

from pydantic import Field

from drctl.errors import StepError
from drctl.providers.ssh.session import (
    connect,
    describe_endpoint,
    import_client,
    parse_target,
    run_remote,
)
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepContext, StepInputs, StepType, short
from drctl.steps.process import Completed, last_line

Command = str | list[str]


class SshRunInputs(StepInputs):
    command: Command = Field(
        description="A command line for the remote /bin/sh -c, or an argv list (quoted word by word)."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment for the command; values may be secret references (sent over the channel, never on a command line).",
    )
    cwd: str | None = Field(default=None, description="Remote working directory.")
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
        default=5.0,
        description="Seconds between TERM and KILL to the remote process group on timeout.",
    )


class SshRun(StepType):
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
    Inputs = SshRunInputs
    roles = frozenset({Role.MUTATING})
    target_types = frozenset({"ssh"})
    target_required = True

    def warm_up(self) -> None:
        import_client()

    def step_roles(self, inputs: StepInputs) -> frozenset[Role]:
        assert isinstance(inputs, SshRunInputs)
        roles = set(inputs.roles)
        if inputs.mutates:
            roles.add(Role.MUTATING)
        return frozenset(roles)

    def verifies(self, inputs: StepInputs) -> bool:
        assert isinstance(inputs, SshRunInputs)
        return inputs.verify is not None

    def undoable(self, inputs: StepInputs) -> bool:
        assert isinstance(inputs, SshRunInputs)
        return inputs.undo is not None

    def describe(self, inputs: StepInputs, target: str | None) -> str:
        assert isinstance(inputs, SshRunInputs)
        cmd = inputs.command if isinstance(inputs.command, str) else " ".join(inputs.command)
        return f"run `{short(cmd)}` on {target}"

    @staticmethod
    def _run(ctx: StepContext, command: Command) -> Completed:
        inputs = ctx.inputs
        assert isinstance(inputs, SshRunInputs)
        return run_remote(
            ctx,
            ctx.target,
            command,
            env=inputs.env,
            cwd=inputs.cwd,
            limit=inputs.output_limit,
            grace=inputs.grace,
        )

    def check(self, ctx: StepContext) -> str | None:
        inputs = ctx.inputs
        assert isinstance(inputs, SshRunInputs)
        if inputs.check is not None:
            done = self._run(ctx, inputs.check)
            if done.exit_code != 0:
                raise StepError(f"check command exited {done.exit_code}: {last_line(done.output)}")
        else:
            # Nothing to run read-only: prove the host answers, is the known one, and lets us in.
            with connect(ctx.target, ctx):
                pass
        cmd = inputs.command if isinstance(inputs.command, str) else " ".join(inputs.command)
        passed = "host key, login and check command" if inputs.check else "host key and login"
        return f"run `{short(cmd)}` on {describe_endpoint(parse_target(ctx.target))} ({passed} ok)"

    def apply(self, ctx: StepContext) -> None:
        inputs = ctx.inputs
        assert isinstance(inputs, SshRunInputs)
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
        assert isinstance(inputs, SshRunInputs)
        if inputs.verify is None:
            return True
        return self._run(ctx, inputs.verify).exit_code == 0

    def undo(self, ctx: StepContext) -> None:
        inputs = ctx.inputs
        assert isinstance(inputs, SshRunInputs)
        if inputs.undo is None:
            raise StepError("no undo command")
        done = self._run(ctx, inputs.undo)
        if done.exit_code != 0:
            raise StepError(f"undo command exited {done.exit_code}: {last_line(done.output)}")
