"""Property tests: mutated valid runbooks give exit 0 or a clean exit 2, never a crash.

Each example takes a valid runbook from runbooks/, breaks it a few ways (deleted,
duplicated, swapped or re-indented lines, inserted characters, truncation, scalars of
another type) and runs the CLI in-process through ``drctl.cli.app.main`` — the edge
that renders errors — asserting: exit 0 or 2; no traceback and no "internal error";
and on exit 2, output made only of ``path:line:col: error CODE: message`` lines (or
``path: error CODE:`` for whole-file problems), hints and the summary.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drctl.cli.app import main

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


@dataclass(frozen=True)
class Base:
    name: str
    text: str
    params: tuple[str, ...]  # -p flags that make it plan


def _plan_params(text: str) -> tuple[str, ...]:
    """-p flags for every required param without a default (first choice, or a stand-in)."""
    import yaml

    flags: list[str] = []
    for name, spec in (yaml.safe_load(text).get("params") or {}).items():
        if spec.get("required") and spec.get("default") is None:
            value = (
                spec["choices"][0]
                if spec.get("choices")
                else {
                    "int": "1",
                    "float": "1.0",
                    "bool": "true",
                    "duration": "1s",
                    "list": "a",
                    "map": "{}",
                }.get(spec.get("type", "str"), "x")
            )
            flags += ["-p", f"{name}={value}"]
    return tuple(flags)


BASES = tuple(
    Base(p.name, text, _plan_params(text))
    for p in sorted(RUNBOOKS.glob("*.yaml"))
    for text in [p.read_text(encoding="utf-8")]
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

YAML_SPECIAL = [*":-?[]{},#&*!|>'\"%@`\t\n ", "{{", "}}", "${", "<<: ", "---\n", "\\"]
OTHER_SCALARS = [
    "0",
    "-1",
    "1.5",
    ".inf",
    ".nan",
    "true",
    "null",
    "~",
    "[]",
    "{}",
    "[a, b]",
    "{a: 1}",
    '""',
    "2m",
    "-5s",
    "0x1F",
    "2024-01-01",
    "9" * 30,
    "!!str 1",
    "!!int x",
    "&anchor v",
    "*anchor",
    '"${env:X}"',
    '"${nope"',
    '"{{ params.site }}"',
    '"{{ nope }}"',
    '"{{ steps.lag.outputs.x }}"',
    '"{{ steps.missing.outputs.x }}"',
    '"{% for %}"',
    '"{{ 1/0 }}"',
]

# A whole scalar value: after ``key: ``, ``- ``, ``[`` or ``, ``, either quoted or plain,
# and ending where the value ends (end of line, or the next flow separator).
_SCALAR = re.compile(
    r"""(?:(?<=: )|(?<=- )|(?<=\[)|(?<=, ))"""
    r"""("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s\[\]{},:#"'&*!|>](?:[^\n\[\]{},#"':]|:(?!\s))*?)"""
    r"""(?=\s*(?:$|[,\]}]|\s#))""",
    re.M,
)


def mutate(draw: st.DrawFn, text: str, max_mutations: int) -> str:
    """``text`` after 1 to ``max_mutations`` drawn mutations."""
    for _ in range(draw(st.integers(1, max_mutations))):
        text = draw(st.sampled_from(MUTATIONS))(draw, text)
    return text


@st.composite
def mutated(draw: st.DrawFn, max_mutations: int = 3) -> tuple[Base, str]:
    """A valid runbook and a text made from it by 1 to ``max_mutations`` mutations."""
    base = draw(st.sampled_from(BASES))
    return base, mutate(draw, base.text, max_mutations)


PARAMS_FILE = "site: west\nmax_lag_seconds: 3\nhealth_url: http://127.0.0.1:8080/health\n"


@st.composite
def mutated_params_file(draw: st.DrawFn) -> str:
    return mutate(draw, PARAMS_FILE, 3)


def _line_index(draw: st.DrawFn, lines: list[str]) -> int:
    return draw(st.integers(0, max(len(lines) - 1, 0)))


def delete_line(draw: st.DrawFn, text: str) -> str:
    lines = text.split("\n")
    del lines[_line_index(draw, lines)]
    return "\n".join(lines)


def duplicate_line(draw: st.DrawFn, text: str) -> str:
    lines = text.split("\n")
    i = _line_index(draw, lines)
    lines.insert(i, lines[i])
    return "\n".join(lines)


