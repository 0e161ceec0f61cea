"""Finding step types by name: built-ins first, then the ``drctl.steps`` entry points."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from drctl.errors import StepTypeError
from drctl.runbook.suggest import did_you_mean
from drctl.steps.base import StepType
from drctl.steps.builtin import BUILTIN_STEP_TYPES

ENTRY_POINT_GROUP = "drctl.steps"


@cache
def _plugins() -> dict[str, str]:
    from importlib.metadata import entry_points

    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in BUILTIN_STEP_TYPES:
            found[ep.name] = ep.value
    return found


def step_type_names() -> list[str]:
    """Every known step type name, sorted."""
    return sorted({*BUILTIN_STEP_TYPES, *_plugins()})


def is_known(name: str) -> bool:
    return name in BUILTIN_STEP_TYPES or name in _plugins()


@cache
def get_step_type(name: str) -> StepType[Any, Any]:
    """The step type called ``name``; raises StepTypeError if unknown or broken."""
    spec = BUILTIN_STEP_TYPES.get(name) or _plugins().get(name)
    if spec is None:
        raise StepTypeError(
            f"unknown step type {name!r}", hint=did_you_mean(name, step_type_names())
        )
    module_name, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # a broken plugin must not crash the CLI
        raise StepTypeError(f"step type {name!r} ({spec}) failed to load: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, StepType)):
        raise StepTypeError(f"step type {name!r} ({spec}) is not a StepType subclass")
    return cls()
