"""Shared fixtures: writing runbooks to temp files and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNBOOKS = REPO / "runbooks"


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's default state store is its own (XDG_STATE_HOME), never the user's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def write_runbook(tmp_path: Path) -> Callable[..., str]:
    """Write YAML text (dedented) to a file in tmp_path and return its path."""

    def write(text: str, name: str = "runbook.yaml") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return str(path)

    return write


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real ``drctl`` in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "drctl", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or str(REPO),
        timeout=timeout,
        check=False,
    )


_LOADED_AFTER = """
import json, sys
from drctl.cli.app import main
wanted = json.loads(sys.argv[1])
sys.argv = ["drctl", *sys.argv[2:]]
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
sys.stderr.write("LOADED " + json.dumps([code, sorted(m for m in wanted if m in sys.modules)]) + "\\n")
"""


def loaded_by_cli(
    modules: list[str], *args: str, timeout: float = 60
) -> tuple[object, set[str], subprocess.CompletedProcess[str]]:
    """Run ``drctl ARGS`` in a fresh interpreter: its exit code and which of ``modules`` it loaded."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", _LOADED_AFTER, json.dumps(modules), *args],
        capture_output=True, text=True, cwd=str(REPO), timeout=timeout, check=False,
    )  # fmt: skip
    found = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    assert found, done.stdout + done.stderr
    code, loaded = json.loads(found[-1].removeprefix("LOADED "))
    return code, set(loaded), done
