"""A partition: the old primary alive and serving its own clients, but unreachable from drctl.

Real firewall rules on loopback: the old primary listens on its sandbox address (its
region's clients and the standby's replication) and on a second loopback address (the
path drctl uses); a DROP rule cuts the second only. A writer keeps committing through 127.0.0.1 with synchronous
replication (``remote_apply``: RPO 0 as configured) and counts what was acknowledged.
Without a fence that does not need the old primary to answer, drctl refuses and says
what to do; with a ``shell`` fence step that ``fences: old_primary`` by cutting its
clients' path (a second rule), the promote takes that journaled fence as its proof, the
failover completes, no acknowledged write is lost, and a prober that asks each server
through the clients' path whether it takes writes never sees both say yes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from tests.integration import firewall
from tests.integration.moto_server import (  # noqa: F401
    MotoServer,
    aws_env_fixture,
    moto_fixture,
    moto_server_fixture,
)
from tests.integration.pg_sandbox import (
    CLI_TIMEOUT,
    WAIT,
    Pair,
    drctl,
    execute,
    explain,
    free_port,
    in_recovery,
    journal,
    one,
    query,
    run_id_of,
    sandbox,  # noqa: F401
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def drctl_path(port: int) -> str:
    """The old primary's second address (its own per port): drctl's, which the partition cuts."""
    return f"127.254.{port // 256 % 256}.{port % 256 or 1}"


#: A dead TCP peer is noticed within about this many seconds (keepalives, user timeout).
_DEAD_PEER = {
    "connect_timeout": 1,
    "keepalives": 1,
    "keepalives_idle": 1,
    "keepalives_interval": 1,
    "keepalives_count": 1,
    "tcp_user_timeout": 1000,
}

_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: {name}}}
targets:
  old_primary: {{type: postgres, dsn: "{old_dsn}"}}
  standby: {standby}
settings: {{step_timeout: 30s}}
steps:
  - id: check-lag
    type: postgres.replication_lag
    target: standby
    with: {{primary: old_primary, primary_unreachable: warn}}
{fence}  - id: promote
    type: postgres.promote
    target: standby
    with: {{old_primary: old_primary, catchup_seconds: 1}}
{ack}"""


@dataclass
class Traffic:
    """A writer through the clients' path, and probers asking each server if it takes writes."""

    client_dsn: str
    new_dsn: str
    stop: threading.Event = field(default_factory=threading.Event)
    #: (id, monotonic time) of every insert the old primary acknowledged.
    acked: list[tuple[int, float]] = field(default_factory=list)
    #: Monotonic times at which a server answered "writable" through the clients' path.
    old_writable: list[float] = field(default_factory=list)
    new_writable: list[float] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self._write, daemon=True),
            threading.Thread(target=self._probe, args=(self.client_dsn, self.old_writable)),
            threading.Thread(target=self._probe, args=(self.new_dsn, self.new_writable)),
        ]
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)
        assert not any(t.is_alive() for t in self.threads), "traffic threads did not stop"

    def _alive(self, until: float) -> bool:
        return not self.stop.is_set() and time.monotonic() < until

    def _write(self) -> None:
        import psycopg

        until, n, conn = time.monotonic() + 4 * CLI_TIMEOUT, 0, None
        while self._alive(until):
            try:
                if conn is None:
                    conn = psycopg.connect(self.client_dsn, autocommit=True, **_DEAD_PEER)
                    conn.execute("SET synchronous_commit = remote_apply")
                n += 1
                conn.execute("INSERT INTO acked (id) VALUES (%s)", (n,))
                self.acked.append((n, time.monotonic()))
            except psycopg.Error:
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                self.stop.wait(0.05)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _probe(self, dsn: str, seen: list[float]) -> None:
        import psycopg

        until = time.monotonic() + 4 * CLI_TIMEOUT
        sql = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"
        while self._alive(until):
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(dsn, autocommit=True, **_DEAD_PEER) as conn,
            ):
                row = conn.execute(sql).fetchone()
                if row is not None and row[0]:
                    seen.append(time.monotonic())
            self.stop.wait(0.05)


