"""One output-format vocabulary for every command: ``-o/--format`` (as kubectl and Terraform).

Every command that can print more than one way takes ``-o FORMAT`` / ``--format FORMAT``
with values from one list — ``text``, ``json``, ``markdown`` (also spelt ``md``),
``html``, ``github`` — each command accepting the ones it can write. The older
``--output`` spelling still works on the commands that had it, hidden from help.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

#: Other spellings of a format, for muscle memory (``drill --format md``).
ALIASES = {"md": "markdown"}


def canonical(value: str) -> str:
    """A format's one name (``md`` → ``markdown``)."""
    low = value.strip().lower()
    return ALIASES.get(low, low)


def _checker(choices: tuple[str, ...]) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        name = canonical(value)
        if name not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return name

    return check


def format_option(default: str | None, *choices: str, what: str = "Output format") -> Any:
    """The ``-o/--format`` option of a command that can write ``choices``."""
    shown = ", ".join(c if c != "markdown" else "markdown (md)" for c in choices)
    return typer.Option(
        default, "--format", "-o", metavar="FORMAT", help=f"{what}: {shown}.",
        callback=_checker(choices),
    )  # fmt: skip


def legacy_output_option(*choices: str) -> Any:
    """``--output``, the older spelling of ``--format`` on run, resume, status, runs and log."""
    return typer.Option(None, "--output", hidden=True, callback=_checker(choices))


def chosen(given: str | None, legacy: str | None, default: str) -> str:
    """The format asked for: ``--format`` over the hidden ``--output``, else the default."""
    return given or legacy or default
