"""Writing results and errors to the terminal."""

from __future__ import annotations

import sys

from drctl.errors import DrctlError, RunbookInvalid
from drctl.visible import visible


def render_error(exc: DrctlError) -> None:
    if isinstance(exc, RunbookInvalid):
        from drctl.render.diagnostics import as_text

        sys.stderr.write(as_text(exc.diagnostics))
        sys.stderr.write(visible(f"drctl: {exc.message}\n"))
        return
    # Messages quote runbook strings and servers' answers: shown escaped, never obeyed.
    sys.stderr.write(visible(f"drctl: error: {exc.message}\n"))
    if exc.hint:
        sys.stderr.write(visible(f"    hint: {exc.hint}\n"))


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