def _listen_on_both(pair: Pair) -> None:
    """Restart the old primary listening on its address (clients) and drctl_path (drctl)."""
    from drctl.sandbox.pgnode import as_user

    node = next(n for n in pair.sandbox.nodes if n.name == pair.node1.name)
    node.stop()
    options = f"{node.start_options} -c listen_addresses={node.host},{drctl_path(node.port)}"
    argv = [str(node.bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(node.data_dir),
            "-l", str(node.log_file), "-o", options]  # fmt: skip
    done = subprocess.run(
        as_user(node.user, argv), capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr
    # Synchronous replication: an acknowledged commit is applied on the standby (RPO 0).
    execute(pair.node1.dsn, "ALTER SYSTEM SET synchronous_standby_names = '*'")
    execute(pair.node1.dsn, "SELECT pg_reload_conf()")
    synchronous = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
    wait_for("the standby to be synchronous", lambda: one(pair.node1.dsn, synchronous) == 1)
    execute(pair.node1.dsn, "CREATE TABLE acked (id bigint PRIMARY KEY)")


@pytest.fixture
def partitioned(sandbox: Pair) -> Iterator[Pair]:  # noqa: F811
    """The sandbox with drctl's path to the old primary cut (the rule always removed)."""
    _listen_on_both(sandbox)
    with firewall.drop(drctl_path(sandbox.node1.port), sandbox.node1.port, "partition"):
        yield sandbox


def _write(tmp_path: Path, pair: Pair, name: str, fence: str, ack: str) -> str:
    old_dsn = (
        f"host={drctl_path(pair.node1.port)} port={pair.node1.port} dbname=postgres "
        "user=postgres connect_timeout=2"
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        _RUNBOOK.format(
            name=name, old_dsn=old_dsn, standby=pair.target_yaml(pair.node2), fence=fence, ack=ack
        )
    )
    return str(path)


def _fence_step(spec: list[str]) -> str:
    """A shell fence step that cuts the old primary's clients' path with a firewall rule."""
    return (
        "  - id: cut-clients\n    type: shell\n    fences: old_primary\n    with:\n"
        "      roles: [fence]\n"
        f"      command: {json.dumps(firewall.shell_line('-I', spec))}\n"
        f"      verify: {json.dumps(firewall.shell_line('-C', spec))}\n"
        f"      undo: {json.dumps(firewall.shell_line('-D', spec))}\n"
    )


@pytest.mark.integration
def test_a_partitioned_primary_is_fenced_by_cutting_its_clients(
    partitioned: Pair,
    tmp_path: Path,
) -> None:
    """Refused without a control-plane fence; with one, failed over with no acked write lost, never two writable."""
    pair = partitioned
    client = pair.node1.dsn  # its sandbox address: the old primary's own region
    traffic = Traffic(client, pair.node2.dsn)
    fence_spec = firewall.rule(pair.node1.host, pair.node1.port, "fence")
    state = tmp_path / "state.db"
    traffic.start()
    try:
        wait_for("the writer to commit", lambda: len(traffic.acked) >= 20)

        # 1. No fence that works without the old primary answering: refused, with the way out.
        blind = _write(tmp_path, pair, "blind", "", "    acknowledge: [DR001]\n")
        before = len(traffic.acked)
        refused = drctl("run", blind, "--yes", "--state", str(state))
        assert refused.returncode == 1, explain(refused)
        assert "the old primary old_primary does not answer" in refused.stderr, explain(refused)
        assert "fences: old_primary" in refused.stderr and "force: true" in refused.stderr
        assert in_recovery(pair.node2.dsn), "promoted beside a primary that takes writes"
        assert len(traffic.acked) > before, "the old primary stopped serving its own clients"

        # 2. A fence step that cuts the old primary's clients, naming what it fences.
        fenced = _write(tmp_path, pair, "fenced", _fence_step(fence_spec), "")
        done = drctl("run", fenced, "--yes", "--state", str(state))
        assert done.returncode == 0, explain(done)
        assert "fence proof: old_primary fenced by fence step cut-clients" in done.stdout + (
            done.stderr
        ), explain(done)
        wait_for("the new primary to take writes", lambda: bool(traffic.new_writable), WAIT)
    finally:
        traffic.finish()
        firewall.remove(fence_spec)

    promoted = [
        e for e in journal(state, run_id_of(done)) if e["kind"] == "step_succeeded"
        and e.get("step") == "promote"
    ]  # fmt: skip
    assert promoted, "no promote in the journal"
    assert "cut-clients" in json.dumps(promoted[0]), promoted[0]

    acked = {i for i, _ in traffic.acked}
    on_new = {int(r[0]) for r in query(pair.node2.dsn, "SELECT id FROM acked")}
    assert len(acked) >= 20
    assert acked <= on_new, f"acknowledged writes lost: {sorted(acked - on_new)[:10]}"
    # Never two writable primaries: the old one's last "writable" (and last ack) came
    # before the new one's first.
    first_new = min(traffic.new_writable)
    assert traffic.old_writable and max(traffic.old_writable) < first_new
    assert max(t for _, t in traffic.acked) < first_new


@pytest.mark.integration
def test_a_control_plane_fence_naming_the_old_primary_satisfies_a_promote_without_one(
    sandbox: Pair,  # noqa: F811
    moto: MotoServer,
    tmp_path: Path,
) -> None:
    """aws.ec2_stop with fences: old_primary (moto) is the proof for a promote that names no old_primary."""
    ec2 = boto3.client("ec2", endpoint_url=moto.endpoint, region_name="eu-west-1")
    reply = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    instance = str(reply["Instances"][0]["InstanceId"])
    # The old primary's host does not answer at all: only the control plane reaches it.
    gone = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=1"
    path = tmp_path / "ec2.yaml"
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: ec2-proof}\n"
        f'targets:\n  old_primary: {{type: postgres, dsn: "{gone}"}}\n'
        f"  standby: {sandbox.target_yaml(sandbox.node2)}\n"
        f'  ec2: {{type: aws, region: eu-west-1, endpoint_url: "{moto.endpoint}"}}\n'
        "settings: {step_timeout: 30s}\n"
        "steps:\n"
        "  - {id: check-lag, type: postgres.replication_lag, target: standby}\n"
        "  - id: stop-old\n    type: aws.ec2_stop\n    target: ec2\n    fences: old_primary\n"
        f"    with: {{instance_ids: [{instance}], poll_interval: 0.1s}}\n"
        "  - id: promote\n    type: postgres.promote\n    target: standby\n"
        "    with: {catchup_seconds: 1}\n"
    )
    state = tmp_path / "state.db"
    done = drctl("run", str(path), "--yes", "--state", str(state))
    assert done.returncode == 0, explain(done)
    assert "fence proof: old_primary fenced by fence step stop-old" in done.stdout, explain(done)
    assert not in_recovery(sandbox.node2.dsn)
    state_name = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"]
    assert state_name[0]["State"]["Name"] == "stopped"
    promoted = [
        e for e in journal(state, run_id_of(done))
        if e["kind"] == "step_succeeded" and e.get("step") == "promote"
    ]  # fmt: skip
    assert promoted and "stop-old" in promoted[0]["data"]["outputs"]["fence_proof"]
