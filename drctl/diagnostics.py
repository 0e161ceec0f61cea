"""Diagnostics: one finding about an input, with the place it was found.

A diagnostic is a value. The compiler collects them (all errors in a file at once)
and the CLI renders them as ``path:line:col: error CODE: message``, as JSON, or as
GitHub workflow annotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Position:
    """A 1-based line and column in a source file."""

    line: int
    column: int


@dataclass(frozen=True)
class Diagnostic:
    """One problem with a runbook, a parameter or a flag.

    ``source`` is a file path, or a flag such as ``-p replicas=x`` when the problem
    is on the command line; ``position`` is absent for whole-file problems.
    """

    code: str
    message: str
    source: str
    position: Position | None = None
    severity: Severity = Severity.ERROR
    hint: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def location(self) -> str:
        if self.position is None:
            return self.source
        return f"{self.source}:{self.position.line}:{self.position.column}"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        pos = self.position or Position(0, 0)
        return (self.source, pos.line, pos.column, self.code, self.message)


# Error codes, stable so that CI annotations and docs can refer to them.
# Lints (DR001–DR005) live with the lints in drctl.compiler.lints.
E_FILE = "E100"  # missing file, directory, unreadable, too large, not UTF-8
E_YAML = "E101"  # YAML syntax
E_YAML_LIMIT = "E102"  # nesting depth or alias expansion beyond limits
E_DUPLICATE_KEY = "E103"
E_SCHEMA = "E200"  # wrong type, missing field, bad value
E_UNKNOWN_FIELD = "E201"
E_UNKNOWN_STEP_TYPE = "E210"
E_TARGET = "E211"  # unknown target, or a target of the wrong type for the step
E_STEP_INPUTS = "E212"
E_STEP_TIMEOUT = "E213"  # a step's own waits are longer than its timeout
E_DUPLICATE_ID = "E220"
E_PARAM = "E230"
W_PARAM_UNDECLARED = "W230"  # a params file key the runbook does not declare (ignored)
E_TEMPLATE_SYNTAX = "E240"
E_TEMPLATE_NAME = "E241"
E_STEP_REFERENCE = "E242"
E_REQUIRES = "E250"
E_CYCLE = "E251"
E_SECRET_REF = "E260"
E_FOR_EACH = "E270"
E_ACKNOWLEDGE = "E280"
W_STALE_ACKNOWLEDGE = "W280"  # an acknowledge: entry no lint needs there
E_STEP_TYPE_BROKEN = "E290"  # a registered step type failed to load
E_GUARD = "E295"  # a guard that would change something, or reads steps' outputs
