"""The default state store is the user's own (XDG), seen from any directory; readers create nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.engine.conftest import HEAD


def _drctl(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m drctl ARGS`` in ``cwd`` with exactly the store settings in ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in ("DRCTL_STATE", "XDG_STATE_HOME")}
    return subprocess.run(
        [sys.executable, "-m", "drctl", *args],
        capture_output=True, text=True, env={**base, **env}, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip


def _one_step(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / "rb.yaml"
    path.write_text(
        HEAD + 'steps:\n  - {id: a, type: shell, with: {command: "true", mutates: false}}\n'
    )
    return path


def test_runs_are_seen_from_any_directory_of_the_same_user(tmp_path: Path) -> None:
    """A run started in one directory is listed by status, runs and log run from another, in $XDG_STATE_HOME/drctl."""
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = _drctl(here, "run", str(_one_step(here)), env=env)
    assert started.returncode == 0, started.stderr
    assert (tmp_path / "xdg" / "drctl" / "state.db").is_file()
    assert not (here / ".drctl").exists()

    listed = _drctl(elsewhere, "runs", "--output", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    run_id = json.loads(listed.stdout)[0]["id"]
    status = _drctl(elsewhere, "status", env=env)
    assert status.returncode == 0 and run_id in status.stdout, status.stderr
    log = _drctl(elsewhere, "log", run_id, env=env)
    assert log.returncode == 0 and "run finished: succeeded" in log.stdout, log.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == []


def test_without_xdg_state_home_the_store_is_under_the_home_directory(tmp_path: Path) -> None:
    """With XDG_STATE_HOME unset the default store is ~/.local/state/drctl/state.db."""
    env = {"HOME": str(tmp_path / "home")}
    started = _drctl(tmp_path, "run", str(_one_step(tmp_path / "rb")), env=env)
    assert started.returncode == 0, started.stderr
    assert (tmp_path / "home" / ".local" / "state" / "drctl" / "state.db").is_file()


def test_commands_about_existing_runs_create_nothing(tmp_path: Path) -> None:
    """status, runs, log, resume, abort and unlock with no store anywhere create no file or directory."""
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (
        ("status",), ("runs",), ("log", "x"), ("resume", "--last"),
        ("abort", "x", "--reason", "r"), ("unlock", "k", "--lease", "l", "--reason", "r"),
    ):  # fmt: skip
        done = _drctl(empty, *args, env=env)
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr
        assert list(empty.iterdir()) == [], (
            f"drctl {' '.join(args)} created {list(empty.iterdir())}"
        )
        assert not (tmp_path / "xdg").exists(), f"drctl {' '.join(args)} created the store"


def test_an_explicit_store_wins_and_an_old_local_store_is_pointed_out(tmp_path: Path) -> None:
    """--state and DRCTL_STATE still choose the store; a ./.drctl/state.db not in use is named on stderr."""
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    rb = _one_step(tmp_path / "rb")
    old = tmp_path / "old"
    old.mkdir()
    legacy = _drctl(old, "run", str(rb), "--state", ".drctl/state.db", env=env)
    assert legacy.returncode == 0, legacy.stderr
    assert "note:" not in legacy.stderr  # the old store is the one in use

    listed = _drctl(old, "runs", env=env)
    assert listed.returncode != 0  # the user's store holds nothing yet
    assert ".drctl/state.db exists here but is not the state store in use" in listed.stderr
    assert "--state .drctl/state.db" in listed.stderr
    via_env = _drctl(old, "runs", env={**env, "DRCTL_STATE": ".drctl/state.db"})
    assert via_env.returncode == 0 and "succeeded" in via_env.stdout, via_env.stderr
    assert "note:" not in via_env.stderr
