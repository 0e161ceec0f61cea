"""The built-in step types are registered twice, and the two registrations agree."""

from __future__ import annotations

import tomllib

from drctl.steps.builtin import BUILTIN_STEP_TYPES
from tests.conftest import REPO


def test_entry_points_and_static_registry_name_the_same_step_types() -> None:
    """pyproject's `drctl.steps` entry points and drctl/steps/builtin.py map the same names to the same objects."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["drctl.steps"]
    missing_statically = sorted(set(entry_points) - set(BUILTIN_STEP_TYPES))
    missing_as_entry_points = sorted(set(BUILTIN_STEP_TYPES) - set(entry_points))
    assert (missing_statically, missing_as_entry_points) == ([], [])
    differ = {
        name: (entry_points[name], target)
        for name, target in BUILTIN_STEP_TYPES.items()
        if entry_points[name] != target
    }
    assert differ == {}
