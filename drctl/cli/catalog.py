"""What drctl knows: the runbook JSON Schema and the step-type catalogue."""

from __future__ import annotations

from enum import StrEnum

import typer


class CatalogFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def schema() -> None:
    """Print the runbook JSON Schema (for editors' YAML language servers)."""
    import json

    from drctl.cli.output import write
    from drctl.compiler.schema import runbook_schema

    write(json.dumps(runbook_schema(), indent=2, sort_keys=True) + "\n")


def steps(
    type_name: str | None = typer.Argument(None, metavar="TYPE", help="One step type to describe."),
    fmt: CatalogFormat = typer.Option(CatalogFormat.text, "--format", help="Output format."),
) -> None:
    """List the registered step types, or describe one with its inputs."""
    from drctl.cli.output import write
    from drctl.render import catalog

    if type_name is None:
        write(catalog.listing(fmt.value))
    else:
        write(catalog.describe(type_name, fmt.value))


def register(app: typer.Typer) -> None:
    app.command()(schema)
    app.command()(steps)
