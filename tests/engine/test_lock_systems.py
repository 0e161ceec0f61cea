"""The default lock names the systems a runbook changes; settings templates render or are refused."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli
from tests.integration.pg_sandbox import free_port

_FIRST = """apiVersion: drctl/v1
kind: Runbook
metadata: {name: failover-one}
targets:
  db: {type: postgres, dsn: "${env:ONE_DSN}"}
steps:
  - {id: hold, type: wait, with: {duration: 60s}}
  - {id: fence, type: postgres.fence, target: db, with: {mode: read_only}}
acknowledge: [DR004]
"""

_SECOND = """apiVersion: drctl/v1
kind: Runbook
metadata: {name: maintenance-two}
targets:
  primary: {type: postgres, dsn: "${env:TWO_DSN}"}
steps:
  - {id: fence-too, type: postgres.fence, target: primary, with: {mode: read_only}}
"""


def _read_until(proc: subprocess.Popen[str], needle: str, within: float = 60.0) -> str:
    """Lines of ``proc``'s stdout up to the first holding ``needle``, bounded in time."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + within
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} within {within}s; saw:\n{seen}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            assert line, f"the process ended before {needle!r}; saw:\n{seen}"
            seen += line
    return seen


def test_two_runbooks_on_one_server_exclude_each_other(tmp_path: Path) -> None:
    """Two differently named runbooks changing one PostgreSQL server (named two ways) cannot run at once: the second exits 3 naming the first."""
    port = free_port()
    env = {
        "ONE_DSN": f"host=127.0.0.1 port={port} dbname=postgres user=postgres password=sekrit1",
        "TWO_DSN": f"postgresql://postgres:sekrit2@127.0.0.1:{port}/postgres",
    }
    (tmp_path / "one.yaml").write_text(_FIRST)
    (tmp_path / "two.yaml").write_text(_SECOND)
    state = str(tmp_path / "state.db")
    first = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", "one.yaml", "--state", state],
        cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        started = _read_until(first, " started: ")
        assert f"lock postgres:127.0.0.1:{port}/postgres token 1" in started
        second = run_cli("run", "two.yaml", "--state", state, cwd=str(tmp_path), env=env)
        assert second.returncode == 3, second.stdout + second.stderr
        assert f"lock 'postgres:127.0.0.1:{port}/postgres' is held" in second.stderr, second.stderr
        assert "sekrit" not in second.stdout + second.stderr + started
    finally:
        first.kill()
        first.wait(timeout=30)
        assert first.stdout is not None
        first.stdout.close()


def test_a_templated_lock_is_rendered_never_used_literally(tmp_path: Path) -> None:
    """settings.lock: "pg-{{ params.env }}" locks pg-prod with -p env=prod."""
    (tmp_path / "rb.yaml").write_text(
        """apiVersion: drctl/v1
kind: Runbook
metadata: {name: t}
params: {env: {type: str, required: true}}
settings: {lock: "pg-{{ params.env }}"}
steps:
  - {id: a, type: shell, with: {command: "true", mutates: false}}
"""
    )
    done = run_cli("run", "rb.yaml", "-p", "env=prod", "--state", "s.db", cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "lock pg-prod token 1" in done.stdout
    assert "{{" not in done.stdout


def test_a_lock_template_that_cannot_render_is_refused_at_its_line(tmp_path: Path) -> None:
    """A settings.lock template naming an unknown param, or steps' outputs, is a compile error at settings.lock's file:line:col."""
    base = """apiVersion: drctl/v1
kind: Runbook
metadata: {{name: t}}
params: {{env: {{type: str, default: x}}}}
settings:
  lock: "{lock}"
steps:
  - {{id: a, type: shell, with: {{command: "true", mutates: false}}}}
"""
    for lock, words in (
        ("pg-{{ params.nope }}", "unknown parameter params.nope"),
        ("pg-{{ steps.a.outputs.stdout }}", "settings.lock cannot read steps' outputs"),
    ):
        (tmp_path / "rb.yaml").write_text(base.format(lock=lock))
        refused = run_cli("validate", "rb.yaml", cwd=str(tmp_path))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        out = refused.stdout + refused.stderr
        assert "rb.yaml:6:" in out and words in out, out
