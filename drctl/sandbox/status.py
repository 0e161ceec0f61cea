"""What a sandbox looks like right now: every node with its live role, DNS and sshd.

``SandboxStatus`` is what ``Sandbox.up`` and ``Sandbox.status`` return; ``to_json`` is
the one place it becomes the ``status --format json`` mapping and the params files.
The roles are read from the servers, not remembered: after a failover they move.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class NodeRole(StrEnum):
    """A node's live role, from ``pg_is_in_recovery()``."""

    primary = "primary"
    standby = "standby"
    #: Stopped, or running but not answering queries.
    unknown = "unknown"


@dataclass(frozen=True)
class NodeStatus:
    """One PostgreSQL server of the sandbox as it is now."""

    name: str
    host: str
    port: int
    dsn: str
    role: NodeRole
    data_dir: Path
    running: bool
    #: pg_ctl ``-o`` options: per-node settings kept out of the data directory.
    start_options: str
    #: The node this standby's primary_conninfo names (None: a primary, or names no node).
    upstream: str | None
    #: Whether this standby's walreceiver streams from its upstream now.
    streaming: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "host": self.host, "port": self.port, "dsn": self.dsn,
            "role": str(self.role), "data_dir": str(self.data_dir), "running": self.running,
            "start_options": self.start_options, "upstream": self.upstream,
            "streaming": self.streaming,
        }  # fmt: skip


@dataclass(frozen=True)
class DnsStatus:
    server: str
    port: int
    zone: str
    name: str
    running: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server, "port": self.port, "zone": self.zone, "name": self.name,
            "running": self.running,
        }  # fmt: skip


@dataclass(frozen=True)
class SshStatus:
    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    running: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host, "port": self.port, "user": self.user,
            "key_file": str(self.key_file), "known_hosts": str(self.known_hosts),
            "running": self.running,
        }  # fmt: skip


@dataclass(frozen=True)
class SandboxStatus:
    root: Path
    os_user: str
    bin_dir: Path
    nodes: tuple[NodeStatus, ...]
    dns: DnsStatus
    ssh: SshStatus

    @property
    def primary(self) -> NodeStatus | None:
        """The one primary; None when there is none or more than one (split brain)."""
        primaries = [n for n in self.nodes if n.role is NodeRole.primary]
        return primaries[0] if len(primaries) == 1 else None

    @property
    def standby(self) -> NodeStatus | None:
        """The first standby (in node order) that follows the primary, else the first standby.

        Following first, so that after a failover the alias names a standby a fail-back
        can promote, not one left behind on the old timeline. What a standby follows is
        its configuration, not whether it streams this instant, so the choice does not
        depend on which walreceiver reconnected first after a restart.
        """
        standbys = [n for n in self.nodes if n.role is NodeRole.standby]
        primary = self.primary
        following = [n for n in standbys if primary and n.upstream == primary.name]
        found = following or standbys
        return found[0] if found else None

    def to_json(self) -> dict[str, Any]:
        """The ``status --format json`` mapping: every node, and the two aliases."""
        postgres: dict[str, Any] = {"nodes": [n.to_json() for n in self.nodes]}
        for key, node in (("primary", self.primary), ("standby", self.standby)):
            if node is not None:
                postgres[key] = node.to_json()
        return {
            "dir": str(self.root),
            "os_user": self.os_user,
            "bin_dir": str(self.bin_dir),
            "postgres": postgres,
            "dns": self.dns.to_json(),
            "ssh": self.ssh.to_json(),
        }
