"""Binding params from -p flags and --params-file, with typed coercion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from drctl.compiler.compile import compile_runbook
from drctl.compiler.params import ParamInput
from drctl.errors import RunbookInvalid

RUNBOOK = """
apiVersion: drctl/v1
kind: Runbook
metadata: {name: p}
params:
  count: {type: int, default: 1}
  ratio: {type: float, default: 0.5}
  on: {type: bool, default: false}
  wait: {type: duration, default: 30s}
  names: {type: list, default: [a]}
  tags: {type: map, default: {}}
  region: {type: str, choices: [us-west-2, eu-west-1], required: true}
steps:
  - {id: a, type: shell, with: {command: "true", verify: "true"}}
"""


def bound(
    write_runbook: Callable[..., str], *flags: str, params_file: str | None = None
) -> dict[str, object]:
    return compile_runbook(write_runbook(RUNBOOK), ParamInput(flags, params_file)).params


def test_flags_are_coerced_to_declared_types(write_runbook: Callable[..., str]) -> None:
    """int, float, bool, duration, list and map flags become typed values."""
    params = bound(
        write_runbook,
        "region=eu-west-1",
        "count=3",
        "ratio=2.5",
        "on=yes",
        "wait=1m30s",
        "names=x,y",
        "tags={team: db}",
    )
    assert params == {
        "count": 3,
        "ratio": 2.5,
        "on": True,
        "wait": 90.0,
        "names": ["x", "y"],
        "tags": {"team": "db"},
        "region": "eu-west-1",
    }


def test_defaults_fill_unset_params(write_runbook: Callable[..., str]) -> None:
    """Unset params take their defaults, coerced like any value."""
    params = bound(write_runbook, "region=us-west-2")
    assert params["wait"] == 30.0 and params["names"] == ["a"]


@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        ("count=three", "count: expected an integer, got 'three'"),
        ("on=maybe", "on: expected true or false"),
        ("region=us-west-3", "not one of 'us-west-2', 'eu-west-1' (did you mean 'us-west-2'?)"),
        ("wait=soon", "is not a duration"),
        ("counts=3", "unknown parameter 'counts'"),
        ("novalue", "expected -p NAME=VALUE"),
    ],
)
def test_bad_flags_name_the_flag(
    write_runbook: Callable[..., str], flag: str, fragment: str
) -> None:
    """A bad -p value is an error whose location is the flag itself."""
    with pytest.raises(RunbookInvalid) as info:
        bound(write_runbook, "region=us-west-2", flag)
    diag = next(d for d in info.value.diagnostics if d.source == f"-p {flag}")
    assert fragment in diag.message + " " + (diag.hint or "")


def test_missing_required_param_points_at_its_declaration(
    write_runbook: Callable[..., str],
) -> None:
    """A required param nobody gave is an error with a -p hint and the choices."""
    with pytest.raises(RunbookInvalid) as info:
        bound(write_runbook)
    (diag,) = info.value.diagnostics
    assert diag.message == "parameter 'region' is required"
    assert diag.hint == "pass -p region=VALUE (one of: us-west-2, eu-west-1)"
    assert diag.position is not None and diag.position.line == 11


def test_params_file_values_and_flag_precedence(
    write_runbook: Callable[..., str], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The params file fills values; -p flags override it; bad values point into the file."""
    good = tmp_path / "p.yaml"
    good.write_text("region: eu-west-1\ncount: 7\n")
    assert bound(write_runbook, "count=9", params_file=str(good))["count"] == 9
    assert bound(write_runbook, params_file=str(good))["region"] == "eu-west-1"
    bad = tmp_path / "bad.yaml"
    bad.write_text("region: eu-west-1\ncount: many\nbogus: 1\n")
    with pytest.raises(RunbookInvalid) as info:
        bound(write_runbook, params_file=str(bad))
    found = {(d.location, d.severity.value, d.message) for d in info.value.diagnostics}
    assert (f"{bad}:2:8", "error", "count: expected an integer, got 'many'") in found
    assert (f"{bad}:3:1", "warning", "1 key this runbook does not declare, ignored: bogus") in found


def test_undeclared_params_file_keys_are_one_warning(
    write_runbook: Callable[..., str], tmp_path: Path
) -> None:
    """A shared params file's undeclared keys give one warning listing them, not one error each, with hints only for real typos."""
    shared = tmp_path / "shared.yaml"
    shared.write_text(
        "primary_dsn: x\nregion: eu-west-1\nregon_b: 2\ncount: 4\ncounts: 5\nssh_port: 22\n"
        "rati: 1.5\n"
    )
    plan = compile_runbook(write_runbook(RUNBOOK), ParamInput((), str(shared)))
    assert plan.params["count"] == 4 and plan.params["region"] == "eu-west-1"
    (warning,) = plan.warnings
    assert warning.code == "W230" and warning.severity.value == "warning"
    assert warning.location == f"{shared}:1:1"
    assert warning.message == (
        "5 keys this runbook does not declare, ignored: primary_dsn, regon_b, counts, "
        "ssh_port, rati"
    )
    # count and region are set by the file, so counts/regon_b are not their typos;
    # rati is close to ratio, which nothing sets.
    assert warning.hint == "rati: did you mean 'ratio'?"
    # The hash is the same as without the extra keys: they change nothing.
    clean = tmp_path / "clean.yaml"
    clean.write_text("region: eu-west-1\ncount: 4\n")
    assert compile_runbook(write_runbook(RUNBOOK), ParamInput((), str(clean))).hash == plan.hash


def test_an_undeclared_flag_is_still_an_error(write_runbook: Callable[..., str]) -> None:
    """-p with a name the runbook does not declare stays an E230 error (only a file's extra keys are forgiven)."""
    with pytest.raises(RunbookInvalid) as info:
        bound(write_runbook, "region=us-west-2", "bogus=1")
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.severity.value, diag.source) == ("E230", "error", "-p bogus=1")
