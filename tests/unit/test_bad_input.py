"""Bad input of every kind: a clear positioned message and exit 2, never a traceback or a hang.

Each test runs the real CLI in a fresh interpreter (``python -m drctl``) with a
timeout, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

#: A valid runbook that the tests below break one way at a time. Line numbers in the
#: expectations refer to this text (line 1 is ``apiVersion``).
VALID = """\
apiVersion: drctl/v1
kind: Runbook
metadata:
  name: demo
  description: a runbook to break
params:
  region: {type: str, required: true}
targets:
  api: {type: http, base_url: "https://status.example"}
steps:
  - id: measure
    type: shell
    with:
      command: "echo {{ params.region }}"
      mutates: false
  - id: call
    type: http
    target: api
    with:
      url: /v1/health
"""

#: A refused input takes a fraction of a second; expanding a bomb, parsing 50 MB or
#: reading /dev/zero takes minutes or never ends. A wide bound tells them apart on a
#: loaded machine too, and the diagnostic (limit hit, file not parsed) is the proof.
HANG_TIMEOUT = 30.0


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def drctl(*args: str, cwd: Path, timeout: float = HANG_TIMEOUT) -> Run:
    """Run the real CLI; a run longer than ``timeout`` fails the test as a hang."""
    env = {k: v for k, v in os.environ.items() if k != "DRCTL_DEBUG"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "drctl", *args],
            capture_output=True,
            text=True,
            errors="replace",
            cwd=cwd,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"drctl {' '.join(args)} hung for more than {timeout}s")
    return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_refused(run: Run) -> None:
    """Exit 2, and nothing that looks like a crash."""
    assert run.code == 2, run.output
    assert "Traceback" not in run.output, run.output
    assert "internal error" not in run.output, run.output


def diag_at(run: Run, source: str, code: str, line: int, col: int) -> str:
    """The message of the ``source:line:col: error CODE:`` line; fails if there is none."""
    pattern = re.compile(rf"^{re.escape(source)}:{line}:{col}: error {code}: (.*)$", re.M)
    match = pattern.search(run.output)
    assert match, f"no '{source}:{line}:{col}: error {code}:' line in:\n{run.output}"
    return match.group(1)


def diag_whole_file(run: Run, source: str, code: str) -> str:
    """The message of the ``source: error CODE:`` line (no position); fails if there is none."""
    pattern = re.compile(rf"^{re.escape(source)}: error {code}: (.*)$", re.M)
    match = pattern.search(run.output)
    assert match, f"no '{source}: error {code}:' line in:\n{run.output}"
    return match.group(1)


def write(tmp_path: Path, text: str, name: str = "runbook.yaml") -> str:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return name


def broken(old: str, new: str) -> str:
    """VALID with one exact, unique fragment replaced."""
    assert VALID.count(old) == 1, old
    return VALID.replace(old, new)


def test_the_runbook_the_tests_break_is_valid(tmp_path: Path) -> None:
    """The base runbook validates and plans, so every failure below is the mutation's."""
    name = write(tmp_path, VALID)
    assert drctl("validate", name, cwd=tmp_path).code == 0
    run = drctl("plan", name, "-p", "region=west", cwd=tmp_path)
    assert run.code == 0, run.output
    assert "echo west" in run.stdout


# -- YAML itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "old", "new", "line", "col", "fragment"),
    [
        ("validate", "  name: demo\n", "  name: [demo\n", 5, 14, "flow sequence"),
        (
            "plan",
            "  name: demo\n",
            "  name: demo\n   extra: x\n",
            5,
            9,
            "mapping values are not allowed",
        ),
        (
            "validate",
            "      url: /v1/health\n",
            '      url: "/v1/health\n',
            20,
            23,
            "found unexpected end of stream",
        ),
        ("plan", "kind: Runbook\n", "kind: Runbook\n\tmore: tabs\n", 3, 1, "tab"),
        ("validate", "    target: api\n", "    target: *nowhere\n", 18, 13, "names no anchor"),
    ],
    ids=["unclosed-flow", "bad-indent", "unclosed-quote", "tab-indent", "unknown-alias"],
)
def test_malformed_yaml_is_e101_at_its_position(
    tmp_path: Path, command: str, old: str, new: str, line: int, col: int, fragment: str
) -> None:
    """YAML syntax errors are one E101 line at file:line:col naming the problem."""
    name = write(tmp_path, broken(old, new))
    run = drctl(command, name, cwd=tmp_path)
    assert_refused(run)
    assert fragment in diag_at(run, name, "E101", line, col)


