"""Commands that read the state store: status, runs, log; and unlock."""

from __future__ import annotations

import sys

import typer

from drctl.cli.execute import STATE_HELP, OutputFormat, _store
from drctl.cli.formats import chosen, format_option, legacy_output_option


def status(
    run_id: str | None = typer.Argument(
        None, metavar="RUN_ID", help="A run (default: the most recent)."
    ),
    fmt: str | None = format_option(None, "text", "json"),
    legacy: str | None = legacy_output_option("text", "json"),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Where a run stands: each step's state, attempts and errors, and who holds the lock."""
    from drctl.engine.replay import replay
    from drctl.engine.runs import find_run
    from drctl.render import runs as render

    output = OutputFormat(chosen(fmt, legacy, "text"))
    store = _store(state, read_only=True)
    run = find_run(store, run_id, last=run_id is None)
    run_state = replay(store.events(run.id))
    order = [s.id for s in run.plan().steps]
    from drctl.engine.lock import lock_keys

    lock = store.lock_info(lock_keys(run.lock_key)[0])
    view = render.status_json if output is OutputFormat.json else render.status_text
    sys.stdout.write(view(run, run_state, order, lock))


def runs(
    limit: int = typer.Option(20, "--limit", min=1, max=10000, help="How many, newest first."),
    fmt: str | None = format_option(None, "text", "json"),
    legacy: str | None = legacy_output_option("text", "json"),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
    drills: bool = typer.Option(
        False, "--drills", help="Only drills, with their result, RTO and missing writes."
    ),
) -> None:
    """List runs, newest first."""
    from drctl.render import runs as render

    output = OutputFormat(chosen(fmt, legacy, "text"))
    if drills:
        from drctl.drill.report import drills as find_drills
        from drctl.render import drill as drill_render

        rows = find_drills(_store(state, read_only=True), limit=limit)
        view = (
            drill_render.drills_json if output is OutputFormat.json else drill_render.drills_table
        )
        sys.stdout.write(view(rows))
        return
    found = _store(state, read_only=True).list_runs(limit=limit)
    sys.stdout.write(
        render.runs_json(found) if output is OutputFormat.json else render.runs_table(found)
    )


def log(
    run_id: str | None = typer.Argument(
        None, metavar="RUN_ID", help="The run (an id prefix is enough)."
    ),
    last: bool = typer.Option(False, "--last", help="The most recent run."),
    fmt: str | None = format_option(None, "text", "json", what="Output (json: one event per line)"),
    legacy: str | None = legacy_output_option("text", "json"),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Print a run's journal: every event, in order, with its fencing token."""
    from drctl.engine.runs import find_run
    from drctl.errors import UsageError
    from drctl.render import runs as render

    if run_id is None and not last:
        raise UsageError("give a RUN_ID or --last")
    if run_id is not None and last:
        raise UsageError("give a RUN_ID or --last, not both")
    output = OutputFormat(chosen(fmt, legacy, "text"))
    store = _store(state, read_only=True)
    run = find_run(store, run_id, last=last)
    events = store.events(run.id)
    sys.stdout.write(
        render.log_json(events) if output is OutputFormat.json else render.log_text(events)
    )


def unlock(
    key: str = typer.Argument(
        ..., metavar="KEY", help="The lock key (settings.lock, or the runbook name)."
    ),
    lease: str = typer.Option(
        ..., "--lease", help="The holder's lease id, as the lock-held message shows it."
    ),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the holder's journal)."),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Force-release a lock whose holder is gone; audited in the holder's journal."""
    from drctl.engine.runs import unlock as do_unlock

    holder = do_unlock(key, lease, reason, _store(state, create=False))
    sys.stdout.write(f"lock {key} released (was {holder})\n")


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(runs)
    app.command()(log)
    app.command()(unlock)
