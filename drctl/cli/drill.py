"""The ``drctl drill`` command: a non-interactive run with a canary writer and a report."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from drctl.cli.execute import (
    STATE_HELP,
    OutputFormat,
    Terminal,
    _confirm_changed_plan,
    _options,
    _signals,
    _store,
    _store_for_runbook,
)
from drctl.cli.formats import format_option
from drctl.cli.review import PARAM_HELP, PARAMS_FILE_HELP
from drctl.visible import visible

if TYPE_CHECKING:
    from drctl.compiler.plan import Plan
    from drctl.drill.measure import RegressionLimit
    from drctl.drill.report import DrillReport
    from drctl.drill.run import DrillResult
    from drctl.engine.journal import Sink


class CanaryKind(StrEnum):
    postgres = "postgres"
    mongo = "mongo"


class ReportFormat(StrEnum):
    md = "md"
    html = "html"
    json = "json"
    junit = "junit"
    openmetrics = "openmetrics"


def drill(
    file: str | None = typer.Argument(
        None, metavar="FILE", help="The runbook (not with --resume)."
    ),
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    params_file: str | None = typer.Option(None, "--params-file", help=PARAMS_FILE_HELP),
    canary: CanaryKind | None = typer.Option(
        None,
        "--canary",
        help="The canary writer: postgres (the default) or mongo.",
    ),
    canary_dsn: str | None = typer.Option(
        None,
        "--canary-dsn",
        help="Where the canary writes: the DSN or mongodb:// URI the application uses.",
    ),
    canary_dns_server: str | None = typer.Option(
        None,
        "--canary-dns-server",
        help="Resolve the canary DSN's host through this DNS server (host:port), on every "
        "reconnect (postgres canary only).",
    ),
    verify_dsn: str | None = typer.Option(
        None,
        "--verify-dsn",
        help="The new primary, read back after the run (default: the canary DSN, resolved then).",
    ),
    pgbench_clients: int | None = typer.Option(
        None,
        "--pgbench-clients",
        min=1,
        max=1000,
        help="Run a pgbench load of N clients beside the canary, through the canary's DSN "
        "(tables in schema drctl_pgbench; postgres canary only); the report gives its figures.",
    ),
    resume: str | None = typer.Option(
        None,
        "--resume",
        metavar="RUN_ID",
        help="Continue a drill that stopped unfinished, its canary writing again, and measure it whole.",
    ),
    report: str | None = typer.Option(
        None, "--report", help="Write the report here (default: standard output)."
    ),
    fmt: str | None = format_option(
        None,
        "markdown",
        "html",
        "json",
        "junit",
        "openmetrics",
        what="The report's format (default: from --report's suffix, .xml: junit, .prom: openmetrics; else markdown)",
    ),
    max_rto_regression: str | None = typer.Option(
        None,
        "--max-rto-regression",
        metavar="PERCENT",
        help="Also fail when the RTO exceeds the median of the runbook's recent completed "
        "drills by more than this (e.g. 20%).",
    ),
    regression_window: int = typer.Option(
        10,
        "--regression-window",
        min=1,
        max=1000,
        help="How many recent drills --max-rto-regression compares against.",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Approve every gate."),
    approve: list[str] | None = typer.Option(
        None, "--approve", help="Approve one gate by step id (repeatable)."
    ),
    reapply: list[str] | None = typer.Option(
        None,
        "--reapply",
        help="With --resume: re-apply an interrupted step that cannot verify (repeatable).",
    ),
    mark_done: list[str] | None = typer.Option(
        None,
        "--mark-done",
        help="With --resume: record an interrupted step as done after checking by hand (repeatable).",
    ),
    reason: str | None = typer.Option(
        None,
        "--reason",
        help="With --mark-done: why the step is done although its verify does not say so.",
    ),
    allow_changed_plan: bool = typer.Option(
        False,
        "--allow-changed-plan",
        help="With --resume: show how the plan changed and go on if --yes is given.",
    ),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Steps run at once."),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Run a runbook as a drill with a canary writer; report RTO/RPO; exit 0 objectives met, 1 missed."""
    from drctl.compiler.params import ParamInput
    from drctl.drill.canary import CanarySpec
    from drctl.drill.report import build
    from drctl.drill.run import DrillRunner
    from drctl.engine.executor import Interrupts

    _check_flags(file, param, params_file, canary, canary_dsn, canary_dns_server, resume)
    _check_load_flags(pgbench_clients, canary, resume)
    _check_resume_flags(
        resume, verify_dsn,
        {"--reapply": reapply, "--mark-done": mark_done, "--reason": reason,
         "--allow-changed-plan": allow_changed_plan},
    )  # fmt: skip
    kind = ReportFormat("md" if fmt == "markdown" else fmt) if fmt else _format_for(report)
    regression = _regression(max_rto_regression, regression_window)
    # Progress goes to stderr so that a report on stdout stays clean; no prompts.
    terminal = Terminal(OutputFormat.text, yes, approve or [])
    terminal.interactive = False

    def sinks(plan: Plan) -> list[Sink]:
        import os

        from drctl.engine.output import PlainSink

        shown: list[Sink] = [PlainSink(sys.stderr, debug=bool(os.environ.get("DRCTL_DEBUG")))]
        terminal.sinks = list(shown)
        return shown

    interrupts = Interrupts()
    _signals(interrupts)
    options = _options(concurrency, False, yes, approve or [], reapply, mark_done, reason)
    state_flag = ""
    if file is not None and canary_dsn is not None:
        from drctl.drill.load import LoadSpec

        spec = CanarySpec(
            (canary or CanaryKind.postgres).value, canary_dsn, canary_dns_server, verify_dsn
        )
        load = LoadSpec(pgbench_clients, canary_dsn, canary_dns_server) if pgbench_clients else None
        given = ParamInput(tuple(param or ()), params_file)
        store, plan, state_flag = _store_for_runbook(state, file, given)
        runner = DrillRunner(store, sinks, terminal.gate, interrupts)
        result = runner.drill(file, given, options, spec, plan, load, regression=regression)
    else:
        store = _store(state, create=False)
        from drctl.engine.runs import PlanChanged, find_run

        record = find_run(store, resume)
        runner = DrillRunner(store, sinks, terminal.gate, interrupts)

        def resume_with(accept: str | None) -> DrillResult:
            return runner.resume_drill(
                record, options, dsn=canary_dsn, dns_server=canary_dns_server,
                verify_dsn=verify_dsn, accept_plan_hash=accept, regression=regression,
            )  # fmt: skip

        try:
            result = resume_with(None)
        except PlanChanged as changed:
            if not allow_changed_plan:
                raise
            # The diff goes to stderr: stdout may be the report. The canary has not started.
            result = resume_with(_confirm_changed_plan(changed, terminal, sys.stderr))
    built = build(store, result.run_id)
    text = _render(built, kind)
    if report:
        Path(report).write_text(text)
    else:
        sys.stdout.write(text)
    sys.stderr.write(visible(_summary(built, report, state_flag)))
    raise typer.Exit(result.exit_code)