def test_duplicate_yaml_keys_are_e103_at_the_second_key(tmp_path: Path) -> None:
    """A key written twice is reported where it repeats, not silently replaced."""
    name = write(tmp_path, broken("    target: api\n", "    target: api\n    target: api\n"))
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert "duplicate key 'target'" in diag_at(run, name, "E103", 19, 5)


@pytest.mark.parametrize(
    ("text", "code", "line", "col", "fragment"),
    [
        ("a: !!python/name:os.system ''\n", "E102", 1, 4, "unsupported YAML tag"),
        ("a: !!int nine\n", "E101", 1, 4, "'nine' is not a valid int"),
        ("a: !!bool maybe\n", "E101", 1, 4, "not a valid bool"),
        ("a: " + "9" * 5000 + "\n", "E101", 1, 4, "too many digits"),
        ("? [a, b]\n: 1\n", "E102", 1, 3, "mapping key must be a plain value"),
    ],
    ids=["python-tag", "bad-int-tag", "bad-bool-tag", "huge-int", "complex-key"],
)
def test_unsafe_or_unreadable_scalars_are_refused(
    tmp_path: Path, text: str, code: str, line: int, col: int, fragment: str
) -> None:
    """Unsafe tags, values that do not fit their tag and collection keys get a positioned error."""
    name = write(tmp_path, text)
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert fragment in diag_at(run, name, code, line, col)


def test_a_control_character_is_one_positioned_line(tmp_path: Path) -> None:
    """A control character is E101 at its own line:col, in one line without "<unicode string>"."""
    name = write(tmp_path, broken("  name: demo\n", "  name: de\x1fmo\n"))
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    message = diag_at(run, name, "E101", 4, 11)
    assert message == "YAML: character U+001F: control characters are not allowed"
    assert run.stdout.splitlines()[1] == "1 error in 1 of 1 file"


def test_two_yaml_documents_are_refused_at_the_second(tmp_path: Path) -> None:
    """A file with two YAML documents is E102 at the line where the second begins."""
    name = write(tmp_path, VALID + "---\n" + VALID)
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert "more than one YAML document" in diag_at(run, name, "E102", 21, 1)


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [("", None, None), ("- a\n- b\n", 1, 1), ("42\n", 1, 1)],
    ids=["empty", "top-level-list", "top-level-scalar"],
)
def test_a_document_that_is_not_a_mapping_is_e200(
    tmp_path: Path, text: str, line: int | None, col: int | None
) -> None:
    """An empty file or a top-level list/scalar says what a runbook is, with exit 2."""
    name = write(tmp_path, text)
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    if line is None:
        message = diag_whole_file(run, name, "E200")
    else:
        assert col is not None
        message = diag_at(run, name, "E200", line, col)
    assert "a runbook is a mapping" in message


# -- limits: depth, aliases, size -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        ("[" * 100_000, 1, 1001),
        ("{a: " * 100_000, 1, 257),
        ("".join(" " * i + "a:\n" for i in range(2_000)), 65, 65),
    ],
    ids=["100k-flow-sequences", "100k-flow-mappings", "2k-block-mappings"],
)
def test_deep_nesting_is_e102_fast(tmp_path: Path, text: str, line: int, col: int) -> None:
    """Very deep nesting hits the depth limit (E102) instead of the stack."""
    name = write(tmp_path, text)
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert "nesting deeper than" in diag_at(run, name, "E102", line, col)


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_alias_bomb_is_e102_fast(tmp_path: Path, command: str) -> None:
    """The billion-laughs alias bomb (9 levels) stops at the expansion limit, not after expanding."""
    name = write(tmp_path, billion_laughs(9))
    run = drctl(command, name, cwd=tmp_path)
    assert_refused(run)
    assert "alias expansion" in diag_at(run, name, "E102", 6, 16)


