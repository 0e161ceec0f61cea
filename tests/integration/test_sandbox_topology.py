"""The N-standby sandbox and the three-node fixture that later tests build candidates with."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RUNBOOKS
from tests.integration.pg_sandbox import (
    ThreeNodes,
    _skip_without_postgres,
    drctl,
    execute,
    explain,
    free_base_port,
    in_recovery,
    journal,
    one,
    shared_dir,
    shared_three_nodes,  # noqa: F401
    wait_for,
)

PAIR_FAILOVER = str(RUNBOOKS / "sandbox-pg-pair-failover.yaml")
FAILOVER = str(RUNBOOKS / "sandbox-pg-failover.yaml")


def _sender_host(dsn: str) -> str | None:
    """The host a standby's walreceiver streams from now (None: it streams from nowhere)."""
    row = one(dsn, "SELECT sender_host FROM pg_stat_wal_receiver WHERE status = 'streaming'")
    return str(row) if row else None


# -- the fixture ---------------------------------------------------------------------------


@pytest.mark.integration
def test_each_standby_streams_from_the_primary(shared_three_nodes: ThreeNodes) -> None:  # noqa: F811
    """The fixture's two standbys both stream straight from the primary, under their names."""
    topo = shared_three_nodes
    assert not in_recovery(topo.primary.dsn)
    assert topo.streaming_to() == {"node2", "node3"}
    for standby in topo.standbys:
        assert in_recovery(standby.dsn)
        assert _sender_host(standby.dsn) == topo.primary.host
    lsn = topo.write_wal()
    for standby in topo.standbys:
        topo.wait_caught_up(standby)
        assert topo.replayed_lsn(standby) >= lsn


@pytest.mark.integration
def test_paused_replay_receives_wal_but_replays_none(shared_three_nodes: ThreeNodes) -> None:  # noqa: F811
    """pause_replay leaves a standby receiving everything and replaying nothing new."""
    topo = shared_three_nodes
    paused, other = topo.standbys
    topo.pause_replay(paused)
    try:
        before = topo.replayed_lsn(paused)
        written = topo.write_wal()
        wait_for(
            "the paused standby to receive the new WAL",
            lambda: topo.received_lsn(paused) >= written,
        )
        topo.wait_caught_up(other)
        # Received up to the primary's position, replay held where the pause found it.
        assert topo.replayed_lsn(paused) == before < written <= topo.received_lsn(paused)
        assert topo.replayed_lsn(other) >= written
        assert topo.streaming_to() == {"node2", "node3"}
    finally:
        topo.resume_replay(paused)
    topo.wait_caught_up(paused)
    assert topo.replayed_lsn(paused) >= written


@pytest.mark.integration
def test_stopped_receiver_receives_nothing_more(shared_three_nodes: ThreeNodes) -> None:  # noqa: F811
    """stop_receiving ends a standby's walreceiver: its received LSN stays behind the primary's."""
    topo = shared_three_nodes
    other, cut = topo.standbys
    topo.stop_receiving(cut)
    try:
        received = topo.received_lsn(cut)
        written = topo.write_wal()
        topo.wait_caught_up(other)
        assert topo.streaming_to() == {"node2"}
        assert _sender_host(cut.dsn) is None
        assert in_recovery(cut.dsn)
        # Still behind after the other standby caught up: nothing reaches it any more.
        assert topo.received_lsn(cut) == received < written <= topo.received_lsn(other)
        assert topo.replayed_lsn(cut) <= received
    finally:
        topo.resume_receiving(cut)
    topo.wait_caught_up(cut)
    assert topo.streaming_to() == {"node2", "node3"}


# -- drctl sandbox up --standbys N ------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("0", "--standbys must be at least 1, got 0"),
        ("-1", "--standbys must be at least 1, got -1"),
        ("253", "--standbys 253 needs loopback addresses past 127.0.0.254"),
    ],
)
def test_standbys_out_of_range_is_a_usage_error(tmp_path: Path, given: str, said: str) -> None:
    """A standby count the loopback layout cannot hold exits 2 naming --standbys, creating nothing."""
    root = tmp_path / "sb"
    done = drctl("sandbox", "up", "--dir", str(root), "--standbys", given)
    assert done.returncode == 2, explain(done)
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert not root.exists()


