"""The docs: generated pages are current, the staleness check bites, and what they name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drctl import errors
from drctl.compiler.lints import TITLES
from drctl.compiler.schema import runbook_schema
from drctl.render import reference
from drctl.runbook.targets import TARGET_TYPES
from drctl.steps.registry import is_known, step_type_names
from tests.conftest import REPO, run_cli

DOCS = REPO / "docs"


def test_committed_generated_docs_are_current() -> None:
    """`drctl docs --check` passes on the committed docs (run `drctl docs` when this fails)."""
    result = run_cli("docs", "--check")
    assert result.returncode == 0, result.stderr
    assert "stale" not in result.stderr


def test_check_fails_and_names_a_page_changed_by_one_byte(tmp_path: Path) -> None:
    """Changing one byte of one generated page makes the check exit 1 naming only that page."""
    written = run_cli("docs", "--dir", str(tmp_path))
    assert written.returncode == 0, written.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(reference.PAGES)
    assert run_cli("docs", "--check", "--dir", str(tmp_path)).returncode == 0
    page = tmp_path / "exit-codes.md"
    data = bytearray(page.read_bytes())
    data[len(data) // 2] ^= 0x01
    page.write_bytes(bytes(data))
    result = run_cli("docs", "--check", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "exit-codes.md" in result.stderr
    assert "step-catalogue.md" not in result.stderr
    assert "runbook-reference.md" not in result.stderr
    assert page.read_bytes() == bytes(data), "--check must not rewrite anything"


def test_check_reports_a_missing_page_and_docs_restores_it(tmp_path: Path) -> None:
    """A deleted generated page is stale, and `drctl docs` writes back exactly that page."""
    assert reference.write_all(tmp_path) == list(reference.PAGES)
    (tmp_path / "step-catalogue.md").unlink()
    assert reference.stale(tmp_path) == ["step-catalogue.md"]
    assert reference.write_all(tmp_path) == ["step-catalogue.md"]
    assert reference.stale(tmp_path) == []


def test_generated_pages_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """Two interpreters with different PYTHONHASHSEED generate byte-identical pages."""
    outputs = []
    for seed in ("1", "4242"):
        out = tmp_path / seed
        result = run_cli("docs", "--dir", str(out), env={"PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        outputs.append({name: (out / name).read_bytes() for name in reference.PAGES})
    assert outputs[0] == outputs[1]
    assert outputs[0] == {name: text.encode() for name, text in reference.render_all().items()}


@pytest.mark.parametrize("name", sorted(reference.PAGES))
def test_generated_page_starts_with_generated_by_comment(name: str) -> None:
    """Each generated page's first line is a comment naming the command that regenerates it."""
    first = (DOCS / name).read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("<!-- Generated ")
    assert "`drctl docs`" in first
    assert first.endswith("-->")


def test_step_catalogue_documents_exactly_the_registered_step_types() -> None:
    """Every step type in the catalogue and the reference is registered, and vice versa."""
    catalogue = re.findall(r"^## `([^`]+)`$", (DOCS / "step-catalogue.md").read_text(), re.M)
    in_reference = re.findall(
        r"^\| \[`([^`]+)`\]\(step-catalogue\.md#", (DOCS / "runbook-reference.md").read_text(), re.M
    )
    assert catalogue == step_type_names()
    assert in_reference == step_type_names()
    assert all(is_known(name) for name in catalogue)


def test_documented_error_codes_are_the_real_ones() -> None:
    """The E-codes and DR-codes in exit-codes.md are exactly those in diagnostics.py and the lints."""
    text = (DOCS / "exit-codes.md").read_text()
    real = {code for code, _, _ in reference.error_codes()}
    assert set(re.findall(r"\| `([EW]\d{3})` \|", text)) == real
    assert set(re.findall(r"\| `(DR\d{3})` \|", text)) == set(TITLES)
    assert set(reference.ERROR_CODE_DOCS) <= real, "a described code no longer exists"
    assert {"E100", "E200", "E290"} <= real


def test_documented_error_classes_exist_with_their_exit_codes() -> None:
    """Each error class row in exit-codes.md names a real DrctlError with that exit code."""
    rows = re.findall(r"`(\w+)` \| (\d+) \|", (DOCS / "exit-codes.md").read_text())
    assert len(rows) >= 10
    for name, code in rows:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.DrctlError)
        assert cls.exit_code == int(code), name


def test_exit_code_table_covers_every_error_class_exit_code() -> None:
    """Every exit code an error class can produce is explained in the exit-code table."""
    explained = {code for code, _, _ in reference.EXIT_CODES}
    assert {e.exit_code for e in reference.error_classes()} <= explained
    assert {0, 1, 2, 3, 4, 130} <= explained


def test_field_docs_describe_only_fields_that_exist() -> None:
    """Every hand-kept field description names a field of the runbook schema or a target model."""
    defs = runbook_schema()["$defs"]
    models = {"Runbook": runbook_schema()}
    models.update({name: defs[name] for name in defs if not name.startswith(("with:", "target:"))})
    models.update({cls.__name__: defs[f"target:{kind}"] for kind, cls in TARGET_TYPES.items()})
    for key in reference.FIELD_DOCS:
        model, field = key.split(".", 1)
        assert field in models[model]["properties"], key


def test_reference_marks_every_secret_target_field() -> None:
    """Each target type's secret fields are listed and marked secret in the runbook reference."""
    text = (DOCS / "runbook-reference.md").read_text()
    for kind, cls in TARGET_TYPES.items():
        section = text.split(f'<a id="target-{kind}"></a>', 1)[1].split("<a id=", 1)[0]
        for field in cls.secret_fields:
            assert re.search(rf"^\| `{field}` \|.*\*\*Secret\.\*\*", section, re.M), (kind, field)
        for field in cls.model_fields:
            assert f"| `{field}` |" in section, (kind, field)


def test_reference_documents_every_top_level_and_step_field() -> None:
    """Every top-level runbook field and step field in the schema has a row in the reference."""
    schema = runbook_schema()
    text = (DOCS / "runbook-reference.md").read_text()
    for field in [*schema["properties"], *schema["$defs"]["StepSpec"]["properties"]]:
        assert f"| `{field}` |" in text, field


def test_relative_links_between_docs_resolve() -> None:
    """Every relative markdown link in docs/ points at a file that exists."""
    for page in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


_CLIENT_PROBE = """
import sys
from drctl.cli.app import main
sys.argv = ["drctl", "docs", "--check"]
try:
    main()
except SystemExit:
    pass
clients = ("psycopg", "pymongo", "boto3", "botocore", "paramiko", "dns")
sys.stderr.write("CLIENTS " + ",".join(sorted(m for m in clients if m in sys.modules)) + "\\n")
"""


def test_docs_command_imports_no_client_library() -> None:
    """`drctl docs --check` renders every page without loading a database, cloud or SSH client."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _CLIENT_PROBE],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    line = next(x for x in result.stderr.splitlines() if x.startswith("CLIENTS "))
    assert line == "CLIENTS ", line