def swap_lines(draw: st.DrawFn, text: str) -> str:
    lines = text.split("\n")
    i, j = _line_index(draw, lines), _line_index(draw, lines)
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def insert_text(draw: st.DrawFn, text: str) -> str:
    at = draw(st.integers(0, len(text)))
    piece = draw(
        st.one_of(
            st.sampled_from(YAML_SPECIAL),
            st.text(
                st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=4
            ),
        )
    )
    return text[:at] + piece + text[at:]


def reindent_line(draw: st.DrawFn, text: str) -> str:
    lines = text.split("\n")
    i = _line_index(draw, lines)
    shift = draw(st.sampled_from([-4, -2, -1, 1, 2, 4]))
    line = lines[i]
    if shift > 0:
        lines[i] = " " * shift + line
    else:
        lead = len(line) - len(line.lstrip(" "))
        lines[i] = line[min(-shift, lead) :]
    return "\n".join(lines)


def truncate(draw: st.DrawFn, text: str) -> str:
    return text[: draw(st.integers(0, len(text)))]


def replace_scalar(draw: st.DrawFn, text: str) -> str:
    found = list(_SCALAR.finditer(text))
    if not found:
        return text
    match = draw(st.sampled_from(found))
    return text[: match.start()] + draw(st.sampled_from(OTHER_SCALARS)) + text[match.end() :]


MUTATIONS: list[Callable[[st.DrawFn, str], str]] = [
    delete_line,
    duplicate_line,
    swap_lines,
    insert_text,
    reindent_line,
    truncate,
    replace_scalar,
]


# -- running the CLI in-process --------------------------------------------------------

