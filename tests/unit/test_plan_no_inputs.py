"""A step with no inputs shows no ``with.`` line in the plan (not ``with.: {}``)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_a_step_without_inputs_has_no_with_line(tmp_path: Path) -> None:
    """plan (text and markdown) prints nothing for an empty with; a nested empty mapping is still shown."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: n}\n"
        "steps:\n  - {id: gate, type: approve}\n"
        "  - {id: a, type: shell, with: {command: 'true', verify: 'true', env: {}}}\n"
    )
    for fmt in ("text", "markdown"):
        shown = run_cli("plan", str(path), "--format", fmt)
        assert shown.returncode == 0, shown.stderr
        assert "with.: {}" not in shown.stdout and "with.:" not in shown.stdout
        assert "with.env: {}" in shown.stdout