def test_aliases_cannot_nest_past_the_depth_limit(tmp_path: Path) -> None:
    """Aliases of deep anchors nested in each other count toward the depth limit (no RecursionError)."""
    lines = ["x-deep:"]
    for i in range(50):
        inner = f"*a{i - 1}" if i else "1"
        lines.append(f"  - &a{i} " + "[" * 60 + inner + "]" * 60)
    text = broken("kind: Runbook\n", "kind: Runbook\n" + "\n".join(lines) + "\n")
    text = text.replace("      url: /v1/health\n", "      url: /v1/health\n      json: *a49\n")
    name = write(tmp_path, text)
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    # a1 nests a0 (60 levels) inside 60 more: refused at the alias, line 5.
    assert "nesting deeper than 64" in diag_at(run, name, "E102", 5, 69)


@pytest.mark.parametrize(("command", "kind"), [("validate", "sparse"), ("plan", "repeated")])
def test_a_50_mb_file_is_refused_fast(tmp_path: Path, command: str, kind: str) -> None:
    """A 50 MB file is E100 "larger than" without being parsed (no hang: HANG_TIMEOUT)."""
    path = tmp_path / "huge.yaml"
    size = 50 * 1024 * 1024
    if kind == "sparse":
        with path.open("wb") as fh:
            fh.truncate(size)
    else:
        path.write_bytes(VALID.encode() + b"# padding\n" * (size // 10))
    run = drctl(command, path.name, cwd=tmp_path)
    assert_refused(run)
    assert "larger than 4 MiB" in diag_whole_file(run, path.name, "E100")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_stream_is_refused_not_read_forever(tmp_path: Path) -> None:
    """A path that never ends (/dev/zero) is read only up to the size limit, then E100."""
    run = drctl("validate", "/dev/zero", cwd=tmp_path)
    assert_refused(run)
    assert "larger than" in diag_whole_file(run, "/dev/zero", "E100")


# -- files that are not runbooks ------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_missing_file_is_e100(tmp_path: Path, command: str) -> None:
    """A path that does not exist is E100 "no such file" naming the path."""
    run = drctl(command, "nowhere.yaml", cwd=tmp_path)
    assert_refused(run)
    assert diag_whole_file(run, "nowhere.yaml", "E100") == "no such file"


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_directory_is_e100(tmp_path: Path, command: str) -> None:
    """A directory given as the runbook is E100 "is a directory"."""
    (tmp_path / "book.d").mkdir()
    run = drctl(command, "book.d", cwd=tmp_path)
    assert_refused(run)
    assert "is a directory" in diag_whole_file(run, "book.d", "E100")


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_binary_garbage_is_e100(tmp_path: Path, command: str) -> None:
    """Random bytes with NULs are E100 "binary data", not a YAML or decode traceback."""
    rng = random.Random(1234)
    data = bytes(rng.randrange(256) for _ in range(4096)) + b"\x00"
    (tmp_path / "garbage.yaml").write_bytes(data)
    run = drctl(command, "garbage.yaml", cwd=tmp_path)
    assert_refused(run)
    assert "binary data" in diag_whole_file(run, "garbage.yaml", "E100")


def test_invalid_utf8_without_nul_is_e100(tmp_path: Path) -> None:
    """Latin-1 bytes (no NUL) are E100 "not UTF-8" with the offset of the bad byte."""
    (tmp_path / "latin1.yaml").write_bytes(b"apiVersion: drctl/v1\nkind: Caf\xe9\n")
    run = drctl("validate", "latin1.yaml", cwd=tmp_path)
    assert_refused(run)
    assert (
        diag_whole_file(run, "latin1.yaml", "E100") == "not UTF-8 text (invalid byte at offset 30)"
    )


def test_every_bad_file_is_reported_in_one_validate_run(tmp_path: Path) -> None:
    """validate reports each bad file and still says which files are fine."""
    good = write(tmp_path, VALID, "good.yaml")
    (tmp_path / "dir.yaml").mkdir()
    bad = write(tmp_path, broken("type: shell", "type: shel"), "bad.yaml")
    run = drctl("validate", good, "missing.yaml", "dir.yaml", bad, cwd=tmp_path)
    assert_refused(run)
    diag_whole_file(run, "missing.yaml", "E100")
    diag_whole_file(run, "dir.yaml", "E100")
    diag_at(run, bad, "E210", 12, 11)
    assert f"{good}: ok" in run.stdout
    assert "3 errors in 3 of 4 files" in run.stdout


def test_json_output_of_bad_input_is_valid_json(tmp_path: Path) -> None:
    """validate --format json on bad input prints parseable JSON with positions, exit 2."""
    name = write(tmp_path, broken("type: shell", "type: shel"))
    run = drctl("validate", "--format", "json", name, "missing.yaml", cwd=tmp_path)
    assert_refused(run)
    payload = json.loads(run.stdout)
    assert payload["valid"] is False
    found = {(d["source"], d["code"], d["line"], d["column"]) for d in payload["diagnostics"]}
    assert found == {(name, "E210", 12, 11), ("missing.yaml", "E100", None, None)}


def test_diff_with_a_bad_side_is_exit_2(tmp_path: Path) -> None:
    """diff with one unreadable and one invalid runbook reports both, exit 2 (not 1)."""
    name = write(tmp_path, broken("type: shell", "type: shel"))
    run = drctl("diff", "missing.yaml", name, "-p", "region=west", cwd=tmp_path)
    assert_refused(run)
    diag_whole_file(run, "missing.yaml", "E100")
    diag_at(run, name, "E210", 12, 11)


# -- schema: types, fields, ids, graph ------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "code", "line", "col", "fragment"),
    [
        ("steps:\n", "x-steps:\n", "E200", 1, 1, "missing field 'steps'"),
        ("metadata:\n  name: demo\n", "metadata:\n  name: 42\n", "E200", 4, 9, "metadata.name"),
        ("metadata:\n", "metadata: [a]\nx-metadata:\n", "E200", 3, 11, "expected a mapping"),
        (
            '      command: "echo {{ params.region }}"\n',
            "      command: 42\n",
            "E212",
            14,
            16,
            "steps[0].with.command",
        ),
        ("      mutates: false\n", "      mutates: sometimes\n", "E212", 15, 16, "mutates"),
        (
            "    target: api\n",
            "    target: api\n    timeout: forever\n",
            "E200",
            19,
            14,
            "not a duration",
        ),
        ("    target: api\n", "    target: api\n    timeout: .inf\n", "E200", 19, 14, "finite"),
        ("  - id: call\n", "  - id: 'has space'\n", "E200", 16, 9, "not a valid name"),
    ],
    ids=[
        "no-steps",
        "name-int",
        "metadata-list",
        "command-int",
        "bool-text",
        "bad-duration",
        "infinite-duration",
        "bad-id",
    ],
)
def test_wrong_types_are_positioned(
    tmp_path: Path, old: str, new: str, code: str, line: int, col: int, fragment: str
) -> None:
    """A value of the wrong type is reported at that value with its dotted path."""
    name = write(tmp_path, broken(old, new))
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert fragment in diag_at(run, name, code, line, col)


@pytest.mark.parametrize(
    ("old", "new", "line", "col", "path", "hint"),
    [
        (
            "  description: a runbook to break\n",
            "  descripton: a runbook to break\n",
            5,
            3,
            "metadata.descripton",
            "did you mean 'description'?",
        ),
        (
            "    target: api\n",
            "    target: api\n    retires: 3\n",
            19,
            5,
            "steps[1].retires",
            "did you mean 'retries'?",
        ),
        (
            "      url: /v1/health\n",
            "      url: /v1/health\n      metod: PUT\n",
            21,
            7,
            "steps[1].with.metod",
            "did you mean 'method'?",
        ),
        ("kind: Runbook\n", "kind: Runbook\nowner: me\n", 3, 1, "owner", "allowed here:"),
    ],
    ids=["metadata", "step", "step-inputs", "top-level"],
)
def test_unknown_fields_are_e201_with_a_hint(
    tmp_path: Path, old: str, new: str, line: int, col: int, path: str, hint: str
) -> None:
    """An unknown field is E201 at its key, with "did you mean" or the allowed names."""
    name = write(tmp_path, broken(old, new))
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert diag_at(run, name, "E201", line, col) == f"{path}: unknown field"
    assert f"    hint: {hint}" in run.output
    # One mistake, one error: a broken header must not make every template fail too.
    assert re.findall(r" error (\w+): ", run.output) == ["E201"]


def test_misspelled_step_type_suggests_the_right_one(tmp_path: Path) -> None:
    """type: shel is E210 at the value with the hint "did you mean 'shell'?"."""
    name = write(tmp_path, broken("type: shell", "type: shel"))
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert "unknown step type 'shel'" in diag_at(run, name, "E210", 12, 11)
    assert "did you mean 'shell'?" in run.output


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_misspelled_target_suggests_the_declared_one(tmp_path: Path, command: str) -> None:
    """target: apj is E211 at the value with the hint "did you mean 'api'?"."""
    name = write(tmp_path, broken("target: api", "target: apj"))
    run = drctl(command, name, "-p", "region=west", cwd=tmp_path)
    assert_refused(run)
    assert diag_at(run, name, "E211", 18, 13) == "unknown target 'apj'"
    assert "did you mean 'api'?" in run.output


def test_duplicate_step_ids_are_e220_at_the_second(tmp_path: Path) -> None:
    """A repeated step id is E220 at the second id, naming the line of the first."""
    name = write(tmp_path, broken("  - id: call\n", "  - id: measure\n"))
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert diag_at(run, name, "E220", 16, 9) == "duplicate step id 'measure' (first at line 11)"


def test_a_duplicate_id_with_steps_between_does_not_crash_the_graph(tmp_path: Path) -> None:
    """ids one, two, three, two: E220 only, not an IndexError from the dependency graph."""
    steps = "".join(
        f"  - id: {sid}\n    type: approve\n    with: {{message: ok?}}\n"
        for sid in ("one", "two", "three", "two")
    )
    name = write(
        tmp_path, "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: d}\nsteps:\n" + steps
    )
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert diag_at(run, name, "E220", 14, 9) == "duplicate step id 'two' (first at line 8)"


def test_a_dependency_cycle_is_e251_naming_the_cycle(tmp_path: Path) -> None:
    """Two steps requiring each other are E251 with the cycle spelled out."""
    text = broken("    type: shell\n", "    type: shell\n    requires: [call]\n")
    name = write(
        tmp_path, text.replace("    target: api\n", "    target: api\n    requires: [measure]\n")
    )
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert "E251" in run.output
    assert re.search(
        rf"^{name}:\d+:\d+: error E251: dependency cycle: (\S+ → )+\S+$", run.output, re.M
    )
    assert "measure" in run.output
    assert "call → measure" in run.output or "measure → call" in run.output


def test_requiring_an_unknown_step_suggests_the_close_one(tmp_path: Path) -> None:
    """requires: [mesure] is E250 at the list item with a "did you mean" hint."""
    name = write(tmp_path, broken("    target: api\n", "    target: api\n    requires: [mesure]\n"))
    run = drctl("validate", name, cwd=tmp_path)
    assert_refused(run)
    assert "requires unknown step 'mesure'" in diag_at(run, name, "E250", 19, 16)
    assert "did you mean 'measure'?" in run.output


# -- templates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "code", "fragment", "hint"),
    [
        (
            "{{ params.regoin }}",
            "E241",
            "unknown parameter params.regoin",
            "did you mean 'region'?",
        ),
        ("{{ parms.region }}", "E241", "unknown name 'parms'", "did you mean 'params'?"),
        ("{{ targets.apj.base_url }}", "E241", "unknown target targets.apj", "did you mean 'api'?"),
        ("{{ params.region ", "E240", "template syntax", None),
        ("{% if %}x{% endif %}", "E240", "template syntax", None),
        ("{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}", "E240", "nested too deeply", None),
        ("{{ steps.nothing.outputs.x }}", "E242", "steps.nothing, which is not a step", None),
    ],
    ids=["param", "name", "target", "unclosed", "bad-tag", "deep", "no-such-step"],
)
def test_bad_templates_are_positioned_at_the_field(
    tmp_path: Path, template: str, code: str, fragment: str, hint: str | None
) -> None:
    """A template error is reported at the field holding it, with a "did you mean" hint where one fits."""
    name = write(tmp_path, broken("{{ params.region }}", template))
    run = drctl("plan", name, "-p", "region=west", cwd=tmp_path)
    assert_refused(run)
    assert fragment in diag_at(run, name, code, 14, 16)
    if hint is not None:
        assert f"    hint: {hint}" in run.output


