"""``drctl check RUNBOOK``: the dry run as a standing readiness check (cron, a timer, a CronJob)."""

from __future__ import annotations

import sys
from enum import StrEnum

import typer

from drctl.cli.execute import STATE_HELP, _store_for_runbook
from drctl.cli.review import PARAM_HELP, PARAMS_FILE_HELP


class CheckFormat(StrEnum):
    text = "text"
    json = "json"
    prometheus = "prometheus"


def check(
    file: str = typer.Argument(..., metavar="RUNBOOK", help="The runbook."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    params_file: str | None = typer.Option(None, "--params-file", help=PARAMS_FILE_HELP),
    fmt: CheckFormat = typer.Option(
        CheckFormat.text,
        "--format",
        help="text, json, or prometheus (OpenMetrics text for node_exporter's textfile collector).",
    ),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Would the failover work right now? Dry-run every check; exit 0 ready, 1 not ready, 2 invalid."""
    from drctl.compiler.params import ParamInput
    from drctl.drill.report import history
    from drctl.engine.executor import Interrupts, Options
    from drctl.engine.readiness import record
    from drctl.engine.runner import Runner
    from drctl.engine.status import GateVerdict
    from drctl.render import readiness as render

    given = ParamInput(tuple(param or ()), params_file)
    store, plan, _ = _store_for_runbook(state, file, given)
    if plan is None:
        from drctl.compiler.compile import compile_runbook

        plan = compile_runbook(file, given)
    interrupts = Interrupts()
    runner = Runner(store, lambda _plan: [], lambda _step: (GateVerdict.NEEDED, ""), interrupts)
    run_id, _ = runner.start(file, given, Options(dry_run=True), plan=plan)
    run = store.get_run(run_id)
    assert run is not None
    passed = [h.started_at for h in history(store, plan.name) if h.passed]
    result = record(store, run, plan, max(passed, default=None))
    view = {CheckFormat.json: render.as_json, CheckFormat.prometheus: render.as_openmetrics}
    sys.stdout.write(view.get(fmt, render.as_text)(result))
    raise typer.Exit(0 if result.ready else 1)


def register(app: typer.Typer) -> None:
    app.command()(check)