@pytest.fixture
def sandbox_dir() -> Iterator[tuple[Path, str]]:
    """A directory and base port for a sandbox made through the CLI; removed whatever happens."""
    _skip_without_postgres()
    parent = shared_dir("drctl-sbcli-")
    root = parent / "sb"
    try:
        yield root, str(free_base_port(width=3))
    finally:
        try:
            drctl("sandbox", "down", "--dir", str(root))
        finally:
            shutil.rmtree(parent, ignore_errors=True)


def _status(root: Path) -> dict[str, Any]:
    done = drctl("sandbox", "status", "--dir", str(root), "--format", "json")
    assert done.returncode == 0, explain(done)
    return dict(json.loads(done.stdout))


def _roles(status: dict[str, Any]) -> dict[str, str]:
    return {n["name"]: n["role"] for n in status["postgres"]["nodes"]}


def _params(root: Path) -> dict[str, Any]:
    lines = (root / "params.yaml").read_text().splitlines()
    return {k: json.loads(v) for k, _, v in (line.partition(": ") for line in lines)}


@pytest.mark.integration
def test_three_node_sandbox_fails_over_and_up_follows_the_roles(
    sandbox_dir: tuple[Path, str], tmp_path: Path
) -> None:
    """`up --standbys 2` makes three nodes; the pair runbook fails over to node2; `up` follows; `down` removes all."""
    root, port = sandbox_dir
    made = drctl("sandbox", "up", "--dir", str(root), "--base-port", port, "--standbys", "2")
    assert made.returncode == 0, explain(made)
    status = _status(root)
    nodes = status["postgres"]["nodes"]
    assert [(n["name"], n["host"], n["role"], n["running"]) for n in nodes] == [
        ("node1", "127.0.0.2", "primary", True),
        ("node2", "127.0.0.3", "standby", True),
        ("node3", "127.0.0.4", "standby", True),
    ]
    assert {n["port"] for n in nodes} == {int(port)}
    assert [(n["upstream"], n["streaming"]) for n in nodes] == [
        (None, False),
        ("node1", True),
        ("node1", True),
    ]
    assert all(Path(n["data_dir"]).is_dir() for n in nodes)
    assert status["postgres"]["primary"] == nodes[0]
    assert status["postgres"]["standby"] == nodes[1]
    assert status["dns"]["running"] and status["ssh"]["running"]
    params = _params(root)
    assert (params["primary_dsn"], params["standby_dsn"]) == (nodes[0]["dsn"], nodes[1]["dsn"])

    # Asking an existing sandbox for another number of standbys changes nothing.
    other = drctl("sandbox", "up", "--dir", str(root), "--standbys", "3")
    assert other.returncode == 2, explain(other)
    assert "--standbys 3" in other.stderr and "has 2" in other.stderr
    assert len(_status(root)["postgres"]["nodes"]) == 3

    run = drctl(
        "run", PAIR_FAILOVER, "--params-file", str(root / "params.yaml"), "--yes",
        "--state", str(tmp_path / "state.db"),
    )  # fmt: skip
    assert run.returncode == 0, explain(run)
    after = _status(root)
    assert _roles(after) == {"node1": "standby", "node2": "primary", "node3": "standby"}
    assert after["postgres"]["primary"]["name"] == "node2"
    # node1 rejoined node2, so it, not node3 (still following node1), is the standby a
    # fail-back promotes.
    assert after["postgres"]["standby"]["name"] == "node1"
    upstreams = {n["name"]: n["upstream"] for n in after["postgres"]["nodes"]}
    assert upstreams == {"node1": "node2", "node2": None, "node3": "node1"}
    text = drctl("sandbox", "status", "--dir", str(root))
    assert text.returncode == 0, explain(text)
    lines = {line.split()[0]: line.split()[1] for line in text.stdout.splitlines()[1:]}
    assert lines == {"node1": "standby", "node2": "primary", "node3": "standby"}

    assert _params(root)["primary_dsn"] == nodes[0]["dsn"]  # written before the failover
    again = drctl("sandbox", "up", "--dir", str(root))
    assert again.returncode == 0, explain(again)
    params = _params(root)
    assert (params["primary_dsn"], params["standby_dsn"]) == (nodes[1]["dsn"], nodes[0]["dsn"])
    assert (params["primary_host"], params["standby_host"]) == ("127.0.0.3", "127.0.0.2")
    topology = (root / "topology.yaml").read_text()
    assert 'primary_node: "node2"' in topology
    assert yaml.safe_load(topology)["standby_nodes"] == ["node1", "node3"]

    gone = drctl("sandbox", "down", "--dir", str(root))
    assert gone.returncode == 0, explain(gone)
    assert not root.exists()
    wait_for(
        "every node to stop listening",
        lambda: not any(_listening(n["host"], int(port)) for n in nodes),
    )


