"""Warnings said once before a run's first step: a machine-local lock, a store in the blast radius.

Through the real CLI, with a SQLite file and the machine's PostgreSQL (127.0.0.1:5432)
as stores; the runbook's targets point at the store's host and port or elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drctl.compiler.compile import compile_runbook
from drctl.engine.blast_radius import Endpoint, dsn_endpoints, store_warnings
from drctl.runbook.targets import SshTarget, TargetModel
from tests.conftest import run_cli

_LOCAL = "the run lock protects only this machine"
_BLAST = "inside the blast radius"

_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: {name}}}
targets:
  db: {{type: postgres, dsn: "host={host} port={port} dbname=postgres connect_timeout=1"}}
  box: {{type: ssh, host: {ssh_host}, user: drctl}}
steps:
  - id: cut
    type: shell
    fences: {fences}
    with: {{command: "true", verify: "true", roles: [fence]}}
"""


def _runbook(tmp_path: Path, name: str, **fields: object) -> str:
    values = {"host": "127.0.0.1", "port": 5432, "ssh_host": "10.9.9.9", "fences": "db", **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(_RUNBOOK.format(name=name, **values))
    return str(path)


def test_a_mutating_run_on_sqlite_says_once_its_lock_is_local(tmp_path: Path) -> None:
    """A mutating run on a SQLite store warns exactly once; its dry run does not."""
    path = _runbook(tmp_path, "local", port=1)
    state = str(tmp_path / "state.db")
    done = run_cli("run", path, "--yes", "--state", state)
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr
    assert shown.count(_LOCAL) == 1, shown
    assert _BLAST not in shown
    dry = run_cli("run", path, "--dry-run", "--state", state)
    assert dry.returncode == 0, dry.stderr
    assert _LOCAL not in dry.stdout + dry.stderr


@pytest.mark.integration
def test_a_store_on_the_fenced_server_is_inside_the_blast_radius(
    tmp_path: Path, pg_state_url: str
) -> None:
    """A PostgreSQL store on the host:port a fence step fences is named inside the blast radius."""
    inside = run_cli("run", _runbook(tmp_path, "inside"), "--yes", "--state", pg_state_url)
    assert inside.returncode == 0, inside.stderr
    shown = inside.stdout + inside.stderr
    assert shown.count(_BLAST) == 1 and "target db" in shown, shown
    assert _LOCAL not in shown
    # The same server on another port is another system: no warning.
    elsewhere = run_cli(
        "run", _runbook(tmp_path, "elsewhere", port=5999), "--yes", "--state", pg_state_url
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert _BLAST not in elsewhere.stdout + elsewhere.stderr


def test_an_etcd_member_on_a_fenced_ssh_host_is_inside_the_blast_radius(tmp_path: Path) -> None:
    """An etcd member on a host a fence step fences over SSH counts, whatever its port."""
    plan = compile_runbook(_runbook(tmp_path, "ssh", fences="box", ssh_host="10.0.0.7"))
    box = SshTarget.model_validate({"type": "ssh", "host": "10.0.0.7", "user": "drctl"})

    def target(name: str) -> TargetModel | None:
        return box if name == "box" else None

    members = [Endpoint("10.0.0.5", 2379), Endpoint("10.0.0.7", 2379)]
    said = store_warnings(plan, members, False, "etcd://…", target)
    assert len(said) == 1 and _BLAST in said[0] and "10.0.0.7" in said[0], said
    assert store_warnings(plan, members[:1], False, "etcd://…", target) == []


def test_dsn_endpoints_read_both_forms_and_skip_sockets() -> None:
    """Hosts and ports come from key=value DSNs and URLs alike; unix sockets are no endpoint."""
    assert dsn_endpoints("host=db1,db2 port=5433,5434 dbname=x", 5432) == (
        Endpoint("db1", 5433),
        Endpoint("db2", 5434),
    )
    assert dsn_endpoints("postgresql://u:pw@[::1]:6000,h2/db", 5432) == (
        Endpoint("::1", 6000),
        Endpoint("h2", 5432),
    )
    assert dsn_endpoints("host=/run/postgresql dbname=x", 5432) == ()
    assert Endpoint("localhost", 5432).overlaps(Endpoint("127.0.0.1", 5432))
    assert not Endpoint("localhost", 5432).overlaps(Endpoint("127.0.0.1", 5433))
