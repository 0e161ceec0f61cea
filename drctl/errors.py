"""The one exception hierarchy of drctl. The CLI renders these once, at the edge.

::

    DrctlError                      exit 1 unless a subclass says otherwise
    ├── UsageError                  exit 2: a bad flag or argument
    ├── RunbookInvalid              exit 2: carries every Diagnostic found in the input
    └── StepTypeError               exit 2: a step type is unknown or failed to load

Foreign exceptions (yaml, pydantic, jinja2, and later the providers' client
libraries) are translated to these once, where they are caught, keeping the cause.
"""

from __future__ import annotations

from collections.abc import Iterable

from drctl.diagnostics import Diagnostic


class DrctlError(Exception):
    """Base of every error drctl raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(DrctlError):
    """Raised for a bad command-line flag or argument (exit 2)."""

    exit_code = 2


class RunbookInvalid(DrctlError):
    """Raised when a runbook, its parameters or its params file has errors (exit 2).

    Holds all the diagnostics found, sorted by place, so the user fixes them in one pass.
    """

    exit_code = 2

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = tuple(sorted(diagnostics, key=Diagnostic.sort_key))
        count = len(self.diagnostics)
        super().__init__(f"{count} error{'s' if count != 1 else ''} found")


class StepTypeError(DrctlError):
    """Raised when a step type name is unknown or its plugin fails to import (exit 2)."""

    exit_code = 2
