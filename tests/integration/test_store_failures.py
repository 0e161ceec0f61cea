"""The store fails, the run stops: the PostgreSQL store reconnects, and never acts on a lost lease.

The shared store is the machine's PostgreSQL (a fresh schema), reached through a TCP
proxy on a port the test owns (tcp_proxy.py), so a test can terminate exactly drctl's
server sessions or drop the proxy's packets (firewall.py) without touching anyone else's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.integration import firewall
from tests.integration.conftest import PG_ADMIN_URL
from tests.integration.tcp_proxy import TcpProxy, proxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: {name}}}
steps:
  - id: first
    type: shell
    with:
      command: "touch {d}/started; for i in $(seq 1200); do test -e {d}/go && break; sleep 0.05; done; echo 1 >> {d}/effects"
      verify: "grep -qx 1 {d}/effects"
  - id: second
    type: shell
    with:
      command: "echo 2 >> {d}/effects"
      verify: "grep -qx 2 {d}/effects"
"""


def _through(url: str, p: TcpProxy) -> str:
    """``url`` with its server address replaced by the proxy's."""
    assert "@127.0.0.1:5432/" in url, url
    return url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{p.port}/")


def _start(tmp_path: Path, name: str, url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    runbook = tmp_path / f"{name}.yaml"
    runbook.write_text(_RUNBOOK.format(name=name, d=tmp_path))
    run = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", str(runbook), "--yes", "--state", url],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the first step never started"
        time.sleep(0.05)
    return run


def _terminate_sessions_from(p: TcpProxy) -> int:
    """pg_terminate_backend on every server session that came through the proxy."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE client_port = ANY(%s) AND pid <> pg_backend_pid()",
            (p.upstream_ports,),
        ).fetchall()
    return sum(1 for (done,) in rows if done)


def test_terminated_store_backends_are_reconnected_and_the_run_goes_on(
    tmp_path: Path, pg_state_url: str
) -> None:
    """pg_terminate_backend on drctl's store sessions mid-run: it reconnects, each effect once."""
    with proxy(("127.0.0.1", 5432)) as p:
        url = _through(pg_state_url, p)
        run = _start(tmp_path, "terminated", url, {})
        try:
            assert _terminate_sessions_from(p) >= 1, "no drctl session to terminate"
        finally:
            (tmp_path / "go").touch()
        out, err = run.communicate(timeout=120)
    assert run.returncode == 0, f"{out}\n{err}"
    assert (tmp_path / "effects").read_text() == "1\n2\n"


def test_a_store_that_stops_answering_stops_the_run_before_its_next_step(
    tmp_path: Path, pg_state_url: str
) -> None:
    """Packets to the store dropped past the lease: the next step never acts; the stop says how to resume."""
    with proxy(("127.0.0.1", 5432)) as p:
        url = _through(pg_state_url, p)
        run = _start(tmp_path, "silent", url, {"DRCTL_LEASE_TTL": "2"})
        try:
            with firewall.drop("127.0.0.1", p.port, "store"):
                (tmp_path / "go").touch()
                # Longer than the lease: whatever answers after this is too late to act on.
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline and run.poll() is None:
                    time.sleep(0.1)
            out, err = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
        assert run.returncode == 1, f"{out}\n{err}"
        assert (tmp_path / "effects").read_text() == "1\n", "acted after the lease ran out"
        assert "drctl resume" in err and "Traceback" not in err, err
        assert "lease" in err or "state store" in err, err

        run_id = err.split("drctl resume ", 1)[1].split()[0].rstrip(".;")
        resumed = run_cli("resume", run_id, "--yes", "--state", url, cwd=str(tmp_path))
        assert resumed.returncode == 0, f"{resumed.stdout}\n{resumed.stderr}"
    assert (tmp_path / "effects").read_text() == "1\n2\n"


def test_an_unreachable_postgresql_store_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    """A PostgreSQL store nobody answers at: exit 2 naming --state, no traceback, no password shown."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        runbook = tmp_path / "rb.yaml"
        runbook.write_text(_RUNBOOK.format(name="nowhere", d=tmp_path))
        url = f"postgresql://drctl:hunter2secret@127.0.0.1:{port}/x"
        result = run_cli("run", str(runbook), "--yes", "--state", url)
    assert result.returncode == 2, result.stderr
    assert "--state: cannot reach the PostgreSQL store" in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "started").exists()