def _check_flags(
    file: str | None,
    param: list[str] | None,
    params_file: str | None,
    canary: CanaryKind | None,
    canary_dsn: str | None,
    canary_dns_server: str | None,
    resume: str | None,
) -> None:
    """Refuse flag combinations that cannot mean anything (exit 2, naming the flags)."""
    from drctl.errors import UsageError

    if canary is CanaryKind.mongo and canary_dns_server:
        raise UsageError(
            "--canary-dns-server works with --canary postgres only",
            hint="the MongoDB driver resolves the URI's hosts itself; give them in --canary-dsn",
        )
    if resume is not None:
        given = [flag for flag, value in (
            ("FILE", file), ("--param", param), ("--params-file", params_file),
            ("--canary", canary),
        ) if value]  # fmt: skip
        if given:
            raise UsageError(
                f"--resume continues a drill as it was started: {', '.join(given)} cannot be given with it",
                hint="the runbook, its parameters and the canary kind come from the run's journal",
            )
    elif file is None:
        raise UsageError("give the runbook FILE, or --resume RUN_ID")
    elif canary_dsn is None:
        raise UsageError("--canary-dsn is required: where the canary writes")
    for flag, value in (("--canary-dsn", canary_dsn), ("--canary-dns-server", canary_dns_server)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} is empty")


def _check_load_flags(clients: int | None, canary: CanaryKind | None, resume: str | None) -> None:
    from drctl.errors import UsageError

    if clients is None:
        return
    if resume is not None:
        raise UsageError(
            "--pgbench-clients cannot be given with --resume",
            hint="the load runs in a drill's first window only; start a new drill to load it",
        )
    if canary is CanaryKind.mongo:
        raise UsageError("--pgbench-clients works with --canary postgres only")


def _check_resume_flags(
    resume: str | None, verify_dsn: str | None, resume_only: dict[str, object]
) -> None:
    from drctl.errors import UsageError

    if resume is None:
        given = [flag for flag, value in resume_only.items() if value]
        if given:
            raise UsageError(f"{', '.join(given)} only mean something with --resume RUN_ID")
    if verify_dsn is not None and not verify_dsn.strip():
        raise UsageError("--verify-dsn is empty")


def _summary(built: DrillReport, report: str | None, state_flag: str) -> str:
    """The last line on stderr: the report's own headline and figures, so the two agree."""
    from drctl.render.drill import load_line, summary

    load = built.drill.load
    m = built.drill.measurement
    discarded = (
        f"; the RPO includes {m.get('discarded_bytes')} discarded bytes of WAL"
        if m.get("discarded_commits")
        else ""
    )
    return (
        summary(built, state_flag)
        + discarded
        + (f"; load: {load_line(load)}" if load else "")
        + (f"; report: {report}" if report else "")
        + "\n"
    )


def _regression(given: str | None, window: int) -> RegressionLimit | None:
    """``--max-rto-regression`` as a limit: ``20%`` or ``20`` (percent), at least 0."""
    from drctl.drill.measure import RegressionLimit
    from drctl.errors import UsageError

    if given is None:
        return None
    text = given.strip().removesuffix("%").strip()
    try:
        percent = float(text)
    except ValueError:
        percent = float("nan")
    if not percent >= 0 or percent == float("inf"):
        raise UsageError(
            f"--max-rto-regression {given!r} is not a percentage",
            hint="give how much slower than the recent drills' median RTO is allowed, e.g. 20%",
        )
    return RegressionLimit(percent / 100, window)


_SUFFIXES = {
    ".html": ReportFormat.html,
    ".htm": ReportFormat.html,
    ".json": ReportFormat.json,
    ".xml": ReportFormat.junit,
    ".prom": ReportFormat.openmetrics,
}


def _format_for(report: str | None) -> ReportFormat:
    suffix = Path(report).suffix.lower() if report else ""
    return _SUFFIXES.get(suffix, ReportFormat.md)


def _render(report: DrillReport, kind: ReportFormat) -> str:
    from drctl.render import drill as render
    from drctl.render.junit import as_junit

    view = {
        ReportFormat.md: render.as_markdown,
        ReportFormat.html: render.as_html,
        ReportFormat.junit: as_junit,
        ReportFormat.openmetrics: render.as_openmetrics,
    }.get(kind, render.as_json)
    return view(report)


def register(app: typer.Typer) -> None:
    app.command()(drill)
