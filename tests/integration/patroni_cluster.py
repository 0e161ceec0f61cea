"""A real Patroni cluster on loopback: three PostgreSQL 15 nodes under Patroni over etcd.

Import the fixtures explicitly from a test module::

    from tests.integration.patroni_cluster import patroni  # noqa: F401

Patroni comes from PyPI (the ``dev`` extra installs ``patroni[psycopg3,etcd3]``), etcd
from Debian's ``etcd-server`` (a single member, ``EtcdCluster`` of etcd_cluster.py).
Each node is one Patroni process running as the unprivileged ``postgres`` OS user when
the tests run as root (Patroni, like initdb, will not run PostgreSQL as root), with its
REST API and its PostgreSQL on free high ports of 127.0.0.1, under a fresh directory in
/tmp the ``postgres`` user can reach. Short ``ttl``/``loop_wait`` keep the tests quick.
The REST API's write endpoints need basic auth (``USER``/``PASSWORD``), as in production.
Start-up waits (bounded) for a leader and two streaming replicas; teardown SIGKILLs
every Patroni and every postmaster, whatever happened. How Patroni is run and
configured is the sandbox's (drctl/sandbox/patroni.py), so both start the same cluster.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drctl.sandbox.patroni import TIMING, patroni_command, patroni_config
from tests.integration.conftest import require_or_skip
from tests.integration.etcd_cluster import EtcdCluster, etcd_binary
from tests.integration.pg_sandbox import free_base_port, shared_dir

#: Bound on the cluster coming up, and on any change of leader or state the tests wait for.
START_WITHIN = 120.0
WAIT = 90.0
#: The REST API's basic-auth credentials for its write endpoints (a test secret).
USER = "drctl"
PASSWORD = "Zq7-test-pw-4711x"


@dataclass
class PatroniNode:
    name: str
    api_port: int
    pg_port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.pg_port} dbname=postgres user=postgres connect_timeout=5"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "patroni.yml"

    @property
    def log(self) -> Path:
        return self.root / "patroni.log"

    def get(self, path: str) -> Any:
        """The JSON a GET of ``path`` on this node's REST API answers (any status), or None."""
        request = urllib.request.Request(self.api_url + path)
        try:
            with urllib.request.urlopen(request, timeout=3) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(ValueError):
                return json.loads(exc.read())
            return None
        except (OSError, ValueError):
            return None

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None


