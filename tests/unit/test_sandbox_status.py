"""The sandbox status's aliases and JSON shape, from node states given directly."""

from __future__ import annotations

from pathlib import Path

from drctl.sandbox.status import DnsStatus, NodeRole, NodeStatus, SandboxStatus, SshStatus


def _node(
    name: str, role: NodeRole, upstream: str | None = None, streaming: bool = False
) -> NodeStatus:
    host = f"127.0.0.{int(name[-1]) + 1}"
    return NodeStatus(
        name=name, host=host, port=5432, dsn=f"host={host} port=5432", role=role,
        data_dir=Path("/pg") / name, running=role is not NodeRole.unknown,
        start_options=f"-p 5432 -c listen_addresses={host}", upstream=upstream,
        streaming=streaming,
    )  # fmt: skip


def _status(*nodes: NodeStatus) -> SandboxStatus:
    return SandboxStatus(
        root=Path("/sb"),
        os_user="postgres",
        bin_dir=Path("/bin"),
        nodes=nodes,
        dns=DnsStatus("127.0.0.1", 5433, "z.", "db.z.", True),
        ssh=SshStatus("127.0.0.1", 5434, "root", Path("/k"), Path("/kh"), True),
    )


def test_standby_alias_prefers_a_standby_that_follows_the_primary() -> None:
    """After a failover the standby alias names the rejoined node, not one left on the old timeline."""
    status = _status(
        _node("node1", NodeRole.unknown),
        _node("node2", NodeRole.primary),
        _node("node3", NodeRole.standby, upstream="node1"),  # the old primary's follower
        _node("node4", NodeRole.standby, upstream="node2"),
    )
    assert status.primary is not None and status.primary.name == "node2"
    assert status.standby is not None and status.standby.name == "node4"


def test_standby_alias_does_not_depend_on_who_streams_first() -> None:
    """Two standbys following the primary: the alias is the first, even while only the second streams."""
    status = _status(
        _node("node1", NodeRole.primary),
        _node("node2", NodeRole.standby, upstream="node1", streaming=False),
        _node("node3", NodeRole.standby, upstream="node1", streaming=True),
    )
    assert status.standby is not None and status.standby.name == "node2"


def test_standby_alias_falls_back_to_the_first_standby() -> None:
    """With no standby following the primary, the alias is the first standby in node order."""
    status = _status(
        _node("node1", NodeRole.primary),
        _node("node2", NodeRole.standby, upstream="node3"),
        _node("node3", NodeRole.standby),
    )
    assert status.standby is not None and status.standby.name == "node2"


def test_no_aliases_while_the_roles_are_unclear() -> None:
    """Two primaries (split brain) give no primary alias; the JSON still lists every node."""
    shape = _status(_node("node1", NodeRole.primary), _node("node2", NodeRole.primary)).to_json()
    assert "primary" not in shape["postgres"] and "standby" not in shape["postgres"]
    assert [n["role"] for n in shape["postgres"]["nodes"]] == ["primary", "primary"]


def test_json_lists_every_node_with_the_aliases_as_copies() -> None:
    """status --format json: every node's fields under postgres.nodes, primary/standby copies of two."""
    shape = _status(
        _node("node1", NodeRole.primary),
        _node("node2", NodeRole.standby, upstream="node1", streaming=True),
        _node("node3", NodeRole.standby, upstream="node1", streaming=True),
    ).to_json()
    nodes = shape["postgres"]["nodes"]
    assert set(nodes[0]) >= {"name", "host", "port", "dsn", "role", "data_dir", "running"}
    assert [n["name"] for n in nodes] == ["node1", "node2", "node3"]
    assert shape["postgres"]["primary"] == nodes[0]
    assert shape["postgres"]["standby"] == nodes[1]
    assert nodes[1] == {
        "name": "node2", "host": "127.0.0.3", "port": 5432, "dsn": "host=127.0.0.3 port=5432",
        "role": "standby", "data_dir": "/pg/node2", "running": True,
        "start_options": "-p 5432 -c listen_addresses=127.0.0.3", "upstream": "node1",
        "streaming": True,
    }  # fmt: skip