# -- params -------------------------------------------------------------------------


def test_a_missing_required_param_names_the_flag(tmp_path: Path) -> None:
    """plan without a required param is E230 at its declaration with the hint "-p region=VALUE", and nothing else."""
    name = write(tmp_path, VALID)
    run = drctl("plan", name, cwd=tmp_path)
    assert_refused(run)
    assert diag_at(run, name, "E230", 7, 3) == "parameter 'region' is required"
    assert "    hint: pass -p region=VALUE" in run.output
    # The templates reading the missing param add no second, confusing error.
    assert re.findall(r"error (E\d+|DR\d+)", run.output) == ["E230"]


def test_a_missing_param_with_choices_lists_them(tmp_path: Path) -> None:
    """A required param with choices names the flag and the choices."""
    text = broken(
        "region: {type: str, required: true}",
        "region: {type: str, choices: [east, west], required: true}",
    )
    name = write(tmp_path, text)
    run = drctl("plan", name, cwd=tmp_path)
    assert_refused(run)
    diag_at(run, name, "E230", 7, 3)
    assert "pass -p region=VALUE (one of: east, west)" in run.output


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_an_unknown_p_flag_names_the_flag(tmp_path: Path, command: str) -> None:
    """-p foo=1 for an undeclared param is E230 reported against "-p foo=1" itself."""
    name = write(tmp_path, VALID)
    run = drctl(command, name, "-p", "region=west", "-p", "foo=1", cwd=tmp_path)
    assert_refused(run)
    assert diag_whole_file(run, "-p foo=1", "E230") == "unknown parameter 'foo'"
    assert "declared: region" in run.output


