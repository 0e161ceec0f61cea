"""The ``drctl`` command and its error edge.

Every DrctlError is rendered here, once, and becomes the process exit code. Command
modules import their heavy dependencies inside the command, so ``drctl --help``
starts as fast as typer itself.
"""

from __future__ import annotations

import os
import sys

import typer

from drctl import __version__
from drctl.cli import (
    approve,
    brake,
    catalog,
    check,
    docs,
    drill,
    execute,
    pr,
    review,
    runs,
    sandbox,
)


def _typer() -> typer.Typer:
    return typer.Typer(
        name="drctl",
        help="Disaster-recovery runbooks: validate, plan, diff, run and resume.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


app = _typer()


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"drctl {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Disaster-recovery runbooks: validate, plan, diff, run and resume."""


review.register(app)
pr.register(app)
execute.register(app)
runs.register(app)
catalog.register(app)
sandbox.register(app)
drill.register(app)
docs.register(app)
brake.register(app)
approve.register(app)
check.register(app)


def app_for(args: list[str]) -> typer.Typer:
    """``app``, or, when ``args`` start with a command's name, the app with that command only.

    typer builds every command (reading and converting each function's signature) before
    it parses anything: about 8 ms for drctl's commands, at every start. The one command
    parses, helps and fails as it does in the whole app (its usage still reads ``drctl
    <command>``); anything else (no command, ``--help``, ``--version``, a typo for the
    suggestion) gets the whole app.
    """
    from typer.main import get_command_name

    if not args:
        return app
    commands = [
        c
        for c in app.registered_commands
        if c.callback is not None and (c.name or get_command_name(c.callback.__name__)) == args[0]
    ]
    groups = [g for g in app.registered_groups if g.name == args[0]]
    if not commands and not groups:
        return app
    one = _typer()
    one.registered_callback = app.registered_callback
    one.registered_commands = commands
    one.registered_groups = groups
    return one


def main() -> None:
    """Console-script entry point: run the app and render drctl's errors at the edge."""
    from drctl.errors import DrctlError

    try:
        app_for(sys.argv[1:])()
    except DrctlError as exc:
        from drctl.cli.output import render_error

        render_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line, keep the traceback for DRCTL_DEBUG
        if os.environ.get("DRCTL_DEBUG"):
            raise
        sys.stderr.write(
            f"drctl: internal error: {type(exc).__name__}: {exc}\n"
            "    hint: this is a bug; rerun with DRCTL_DEBUG=1 for the traceback and report it\n"
        )
        sys.exit(70)


def entry() -> None:
    """The console script: ``main``, then a fast exit.

    Interpreter shutdown (module teardown, garbage collection) costs ~50 ms after the
    journal is closed and nothing is left to do; an operator waiting on a failover
    should not pay it. Tests call ``main`` and keep the normal exit.
    """
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    sys.stderr.flush()
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        sys.stderr.flush()
        code = 1
    os._exit(code or 0)
