"""The global brake: ``drctl freeze`` and ``drctl thaw``, and ``drctl freezes`` to list them.

A freeze lives in the state store, so it holds on every machine that shares the store: new
mutating runs under a covered lock key refuse to start (exit 3), and running ones halt
before their next mutating step (journaled, resumable once thawed).
"""

from __future__ import annotations

import sys

import typer

from drctl.cli.execute import STATE_HELP, OutputFormat, _store

LOCK_HELP = (
    "Only runs whose lock key starts with this (settings.lock, or the runbook's default key); "
    "default: every run in the store."
)


def _reason(reason: str) -> str:
    from drctl.errors import UsageError

    if not reason.strip():
        raise UsageError("--reason is empty", hint="say why, for whoever finds the brake on")
    return reason.strip()


def freeze(
    reason: str = typer.Option(..., "--reason", help="Why; shown to every run it stops."),
    lock: str = typer.Option("", "--lock", metavar="PREFIX", help=LOCK_HELP),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Stop mutating runs: new ones refuse to start, running ones halt at their next mutating step."""
    import time

    from drctl.engine.runs import who
    from drctl.state.base import Freeze

    me = who()
    store = _store(state)
    held = Freeze(lock, _reason(reason), me.user, me.host, time.time())
    store.freeze(held)
    sys.stdout.write(f"{held.describe()}\nlift it with: drctl thaw{_flag(lock)} --reason '…'\n")


def thaw(
    reason: str = typer.Option(..., "--reason", help="Why it is safe again."),
    lock: str = typer.Option("", "--lock", metavar="PREFIX", help="The freeze's --lock, exactly."),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Lift a freeze; halted runs can then be resumed."""
    from drctl.errors import UsageError

    why = _reason(reason)
    store = _store(state)
    lifted = store.thaw(lock)
    if lifted is None:
        others = ", ".join(repr(f.prefix) for f in store.freezes()) or "none"
        raise UsageError(
            f"no freeze on {lock!r}{' (every run)' if not lock else ''}",
            hint=f"freezes in force, by --lock: {others}",
        )
    sys.stdout.write(f"thawed ({why}); was {lifted.describe()}\n")


def freezes(
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """List the freezes in force."""
    import json

    from drctl.visible import visible

    found = _store(state, read_only=True).freezes()
    if output is OutputFormat.json:
        data = [
            {"lock": f.prefix, "reason": f.reason, "user": f.user, "host": f.host, "at": f.at}
            for f in found
        ]
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    sys.stdout.write(visible("".join(f.describe() + "\n" for f in found) or "no freezes\n"))


def _flag(lock: str) -> str:
    return f" --lock {lock}" if lock else ""


def register(app: typer.Typer) -> None:
    app.command()(freeze)
    app.command()(thaw)
    app.command()(freezes)