def test_a_p_flag_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    """A -p flag holding a newline is quoted in the diagnostic, so the error stays one line."""
    name = write(tmp_path, VALID)
    run = drctl("plan", name, "-p", "region=west", "-p", "foo=a\nb", cwd=tmp_path)
    assert_refused(run)
    assert diag_whole_file(run, "-p 'foo=a\\nb'", "E230") == "unknown parameter 'foo'"


def test_a_misspelled_p_flag_suggests_the_param(tmp_path: Path) -> None:
    """-p regoin=west suggests 'region'."""
    name = write(tmp_path, VALID)
    run = drctl("plan", name, "-p", "regoin=west", cwd=tmp_path)
    assert_refused(run)
    assert diag_whole_file(run, "-p regoin=west", "E230") == "unknown parameter 'regoin'"
    assert "did you mean 'region'?" in run.output


@pytest.mark.parametrize("flag", ["region", "=west"])
def test_a_p_flag_without_name_equals_value_is_e230(tmp_path: Path, flag: str) -> None:
    """A -p flag that is not NAME=VALUE says the expected form."""
    name = write(tmp_path, VALID)
    run = drctl("plan", name, "-p", flag, cwd=tmp_path)
    assert_refused(run)
    assert diag_whole_file(run, f"-p {flag}", "E230") == "expected -p NAME=VALUE"