_DIAG = re.compile(
    r"^(?P<source>.+?)(?::(?P<line>\d+):(?P<col>\d+))?: (?:error|warning) (?P<code>(?:E|W|DR)\d{3}): \S"
)
_ALLOWED_ON_ERROR = (
    _DIAG,
    re.compile(r"^    hint: "),
    re.compile(r"^\d+ errors? in \d+ of \d+ files?(, \d+ warnings?)?$"),
    re.compile(r"^drctl: \d+ errors? found( \(and \d+ warnings?\))?$"),
    re.compile(r"^.+: ok \(\d+ steps?, plan hash sha256:[0-9a-f]+( of stand-ins for .+)?\)$"),
)


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_main(*args: str) -> Result:
    """Run ``drctl ARGS`` through main() in this process, capturing its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    env = {k: v for k, v in os.environ.items() if k != "DRCTL_DEBUG"}
    code: int | str | None = 0
    with (
        mock.patch.object(sys, "argv", ["drctl", *args]),
        mock.patch.dict(os.environ, env, clear=True),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main()
        except SystemExit as exc:
            code = exc.code
    assert isinstance(code, int | None), f"exit with {code!r}"
    return Result(code or 0, out.getvalue(), err.getvalue())


def assert_clean(
    result: Result, sources: set[str], *, allowed: frozenset[int] = frozenset({0, 2})
) -> None:
    """Exit in ``allowed``; no crash; on exit 2 only diagnostics naming one of ``sources``."""
    shown = f"exit {result.code}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.code in allowed, shown
    assert "Traceback" not in result.output, shown
    assert "internal error" not in result.output, shown
    if result.code != 2:
        return
    lines = [line for line in result.output.splitlines() if line.strip()]
    stray = [line for line in lines if not any(p.match(line) for p in _ALLOWED_ON_ERROR)]
    assert not stray, f"lines that are not diagnostics: {stray!r}\n{shown}"
    diags = [m for m in map(_DIAG.match, lines) if m and m["source"] in sources]
    assert diags, f"no 'path:line:col: error CODE:' line for {sources}\n{shown}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _write(workdir: Path, text: str, name: str = "mutant.yaml") -> str:
    path = workdir / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_unmutated_runbooks_are_valid(workdir: Path) -> None:
    """Every base runbook validates and plans, so the mutants start from valid input."""
    assert BASES, "no runbooks/*.yaml to mutate"
    for base in BASES:
        path = _write(workdir, base.text)
        assert run_main("validate", path).code == 0
        result = run_main("plan", path, *base.params)
        assert result.code == 0, result.output


def test_the_checker_rejects_a_crash_and_accepts_a_diagnostic() -> None:
    """assert_clean fails on a traceback, an internal error or stray output, and passes a real diagnostic."""
    good = Result(
        2, "f.yaml:3:5: error E201: x: unknown field\n    hint: y\n1 error in 1 of 1 file\n", ""
    )
    assert_clean(good, {"f.yaml"})
    for bad in (
        Result(70, "", "drctl: internal error: KeyError: 'x'\n"),
        Result(2, "", "Traceback (most recent call last):\n"),
        Result(2, "f.yaml: something went wrong\n", ""),
        Result(1, "", ""),
        Result(2, "other.yaml:1:1: error E101: x\n", ""),
    ):
        with pytest.raises(AssertionError):
            assert_clean(bad, {"f.yaml"})


@FUZZ
@given(case=mutated())
def test_validate_on_mutated_runbooks_never_crashes(workdir: Path, case: tuple[Base, str]) -> None:
    """validate on a mutated runbook exits 0 or 2 with positioned diagnostics, never a traceback."""
    _, text = case
    path = _write(workdir, text)
    assert_clean(run_main("validate", path), {path})


@FUZZ
@given(case=mutated())
def test_plan_on_mutated_runbooks_never_crashes(workdir: Path, case: tuple[Base, str]) -> None:
    """plan on a mutated runbook exits 0 or 2 with positioned diagnostics, never a traceback."""
    base, text = case
    path = _write(workdir, text)
    result = run_main("plan", path, *base.params)
    assert_clean(result, {path, *(f"-p {p}" for p in base.params[1::2])})


@st.composite
def scalar_swapped(draw: st.DrawFn) -> tuple[Base, str]:
    """A valid runbook with 1 to 3 scalar values replaced: still YAML, so it reaches the compiler."""
    base = draw(st.sampled_from(BASES))
    text = base.text
    for _ in range(draw(st.integers(1, 3))):
        text = replace_scalar(draw, text)
    return base, text


@FUZZ
@given(case=scalar_swapped())
def test_plan_on_runbooks_with_swapped_scalars_never_crashes(
    workdir: Path, case: tuple[Base, str]
) -> None:
    """plan on a runbook whose values changed type exits 0 or 2 with diagnostics, never a traceback."""
    base, text = case
    path = _write(workdir, text)
    result = run_main("plan", path, *base.params)
    assert_clean(result, {path, *(f"-p {p}" for p in base.params[1::2])})


@FUZZ
@given(case=mutated(max_mutations=1), fmt=st.sampled_from(["text", "json", "github"]))
def test_validate_formats_on_mutated_runbooks_never_crash(
    workdir: Path, case: tuple[Base, str], fmt: str
) -> None:
    """validate --format json/github on a mutant exits 0 or 2, and JSON output always parses."""
    import json

    _, text = case
    path = _write(workdir, text)
    result = run_main("validate", "--format", fmt, path)
    if fmt == "text":
        assert_clean(result, {path})
        return
    assert result.code in (0, 2), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    if fmt == "json":
        payload = json.loads(result.stdout)
        assert payload["valid"] is (result.code == 0)
        assert result.code == 0 or payload["diagnostics"]
    elif result.code == 2:
        assert re.search(
            rf"^::error file={re.escape(path).replace(':', '%3A')}", result.stdout, re.M
        ), result.stdout


@FUZZ
@given(case=mutated(max_mutations=2))
def test_diff_against_a_mutant_never_crashes(workdir: Path, case: tuple[Base, str]) -> None:
    """diff ORIGINAL MUTANT exits 0 (equal), 1 (different) or 2 (invalid), never a traceback."""
    base, text = case
    old = _write(workdir, base.text, "original.yaml")
    new = _write(workdir, text)
    result = run_main("diff", old, new, *base.params)
    assert_clean(result, {new, old}, allowed=frozenset({0, 1, 2}))


@FUZZ
@given(
    value=st.one_of(
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
        st.sampled_from(["[", "{", "[1, 2", "{a: [", "*x", "&a", "!!int x", "${env:X}", "{{ x }}"]),
    ),
    name=st.sampled_from(["site", "max_lag_seconds", "health_url"]),
)
def test_random_param_values_never_crash(workdir: Path, value: str, name: str) -> None:
    """Any -p value for any declared param plans or gives an E230 against the flag, never a traceback."""
    base = next(b for b in BASES if b.name == "generic-failover.yaml")
    path = _write(workdir, base.text, "generic.yaml")
    flags = ["-p", f"{name}={value}"] + ([] if name == "site" else ["-p", "site=west"])
    result = run_main("plan", path, *flags)
    flag = f"{name}={value}"
    # The flag is named as typed, or quoted when it holds a newline or control character.
    assert_clean(result, {path, f"-p {flag}", f"-p {flag!r}"})


@FUZZ
@given(text=mutated_params_file())
def test_mutated_params_files_never_crash(workdir: Path, text: str) -> None:
    """A mutated params file plans or gives diagnostics against the params file, never a traceback."""
    base = next(b for b in BASES if b.name == "generic-failover.yaml")
    path = _write(workdir, base.text, "generic.yaml")
    params = _write(workdir, text, "params.yaml")
    result = run_main("plan", path, "--params-file", params)
    assert_clean(result, {path, params})