def _fail_over(root: Path, state: Path) -> tuple[str, list[dict[str, Any]]]:
    """`sandbox up`, then the README's runbook; the node it promoted and the run's events."""
    up = drctl("sandbox", "up", "--dir", str(root))
    assert up.returncode == 0, explain(up)
    run = drctl(
        "run", FAILOVER, "--params-file", str(root / "topology.yaml"), "--yes",
        "--state", str(state),
    )  # fmt: skip
    assert run.returncode == 0, explain(run)
    events = journal(state)
    chosen = next(
        e["data"]["outputs"]["target"]
        for e in events
        if e["kind"] == "step_succeeded" and e["step"] == "choose"
    )
    return str(chosen), events


def _check_failed_over_to(root: Path, chosen: str, events: list[dict[str, Any]]) -> None:
    """``chosen`` is the primary, every other node streams from it, the DNS name and a write follow."""
    import dns.resolver

    started = {e["step"]: e["data"] for e in events if e["kind"] == "step_started"}
    assert started["promote"]["target"] == chosen
    skipped = {e["step"] for e in events if e["kind"] == "step_skipped"}
    assert skipped == {f"follow[{chosen}]"}, skipped
    status = _status(root)
    nodes = {n["name"]: n for n in status["postgres"]["nodes"]}
    assert {n: v["role"] for n, v in nodes.items()} == {
        n: "primary" if n == chosen else "standby" for n in nodes
    }
    for name, node in nodes.items():
        if name != chosen:
            wait_for(
                f"{name} to stream from {chosen}",
                lambda node=node: _sender_host(node["dsn"]) == nodes[chosen]["host"],
            )
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [status["dns"]["server"]]
    resolver.port = int(status["dns"]["port"])
    answer = resolver.resolve(status["dns"]["name"], "A")
    assert [r.address for r in answer] == [nodes[chosen]["host"]]
    table = f"after_{chosen}_{len(events)}"
    execute(nodes[chosen]["dsn"], f"CREATE TABLE {table} AS SELECT 1 AS x")
    for name, node in nodes.items():
        if name != chosen:
            wait_for(
                f"{name} to replay the write on {chosen}",
                lambda node=node: one(node["dsn"], f"SELECT to_regclass('{table}') IS NOT NULL"),
            )


@pytest.mark.integration
def test_the_readme_runbook_fails_three_nodes_over_and_back(
    sandbox_dir: tuple[Path, str], tmp_path: Path
) -> None:
    """On a fresh three-node sandbox the README's runbook promotes the best standby, the other follows, the old primary rejoins and the DNS name moves; after `sandbox up` it fails back."""
    root, port = sandbox_dir
    made = drctl("sandbox", "up", "--dir", str(root), "--base-port", port)
    assert made.returncode == 0, explain(made)
    assert "sandbox-pg-failover.yaml --params-file" in made.stdout
    plan = drctl("plan", FAILOVER, "--params-file", str(root / "topology.yaml"))
    assert plan.returncode == 0, explain(plan)
    assert (
        "postgres.promote → decided at run time from steps.choose.outputs.target: "
        "one of node2, node3" in plan.stdout
    ), plan.stdout
    state = tmp_path / "state.db"

    first, events = _fail_over(root, state)
    assert first in ("node2", "node3")
    _check_failed_over_to(root, first, events)

    back, events = _fail_over(root, state)
    assert back != first
    _check_failed_over_to(root, back, events)


def _listening(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0