def test_a_bad_params_file_value_is_positioned_in_the_params_file(tmp_path: Path) -> None:
    """A params-file value of the wrong type is E230 at params-file:line:col."""
    name = write(tmp_path, VALID)
    params = write(tmp_path, "# values for the drill\nregion: [east, west]\n", "params.yaml")
    run = drctl("plan", name, "--params-file", params, cwd=tmp_path)
    assert_refused(run)
    assert diag_at(run, params, "E230", 2, 9) == "region: expected text, got a list"


def test_an_unknown_params_file_key_is_positioned_with_a_hint(tmp_path: Path) -> None:
    """An undeclared key in the params file is a W230 warning at the key, suggesting the declared one."""
    name = write(tmp_path, VALID)
    params = write(tmp_path, "regoin: west\n", "params.yaml")
    run = drctl("plan", name, "--params-file", params, cwd=tmp_path)
    assert_refused(run)  # region is still required
    warned = re.search(rf"^{re.escape(params)}:1:1: warning W230: (.*)$", run.output, re.M)
    assert warned and warned.group(1) == "1 key this runbook does not declare, ignored: regoin"
    assert "regoin: did you mean 'region'?" in run.output


@pytest.mark.parametrize(
    ("setup", "code", "fragment"),
    [
        ("missing", "E100", "no such file"),
        ("directory", "E100", "is a directory"),
        ("list", "E230", "a params file is a mapping"),
        ("binary", "E100", "binary data"),
    ],
)
def test_an_unreadable_params_file_is_reported_against_it(
    tmp_path: Path, setup: str, code: str, fragment: str
) -> None:
    """A params file that is missing, a directory, not a mapping or binary names the params file."""
    name = write(tmp_path, VALID)
    params = tmp_path / "params.yaml"
    if setup == "directory":
        params.mkdir()
    elif setup == "list":
        params.write_text("- west\n")
    elif setup == "binary":
        params.write_bytes(b"region: \x00\x01\x02")
    run = drctl("plan", name, "--params-file", params.name, cwd=tmp_path)
    assert_refused(run)
    assert fragment in diag_whole_file(run, params.name, code)


