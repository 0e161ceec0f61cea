"""The ``drctl`` command and its error edge.

Every DrctlError is rendered here, once, and becomes the process exit code. Command
modules import their heavy dependencies inside the command, so ``drctl --help``
starts as fast as typer itself.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys

import typer

from drctl import __version__

#: The modules under drctl.cli that register commands, in the order help lists them,
#: with the commands (and groups) each registers: ``drctl run`` imports ``execute``
#: alone, not the other ten. A test holds this to what the modules register.
COMMAND_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("review", ("validate", "plan", "diff")),
    ("pr", ("review",)),
    ("execute", ("run", "resume", "abort")),
    ("runs", ("status", "runs", "log", "unlock")),
    ("catalog", ("schema", "steps")),
    ("sandbox", ("sandbox",)),
    ("drill", ("drill",)),
    ("docs", ("docs",)),
    ("brake", ("freeze", "thaw", "freezes")),
    ("approve", ("approve",)),
    ("check", ("check",)),
)


def _typer() -> typer.Typer:
    return typer.Typer(
        name="drctl",
        help="Disaster-recovery runbooks: validate, plan, diff, run and resume.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


_root_app = _typer()


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"drctl {__version__}\n")
        raise typer.Exit(0)


@_root_app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Disaster-recovery runbooks: validate, plan, diff, run and resume."""


def _register(module: str, app: typer.Typer) -> None:
    importlib.import_module(f"drctl.cli.{module}").register(app)


@functools.cache
def whole_app() -> typer.Typer:
    """The app with every command (imported and registered on first use)."""
    for module, _ in COMMAND_MODULES:
        _register(module, _root_app)
    return _root_app


def __getattr__(name: str) -> typer.Typer:
    # ``app``, the whole app, for those who import it (tests, tools); ``main`` does not.
    if name == "app":
        return whole_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def app_for(args: list[str]) -> typer.Typer:
    """The whole app, or, when ``args`` start with a command's name, the app with that command only.

    typer builds every command (reading and converting each function's signature) before
    it parses anything: about 8 ms for drctl's commands, at every start; and each command
    module imports its own helpers. The one command, from its module alone, parses,
    helps and fails as it does in the whole app (its usage still reads ``drctl
    <command>``); anything else (no command, ``--help``, ``--version``, a typo for the
    suggestion) gets the whole app.
    """
    from typer.main import get_command_name

    module = next((m for m, names in COMMAND_MODULES if args and args[0] in names), None)
    if module is None:
        return whole_app()
    registered = _typer()
    _register(module, registered)
    one = _typer()
    one.registered_callback = _root_app.registered_callback
    one.registered_commands = [
        c
        for c in registered.registered_commands
        if c.callback is not None and (c.name or get_command_name(c.callback.__name__)) == args[0]
    ]
    one.registered_groups = [g for g in registered.registered_groups if g.name == args[0]]
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
