"""A step's command does not outlive a killed drctl."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO


def _kill_drctl_while_running(tmp_path: Path, name: str, command: str) -> int:
    """Run a one-step runbook whose ``command`` writes a pid to ``{pidfile}``; kill -9
    drctl once that pid exists; return it."""
    pidfile = tmp_path / "pid"
    runbook = tmp_path / "rb.yaml"
    command = command.format(pidfile=pidfile)
    runbook.write_text(
        f"apiVersion: drctl/v1\nkind: Runbook\nmetadata: {{name: {name}}}\nsteps:\n"
        f"  - {{id: long, type: shell, with: {{command: '{command}', verify: 'true'}}}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", str(runbook), "--state", str(tmp_path / "s.db")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    assert Path(f"/proc/{child}").exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return child


def _gone_soon(pid: int) -> bool:
    """Whether ``pid`` ends (or is a zombie) within 30 s; killed by the test if not."""
    deadline = time.monotonic() + 30  # generous: the kill is asynchronous, the machine loaded
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().split()[2] == "Z":
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return False


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_kill_9_of_drctl_kills_the_running_command(tmp_path: Path) -> None:
    """After kill -9 of drctl the step's command is gone, so resume never races an unobserved copy."""
    child = _kill_drctl_while_running(tmp_path, "orphan", "echo $$ > {pidfile}; exec sleep 300")
    assert _gone_soon(child), "the command outlived drctl"


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_kill_9_of_drctl_kills_the_commands_background_children_too(tmp_path: Path) -> None:
    """A command's whole process group dies with drctl: a child it put in the background as well."""
    child = _kill_drctl_while_running(tmp_path, "orphans", "sleep 300 & echo $! > {pidfile}; wait")
    assert _gone_soon(child), "the command's background child outlived drctl"
