"""``drctl docs [--check] [--dir DIR]``: regenerate (or check) the generated pages in docs/."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def docs(
    check: bool = typer.Option(
        False, "--check", help="Change nothing; exit 1 naming every stale generated page."
    ),
    directory: Path = typer.Option(Path("docs"), "--dir", help="The docs directory."),
) -> None:
    """Regenerate the runbook reference, step catalogue and exit codes in docs/."""
    from drctl.render import reference

    if check:
        bad = reference.stale(directory)
        for name in bad:
            sys.stderr.write(f"drctl: stale: {directory / name}\n")
        if bad:
            sys.stderr.write(f"    hint: regenerate with: drctl docs --dir {directory}\n")
            raise typer.Exit(1)
        sys.stdout.write(f"{len(reference.PAGES)} generated pages in {directory} are current\n")
        return
    changed = reference.write_all(directory)
    for name in changed:
        sys.stdout.write(f"wrote {directory / name}\n")
    if not changed:
        sys.stdout.write(f"{len(reference.PAGES)} generated pages in {directory} already current\n")


def register(app: typer.Typer) -> None:
    app.command()(docs)