@dataclass
class PatroniCluster:
    """A live Patroni cluster: ``nodes`` pg1, pg2, pg3 (pg1 bootstraps and leads at first)."""

    scope: str
    root: Path
    etcd: EtcdCluster
    command: list[str]
    command_env: dict[str, str]
    bin_dir: str
    os_user: str
    nodes: list[PatroniNode] = field(default_factory=list)
    #: Patroni's timing (bootstrap.dcs): the tests' short one unless given.
    timing: tuple[int, int, int] = TIMING

    @property
    def etcd_hosts(self) -> str:
        return ",".join(m.endpoint for m in self.etcd.members)

    def node(self, name: str) -> PatroniNode:
        return next(n for n in self.nodes if n.name == name)

    def target(self, *, auth: bool = True) -> dict[str, Any]:
        """The cluster as a ``patroni`` target mapping, listing every member's REST API."""
        fields: dict[str, Any] = {"type": "patroni", "members": [n.api_url for n in self.nodes]}
        if auth:
            fields.update(username=USER, password=PASSWORD)
        return fields

    def postgres_target(
        self, node: PatroniNode, managed_by: str | None = "cluster"
    ) -> dict[str, Any]:
        """``node`` as a postgres target, ``managed_by`` the patroni target of that name."""
        fields: dict[str, Any] = {"type": "postgres", "dsn": node.dsn, "data_dir": str(node.data_dir),
                                  "bin_dir": self.bin_dir, "os_user": self.os_user}  # fmt: skip
        if managed_by is not None:
            fields["managed_by"] = managed_by
        return fields

    # -- what the cluster says -----------------------------------------------------------

    def cluster(self) -> dict[str, Any] | None:
        """``GET /cluster`` from the first node that answers."""
        for node in self.nodes:
            if node.process is None:
                continue
            found = node.get("/cluster")
            if isinstance(found, dict) and "members" in found:
                return found
        return None

    def leader(self) -> str | None:
        found = self.cluster()
        for member in (found or {}).get("members", []):
            if member.get("role") == "leader" and member.get("state") == "running":
                return str(member["name"])
        return None

    def streaming(self) -> set[str]:
        found = self.cluster()
        return {
            str(m["name"])
            for m in (found or {}).get("members", [])
            if m.get("role") != "leader" and m.get("state") == "streaming"
        }

    def healthy(self, leader: str | None = None) -> bool:
        """A running leader (``leader`` if named) and every other member streaming."""
        now = self.leader()
        if now is None or (leader is not None and now != leader):
            return False
        others = {n.name for n in self.nodes if n.name != now}
        return self.streaming() >= others

    def wait(self, what: str, predicate: Callable[[], bool], within: float = WAIT) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if predicate():
                return
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise AssertionError(f"patroni {node.name} exited: {self.tail(node)}")
            time.sleep(0.2)
        raise AssertionError(
            f"timed out after {within:g}s waiting for {what}; cluster: {self.cluster()}"
        )

    def wait_healthy(self, leader: str | None = None, within: float = WAIT) -> None:
        self.wait(f"a leader ({leader or 'any'}) and two streaming replicas",
                  lambda: self.healthy(leader), within)  # fmt: skip

    def tail(self, node: PatroniNode, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # -- changing it behind drctl's back -----------------------------------------------------

    def rest(self, node: PatroniNode, method: str, path: str, body: Any = None) -> int:
        """An authenticated write to a node's REST API; its HTTP status."""
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            node.api_url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def set_paused(self, paused: bool) -> None:
        """Pause or resume through ``PATCH /config`` and wait until every member sees it."""
        status = self.rest(self.nodes[0], "PATCH", "/config", {"pause": paused})
        assert status == 200, status
        self.wait(
            f"every member to see pause={paused}",
            lambda: all(
                bool((n.get("/patroni") or {}).get("pause")) is paused
                for n in self.nodes
                if n.process is not None
            ),
        )

    def kill_postgres(self, node: PatroniNode) -> None:
        """SIGKILL the node's postmaster (Patroni itself keeps running)."""
        pid = node.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill(self, node: PatroniNode) -> None:
        """SIGKILL the node's Patroni and its postmaster (a lost machine)."""
        process = node.process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            node.process = None
        # The postmaster runs in a session of its own (Patroni calls setsid for it).
        pid = node.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)

    def start(self, node: PatroniNode) -> None:
        log = node.log.open("ab")
        user = pwd.getpwnam(self.os_user)
        as_other = os.geteuid() != user.pw_uid
        node.process = subprocess.Popen(
            [*self.command, str(node.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=node.root,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(node.root),
                 "LANG": "C.UTF-8", **self.command_env},
            start_new_session=True,
            user=user.pw_uid if as_other else None,
            group=user.pw_gid if as_other else None,
            extra_groups=[] if as_other else None,
        )  # fmt: skip
        log.close()

    # -- building it ---------------------------------------------------------------------

    def write_config(self, node: PatroniNode) -> None:
        (node.root / "run").mkdir(parents=True, exist_ok=True)
        config = patroni_config(
            scope=self.scope, name=node.name, api_port=node.api_port, pg_port=node.pg_port,
            root=node.root, bin_dir=self.bin_dir, etcd_hosts=self.etcd_hosts, password=PASSWORD,
            timing=self.timing,
        )  # fmt: skip
        # JSON is YAML: Patroni reads it as its configuration file.
        node.config.write_text(json.dumps(config, indent=2))
        if os.geteuid() == 0:
            for path in (node.root, node.root / "run", node.config):
                shutil.chown(path, self.os_user)
        node.config.chmod(0o600)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, prefix: str = "drctl-patroni-", timing: tuple[int, int, int] | None = None
    ) -> Iterator[PatroniCluster]:
        """A fresh cluster; ``timing`` is (ttl, loop_wait, retry_timeout), Patroni's
        defaults being (30, 10, 10)."""
        from drctl.sandbox.pgnode import SandboxError, find_bin_dir, os_user

        etcd = etcd_binary()
        if etcd is None:
            require_or_skip("etcd (Debian package etcd-server) is not installed")
        try:
            bin_dir, user = str(find_bin_dir()), os_user()
        except SandboxError as exc:
            require_or_skip(exc.message)
        found = patroni_command(user)
        if found is None:
            require_or_skip(
                f"patroni is not installed (pip install -e '.[dev]'), or {user} cannot run it"
            )
        assert etcd is not None and found is not None
        parent = shared_dir(prefix)
        try:
            with EtcdCluster.running(etcd, parent / "etcd", size=1) as store:
                scope = f"drctl-{uuid.uuid4().hex[:8]}"
                cluster = cls(scope, parent, store, found[0], found[1], bin_dir, user)
                if timing is not None:
                    cluster.timing = timing
                for i in (1, 2, 3):
                    base = free_base_port(width=2)
                    node = PatroniNode(f"pg{i}", base, base + 1, parent / f"pg{i}")
                    node.root.mkdir()
                    cluster.nodes.append(node)
                    cluster.write_config(node)
                try:
                    # pg1 first, alone, so it is the one that bootstraps and leads.
                    cluster.start(cluster.nodes[0])
                    cluster.wait("pg1 to bootstrap and lead", lambda: cluster.leader() == "pg1",
                                 START_WITHIN)  # fmt: skip
                    for node in cluster.nodes[1:]:
                        cluster.start(node)
                    cluster.wait_healthy("pg1", START_WITHIN)
                    yield cluster
                finally:
                    for node in cluster.nodes:
                        cluster.kill(node)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes (its parent, Patroni, was killed first).
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


@pytest.fixture
def patroni() -> Iterator[PatroniCluster]:
    """A fresh three-node Patroni cluster for one test that moves the leader or kills nodes."""
    with PatroniCluster.running() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_patroni() -> Iterator[PatroniCluster]:
    """One Patroni cluster for a module whose tests leave it healthy and unpaused."""
    with PatroniCluster.running("drctl-patronim-") as cluster:
        yield cluster
