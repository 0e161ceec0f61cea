"""The ``drctl drill`` command: a non-interactive run with a canary writer and a report."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from drctl.cli.execute import STATE_HELP, OutputFormat, Terminal, _options, _signals, _store
from drctl.cli.review import PARAM_HELP, PARAMS_FILE_HELP

if TYPE_CHECKING:
    from drctl.compiler.plan import Plan
    from drctl.drill.report import DrillReport
    from drctl.engine.journal import Sink


class CanaryKind(StrEnum):
    postgres = "postgres"
    mongo = "mongo"


class ReportFormat(StrEnum):
    md = "md"
    html = "html"
    json = "json"


def drill(
    file: str = typer.Argument(..., help="The runbook."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    params_file: str | None = typer.Option(None, "--params-file", help=PARAMS_FILE_HELP),
    canary: CanaryKind = typer.Option(
        CanaryKind.postgres,
        "--canary",
        help="The canary writer (postgres; mongo is not built yet).",
    ),
    canary_dsn: str = typer.Option(
        ..., "--canary-dsn", help="Where the canary writes: the DSN the application uses."
    ),
    canary_dns_server: str | None = typer.Option(
        None,
        "--canary-dns-server",
        help="Resolve the canary DSN's host through this DNS server (host:port), on every reconnect.",
    ),
    verify_dsn: str | None = typer.Option(
        None,
        "--verify-dsn",
        help="The new primary, read back after the run (default: the canary DSN, resolved then).",
    ),
    report: str | None = typer.Option(
        None, "--report", help="Write the report here (default: standard output)."
    ),
    fmt: ReportFormat | None = typer.Option(
        None, "--format", help="md, html or json (default: from --report's suffix, else md)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Approve every gate."),
    approve: list[str] | None = typer.Option(
        None, "--approve", help="Approve one gate by step id (repeatable)."
    ),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Steps run at once."),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Run a runbook as a drill with a canary writer; report RTO/RPO; exit 0 objectives met, 1 missed."""
    from drctl.compiler.params import ParamInput
    from drctl.drill.report import build
    from drctl.drill.run import CanarySpec
    from drctl.drill.run import drill as do_drill
    from drctl.engine.executor import Interrupts
    from drctl.errors import UsageError

    if canary is CanaryKind.mongo:
        raise UsageError("--canary mongo is not available yet; use --canary postgres")
    kind = fmt or _format_for(report)
    # Progress goes to stderr so that a report on stdout stays clean; no prompts.
    terminal = Terminal(OutputFormat.text, yes, approve or [])
    terminal.interactive = False

    def sinks(plan: Plan) -> list[Sink]:
        from drctl.engine.output import PlainSink

        shown: list[Sink] = [PlainSink(sys.stderr)]
        terminal.sinks = list(shown)
        return shown

    interrupts = Interrupts()
    _signals(interrupts)
    store = _store(state)
    options = _options(concurrency, False, yes, approve or [])
    result = do_drill(
        file, ParamInput(tuple(param or ()), params_file), options, store, sinks,
        terminal.gate, interrupts,
        CanarySpec(canary_dsn, canary_dns_server, verify_dsn),
    )  # fmt: skip
    text = _render(build(store, result.run_id), kind)
    if report:
        Path(report).write_text(text)
    else:
        sys.stdout.write(text)
    m, v = result.measurement, result.verdict
    verdict = "objectives met" if v.passed else "objectives MISSED"
    if result.outcome.exit_code:
        verdict = f"run {result.outcome.status} (exit {result.outcome.exit_code})"
    sys.stderr.write(
        f"drill {result.run_id}: {verdict}: RPO {m.missing} of {m.acknowledged} acknowledged "
        f"writes missing; RTO {m.rto:.2f}s (longest gap {m.longest_gap:.2f}s)"
        + (f"; report: {report}" if report else "")
        + "\n"
    )
    raise typer.Exit(result.exit_code)


def _format_for(report: str | None) -> ReportFormat:
    suffix = Path(report).suffix.lower() if report else ""
    return {".html": ReportFormat.html, ".htm": ReportFormat.html, ".json": ReportFormat.json}.get(
        suffix, ReportFormat.md
    )


def _render(report: DrillReport, kind: ReportFormat) -> str:
    from drctl.render import drill as render

    view = {ReportFormat.md: render.as_markdown, ReportFormat.html: render.as_html}.get(
        kind, render.as_json
    )
    return view(report)


def register(app: typer.Typer) -> None:
    app.command()(drill)
