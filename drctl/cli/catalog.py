"""What drctl knows: the runbook JSON Schema and the step-type catalogue."""

from __future__ import annotations

from enum import StrEnum

import typer

from drctl.cli.formats import format_option


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
    fmt: str = format_option("text", "text", "markdown", "json"),
) -> None:
    """List the registered step types, or describe one with its inputs."""
    from drctl.cli.output import write
    from drctl.render import catalog

    if type_name is None:
        write(catalog.listing(fmt))
    else:
        write(catalog.describe(type_name, fmt))


def register(app: typer.Typer) -> None:
    app.command()(schema)
    app.command()(steps)
