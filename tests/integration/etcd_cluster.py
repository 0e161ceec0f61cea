"""A real three-member etcd cluster on loopback high ports, for the etcd state store's tests.

Each member is Debian's ``etcd`` (package etcd-server) with its own data directory, a
client port and a peer port picked free on 127.0.0.1. Members can be killed (SIGKILL),
stopped and started again on the same ports and data, so tests can take the leader or
the quorum away. ``EtcdCluster.running`` always tears every member down.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: How long a member or the cluster gets to come up or elect a leader (a loaded machine).
START_WITHIN = 60.0


def etcd_binary() -> str | None:
    return shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def status(self) -> dict[str, object] | None:
        """The member's own maintenance status, or None if it does not answer."""
        request = urllib.request.Request(
            f"{self.client_url}/v3/maintenance/status", data=b"{}", method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                parsed: dict[str, object] = json.loads(answer.read())
                return parsed
        except (OSError, urllib.error.URLError, ValueError):
            return None


@dataclass
class EtcdCluster:
    binary: str
    root: Path
    members: list[Member] = field(default_factory=list)
    token: str = field(default_factory=lambda: f"drctl-test-{uuid.uuid4().hex[:8]}")

    def url(self, prefix: str, first: Member | None = None) -> str:
        """The store URL; ``first`` is the member the client talks to until it fails."""
        order = sorted(self.members, key=lambda m: m is not first)
        return f"etcd://{','.join(m.endpoint for m in order)}/{prefix}"

    @classmethod
    @contextlib.contextmanager
    def running(cls, binary: str, root: Path, size: int = 3) -> Iterator[EtcdCluster]:
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls(binary, root)
        for i in range(size):
            name = f"m{i}"
            cluster.members.append(
                Member(name, _free_port(), _free_port(), root / name, root / f"{name}.log")
            )
        try:
            for member in cluster.members:
                cluster.start(member)
            cluster.wait_healthy()
            yield cluster
        finally:
            for member in cluster.members:
                cluster.kill(member)

    def start(self, member: Member) -> None:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        log = member.log.open("ab")
        member.process = subprocess.Popen(
            [
                self.binary,
                "--name", member.name,
                "--data-dir", str(member.data_dir),
                "--listen-client-urls", member.client_url,
                "--advertise-client-urls", member.client_url,
                "--listen-peer-urls", f"http://127.0.0.1:{member.peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{member.peer_port}",
                "--initial-cluster", initial,
                "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new",
                "--heartbeat-interval", "100",
                "--election-timeout", "1000",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def kill(self, member: Member) -> None:
        """SIGKILL the member (as a lost machine) and wait for it to be gone."""
        process = member.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        member.process = None

    def leader(self) -> Member:
        """The member that is leader now (asks each live member; bounded)."""
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline:
            for member in self.members:
                if member.process is None:
                    continue
                status = member.status()
                header = status.get("header") if status else None
                if (
                    status
                    and isinstance(header, dict)
                    and status.get("leader") == header.get("member_id")
                ):
                    return member
            time.sleep(0.2)
        raise AssertionError(f"no etcd leader within {START_WITHIN}s; see {self.root}/*.log")

    def wait_healthy(self) -> None:
        """Every running member answers and a leader is elected (bounded)."""
        deadline = time.monotonic() + START_WITHIN
        for member in self.members:
            while member.process is not None and member.status() is None:
                if member.process.poll() is not None:
                    raise AssertionError(f"etcd {member.name} exited: {member.log.read_text()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"etcd {member.name} did not answer; see {member.log}")
                time.sleep(0.1)
        self.leader()