# -- values that only exist at run time ----------------------------------------------


@pytest.mark.parametrize(
    ("field", "code", "line", "col"),
    [
        ("roles", None, 0, 0),
        ("expect_exit", None, 0, 0),
        ("extra_field", "E201", 17, 7),
    ],
)
def test_run_time_values_in_typed_fields_never_crash(
    tmp_path: Path, field: str, code: str | None, line: int, col: int
) -> None:
    """A typed input filled from steps' outputs compiles or is refused cleanly; an unknown field stays E201."""
    # measure (steps[0]) reads the outputs of call, which now runs first.
    text = broken("  - id: measure\n", "  - id: measure\n    requires: [call]\n")
    text = text.replace(
        "      mutates: false\n",
        f'      mutates: false\n      {field}: "{{{{ steps.call.outputs.x }}}}"\n',
    )
    text = text.replace("    target: api\n", "    target: api\n    requires: []\n")
    name = write(tmp_path, text)
    run = drctl("validate", name, cwd=tmp_path)
    assert "Traceback" not in run.output
    assert "internal error" not in run.output, run.output
    if code is None:
        assert run.code == 0, run.output
    else:
        assert_refused(run)
        assert diag_at(run, name, code, line, col) == f"steps[0].with.{field}: unknown field"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "loops and macros are not allowed",
        ),
        ("{{ 2 ** 100000 }}", "larger than 4096 bits"),
        ("{{ 'x' * 1000000000 }}", "longer than 1000000"),
        ("{{ 'x' | center(1000000000) }}", "center filter's result would be larger"),
    ],
    ids=["nested-loop", "power", "repeat", "center"],
)
def test_a_runaway_template_is_refused_quickly(
    tmp_path: Path, template: str, fragment: str
) -> None:
    """Loops, huge repeats and huge exponents in a template are errors, not hangs or OOMs."""
    name = write(tmp_path, broken("{{ params.region }}", template))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "drctl", "validate", name],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=HANG_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("validate hung on a runaway template")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_named_pipe_with_no_writer_does_not_hang(tmp_path: Path) -> None:
    """validate on a FIFO nobody writes to gives up with E100 instead of blocking forever."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "drctl", "validate", str(fifo)],
        capture_output=True, text=True, cwd=tmp_path, timeout=40, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"{fifo}: error E100: no end of input from the pipe" in proc.stdout
