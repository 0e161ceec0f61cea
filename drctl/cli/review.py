"""The offline review commands: validate, plan, diff. No credentials, no network."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import typer

from drctl.cli.formats import format_option

if TYPE_CHECKING:
    from drctl.compiler.params import ParamInput
    from drctl.compiler.plan import Plan


class ValidateFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"


class DocFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


PARAM_HELP = "Set a runbook parameter (repeatable): -p NAME=VALUE."
PARAMS_FILE_HELP = "YAML or JSON file of parameter values; -p flags override it."


def _params(values: list[str] | None, params_file: str | None) -> ParamInput:
    from drctl.compiler.params import ParamInput

    return ParamInput(tuple(values or ()), params_file)


def _compile(path: str, params: ParamInput) -> Plan:
    from drctl.compiler.compile import compile_runbook

    return compile_runbook(path, params)


def validate(
    files: list[str] = typer.Argument(..., help="Runbook files to check.", metavar="FILE"),
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    params_file: str | None = typer.Option(None, "--params-file", help=PARAMS_FILE_HELP),
    fmt: str = format_option("text", "text", "json", "github"),
) -> None:
    """Check runbooks offline; print every error as path:line:col; exit 0 or 2.

    Required params that are not given get stand-ins, so a runbook can be validated
    without knowing the values it will be run with.
    """
    import sys

    from drctl.compiler.compile import compile_runbook
    from drctl.diagnostics import Diagnostic
    from drctl.errors import RunbookInvalid
    from drctl.render import diagnostics as render

    given = _params(param, params_file)
    diags: list[Diagnostic] = []
    ok_lines = []
    for path in files:
        try:
            plan = compile_runbook(path, given, placeholders=True)
            diags.extend(plan.warnings)
            ok_lines.append(f"{path}: ok ({len(plan.steps)} steps, {_hash_words(plan)})\n")
        except RunbookInvalid as exc:
            diags.extend(exc.diagnostics)
    if ValidateFormat(fmt) is ValidateFormat.json:
        sys.stdout.write(render.as_json(diags, files))
    elif ValidateFormat(fmt) is ValidateFormat.github:
        sys.stdout.write(render.as_github(diags))
    else:
        sys.stdout.write(render.as_text(diags))
        sys.stdout.write("".join(ok_lines))
        if diags:
            errors = sum(1 for d in diags if d.severity.value == "error")
            warned = len(diags) - errors
            bad_files = len(
                {d.source for d in diags if d.source in files and d.severity.value == "error"}
            )
            if errors:
                sys.stdout.write(
                    f"{_count(errors, 'error')} in {bad_files} of {_count(len(files), 'file')}"
                    + (f", {_count(warned, 'warning')}" if warned else "")
                    + "\n"
                )
            else:
                sys.stdout.write(f"{_count(warned, 'warning')}\n")
    if any(d.severity.value == "error" for d in diags):
        raise typer.Exit(2)


def plan(
    file: str = typer.Argument(..., metavar="FILE", help="The runbook."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    params_file: str | None = typer.Option(None, "--params-file", help=PARAMS_FILE_HELP),
    fmt: str = format_option("text", "text", "markdown", "json"),
) -> None:
    """Show the compiled plan: numbered steps, rendered inputs, gates, lints, plan hash."""
    from drctl.cli.output import write
    from drctl.render import plan as render

    compiled = _compile(file, _params(param, params_file))
    _warn(compiled)
    if DocFormat(fmt) is DocFormat.json:
        write(render.as_json(compiled))
    elif DocFormat(fmt) is DocFormat.markdown:
        write(render.as_markdown(compiled))
    else:
        write(render.as_text(compiled))


def diff(
    old: str = typer.Argument(..., metavar="OLD", help="The runbook before the change."),
    new: str = typer.Argument(..., metavar="NEW", help="The runbook after the change."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    params_file: str | None = typer.Option(None, "--params-file", help=PARAMS_FILE_HELP),
    fmt: str = format_option("text", "text", "markdown", "json"),
) -> None:
    """Compare the plans of two runbooks; exit 0 if equal, 1 if different, 2 if invalid."""
    from drctl.cli.output import write
    from drctl.compiler.diff import diff_plans
    from drctl.diagnostics import Diagnostic
    from drctl.errors import RunbookInvalid
    from drctl.render import diff as render

    given = _params(param, params_file)
    problems: list[Diagnostic] = []
    plans = []
    for path in (old, new):
        try:
            plans.append(_compile(path, given))
        except RunbookInvalid as exc:
            problems.extend(exc.diagnostics)
    if problems:
        raise RunbookInvalid(problems)
    result = diff_plans(plans[0], plans[1])
    if DocFormat(fmt) is DocFormat.json:
        write(render.as_json(result, old, new))
    elif DocFormat(fmt) is DocFormat.markdown:
        write(render.as_markdown(result, old, new))
    else:
        write(render.as_text(result, old, new))
    raise typer.Exit(0 if result.equal else 1)


def _warn(plan: Plan) -> None:
    """The compiler's warnings on stderr (stdout stays the plan, byte-stable)."""
    import sys

    from drctl.render.diagnostics import as_text

    sys.stderr.write(as_text(plan.warnings))


def _hash_words(plan: Plan) -> str:
    """The plan hash as ``drctl plan`` shows it, or why it cannot be the same one."""
    if not plan.stand_ins:
        return f"plan hash {plan.hash}"
    return (
        f"plan hash {plan.hash} of stand-ins for {', '.join(plan.stand_ins)}; a run's "
        "hash, as drctl plan shows it with the real values, differs"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(plan)
    app.command()(diff)
