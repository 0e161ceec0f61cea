"""``drctl approve RUN_ID STEP``: open a gate from another terminal or machine.

The approval goes into the run's journal through the shared state store, naming exactly
the plan hash and the gate as the run showed it; the run counts it when it reaches (or is
resumed at) that gate.
"""

from __future__ import annotations

import sys

import typer

from drctl.cli.execute import STATE_HELP, _store
from drctl.visible import visible


def approve(
    run_id: str = typer.Argument(..., metavar="RUN_ID", help="The run waiting at the gate."),
    step: str = typer.Argument(..., metavar="STEP", help="The gate's step id."),
    comment: str = typer.Option("", "--comment", help="Why, or what was checked (journaled)."),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Approve a gate of a waiting run, as yourself; journaled with who, where and when."""
    import time

    from drctl.engine.approvals import approve as give
    from drctl.engine.approvals import identity
    from drctl.engine.runs import find_run

    store = _store(state)
    run = find_run(store, run_id)
    me = identity(run.plan().settings)
    given = give(store, run, step, me, comment.strip(), time.time())
    out = [
        f"approved {given.step} of run {run.id} as {me.name} ({me.source}) on {me.host}",
        f"  gate: {given.description}",
        f"  plan: {given.plan_hash}",
        f"  {given.tally.words()}",
        f"  continue with: drctl resume {run.id}"
        if given.tally.enough
        else "  the gate needs more approvals before the run can go on",
    ]
    sys.stdout.write(visible("\n".join(out) + "\n"))


def register(app: typer.Typer) -> None:
    app.command()(approve)
