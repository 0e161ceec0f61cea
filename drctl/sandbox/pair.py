"""The sandbox: a primary and N streaming standbys on loopback, and the files that describe it.

``up`` is idempotent: on a live sandbox it changes nothing but the files; on a stopped
one it starts the servers again; on nothing it creates them. ``down`` stops and removes
everything. The sandbox writes ``sandbox.env`` (DSNs as environment variables),
``params.yaml`` (the two-node example runbooks' params: the live primary and its first
standby) and ``topology.yaml`` (every node, for runbooks over the whole topology).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from drctl.errors import UsageError
from drctl.sandbox.named import ZONE, Named
from drctl.sandbox.pgnode import PgNode, SandboxError, as_user, find_bin_dir, os_user
from drctl.sandbox.sshd import Sshd
from drctl.sandbox.status import DnsStatus, NodeRole, NodeStatus, SandboxStatus, SshStatus

MANIFEST = "sandbox.json"
DEFAULT_DIR = Path(".drctl") / "sandbox"
DEFAULT_BASE_PORT = 55432
DEFAULT_STANDBYS = 2

#: Each PostgreSQL server on its own loopback address (127.0.0.2, .3, …) and the same
#: port, so the DNS name the runbook repoints is what decides which server a client
#: reaches. The last octet stops at 254, which bounds the number of nodes.
FIRST_OCTET = 2
LAST_OCTET = 254
MAX_STANDBYS = LAST_OCTET - FIRST_OCTET
DNS_NAME = "db"

_SHARED_CONF = """
# drctl sandbox: settings shared by every node (per-node ones are on the start command line)
wal_level = replica
max_wal_senders = {senders}
max_replication_slots = {senders}
hot_standby = on
wal_log_hints = on
wal_keep_size = '256MB'
fsync = on
"""

_T = TypeVar("_T")


def node_host(index: int) -> str:
    """The loopback address of the node at ``index`` (0 is node1)."""
    return f"127.0.0.{FIRST_OCTET + index}"


def check_standbys(standbys: int) -> None:
    """Refuse a standby count the sandbox cannot lay out (UsageError, exit 2)."""
    if standbys < 1:
        raise UsageError(
            f"--standbys must be at least 1, got {standbys}",
            hint="the sandbox is a primary and its streaming standbys",
        )
    if standbys > MAX_STANDBYS:
        raise UsageError(
            f"--standbys {standbys} needs loopback addresses past {node_host(MAX_STANDBYS)}: "
            f"the nodes take 127.0.0.{FIRST_OCTET}, .{FIRST_OCTET + 1}, … one each",
            hint=f"use at most {MAX_STANDBYS} standbys",
        )


@dataclass(frozen=True)
class Sandbox:
    root: Path
    #: node1 (the first primary), then the standbys node2 … nodeN+1.
    nodes: tuple[PgNode, ...]
    named: Named
    sshd: Sshd

    @classmethod
    def at(
        cls, root: Path, base_port: int = DEFAULT_BASE_PORT, standbys: int | None = None
    ) -> Sandbox:
        """The sandbox in ``root``: PostgreSQL on node hosts:base_port, DNS on +1, sshd on +2.

        An existing sandbox keeps its ports and its number of standbys; asking it for
        another number is a UsageError. Without a manifest (nothing made yet, or a
        half-made sandbox) the nodes already on disk count too, so ``down`` stops them all.
        """
        if standbys is not None:
            check_standbys(standbys)  # before anything is read or made
        root = root.resolve()
        manifest = root / MANIFEST
        if manifest.exists():
            recorded = json.loads(manifest.read_text())
            base_port = int(recorded["base_port"])
            have = int(recorded.get("standbys", 1))  # sandboxes made before N standbys
            if standbys is not None and standbys != have:
                raise UsageError(
                    f"--standbys {standbys}: the sandbox in {root} has {have}",
                    hint=f"remove it first to change that: drctl sandbox down --dir {root}",
                )
            standbys = have
        else:
            wanted = DEFAULT_STANDBYS if standbys is None else standbys
            on_disk = sum(1 for d in (root / "pg").glob("node*") if d.is_dir())
            standbys = max(wanted, on_disk - 1)
        bin_dir = find_bin_dir()
        user = os_user()
        pg = root / "pg"
        nodes = tuple(
            PgNode(
                name,
                pg / name,
                base_port,
                node_host(i),
                pg / f"run-{name}",
                pg / f"{name}.log",
                bin_dir,
                user,
            )
            for i, name in enumerate(f"node{k}" for k in range(1, standbys + 2))
        )
        return cls(
            root, nodes, Named(root / "dns", base_port + 1), Sshd(root / "ssh", base_port + 2)
        )

    # -- lifecycle ---------------------------------------------------------------

    def up(self) -> SandboxStatus:
        if (self.root / MANIFEST).exists():
            _together(lambda: _each(self.nodes, PgNode.start), self._start_services)
            status = self.status()
            # Roles move with every failover: point the files at the live ones.
            self._write_files(status)
            return status
        if any(n.data_dir.exists() for n in self.nodes):
            raise SandboxError(
                f"{self.root} holds a half-made sandbox (no {MANIFEST})",
                hint=f"remove it with: drctl sandbox down --dir {self.root}",
            )
        self._check_addresses()
        self._prepare_dirs()
        # DNS and sshd need nothing from PostgreSQL: they start while the nodes are made.
        _together(self._create_nodes, self._start_services)
        manifest: dict[str, float] = {
            "base_port": self.nodes[0].port, "standbys": len(self.nodes) - 1, "created": time.time()
        }  # fmt: skip
        (self.root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        status = self.status()
        self._write_files(status)
        return status

    def _create_nodes(self) -> None:
        """initdb the primary, clone the standbys from it cold, start them all, wait for streaming."""
        primary, *standbys = self.nodes
        primary.initdb()
        with (primary.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(_SHARED_CONF.format(senders=max(10, len(standbys) + 4)))
        with (primary.data_dir / "pg_hba.conf").open("a") as hba:
            # The nodes live on 127.0.0.2, .3, …: let all of loopback in (trust, as initdb's own lines).
            hba.write("host all all 127.0.0.0/8 trust\nhost replication all 127.0.0.0/8 trust\n")
        _each(standbys, lambda s: s.clone_from(primary))
        # The primary first: a standby that finds no primary retries only every 5s.
        primary.start()
        _each(standbys, PgNode.start)
        self._wait_streaming(primary, standbys)

    def _start_services(self) -> None:
        records = {DNS_NAME: self.nodes[0].host} | {n.name: n.host for n in self.nodes}
        self.named.start(records)
        self.sshd.start()

    def down(self) -> None:
        def stop(node: PgNode) -> None:
            with contextlib.suppress(SandboxError):  # removing the directory is what matters
                node.stop("immediate")

        def stop_services() -> None:
            self.named.stop()
            self.sshd.stop()

        _together(lambda: _each(self.nodes, stop), stop_services)
        if self.root.exists():
            shutil.rmtree(self.root)

    # -- description ---------------------------------------------------------------

    def status(self) -> SandboxStatus:
        """Every node with its live role (after a failover the roles move), DNS and sshd."""
        probed = _each(self.nodes, _probe)
        by_host = {n.host: n.name for n in self.nodes}
        nodes = tuple(
            NodeStatus(
                name=node.name, host=node.host, port=node.port, dsn=node.dsn, role=role,
                data_dir=node.data_dir, running=running, start_options=node.start_options,
                upstream=by_host.get(upstream or ""), streaming=streaming,
            )
            for node, (running, role, upstream, streaming) in zip(self.nodes, probed, strict=True)
        )  # fmt: skip
        return SandboxStatus(
            root=self.root,
            os_user=self.nodes[0].user,
            bin_dir=self.nodes[0].bin_dir,
            nodes=nodes,
            dns=DnsStatus(
                self.named.host, self.named.port, ZONE, f"{DNS_NAME}.{ZONE}", self.named.running()
            ),
            ssh=SshStatus(
                self.sshd.host,
                self.sshd.port,
                self.sshd.user,
                self.sshd.key_file,
                self.sshd.known_hosts,
                self.sshd.running(),
            ),
        )

    def _write_files(self, status: SandboxStatus) -> None:
        """Point the files at the live roles; leave them alone while the roles are unclear."""
        primary, standby = status.primary, status.standby
        if primary is None or standby is None:
            return
        env = [
            f"DRCTL_SANDBOX_DIR={self.root}",
            f"DRCTL_SANDBOX_PRIMARY_DSN='{primary.dsn}'",
            f"DRCTL_SANDBOX_STANDBY_DSN='{standby.dsn}'",
            *(f"DRCTL_SANDBOX_{n.name.upper()}_DSN='{n.dsn}'" for n in status.nodes),
        ]
        (self.root / "sandbox.env").write_text("\n".join(env) + "\n")
        shared: dict[str, Any] = {
            "pg_port": primary.port,
            "pg_bin": str(status.bin_dir),
            "os_user": status.os_user,
            "dns_port": status.dns.port,
            "dns_zone": status.dns.zone,
            "tsig_secret_ref": f"${{file:{self.named.secret_file}}}",
            "ssh_port": status.ssh.port,
            "ssh_user": status.ssh.user,
            "ssh_key": str(status.ssh.key_file),
            "ssh_known_hosts": str(status.ssh.known_hosts),
        }
        params = {
            "primary_dsn": primary.dsn,
            "standby_dsn": standby.dsn,
            "primary_data": str(primary.data_dir),
            "standby_data": str(standby.data_dir),
            "primary_start": primary.start_options,
            "standby_start": standby.start_options,
            "primary_host": primary.host,
            "standby_host": standby.host,
        } | shared
        _write_params(self.root / "params.yaml", params)
        nodes = [
            {k: v for k, v in n.to_json().items() if k not in ("running", "upstream", "streaming")}
            for n in status.nodes
        ]
        # The standbys by name, so that a runbook's candidates are a plain reference.
        standbys = [n.name for n in status.nodes if n.name != primary.name]
        _write_params(
            self.root / "topology.yaml",
            {"primary_node": primary.name, "standby_nodes": standbys, "nodes": nodes} | shared,
        )

    def _check_addresses(self) -> None:
        """Every node's address is on this machine and its port free (UsageError, exit 2)."""
        wanted = [(n.host, n.port) for n in self.nodes]
        wanted += [(self.named.host, self.named.port), (self.sshd.host, self.sshd.port)]
        for host, port in wanted:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRNOTAVAIL:
                        raise UsageError(
                            f"--standbys {len(self.nodes) - 1} needs {host}, "
                            "which is not a loopback address of this machine",
                            hint=f"add it (e.g. macOS: sudo ifconfig lo0 alias {host}) "
                            "or ask for fewer standbys",
                        ) from exc
                    raise UsageError(
                        f"{host}:{port} is in use ({exc.strerror})",
                        hint="pick other ports with --base-port N (PostgreSQL N, DNS N+1, sshd N+2)",
                    ) from exc

    def _prepare_dirs(self) -> None:
        pg = self.root / "pg"
        for node in self.nodes:
            node.socket_dir.mkdir(parents=True, exist_ok=True)
        user = self.nodes[0].user
        if os.geteuid() == 0:
            shutil.chown(pg, user)
            for node in self.nodes:
                shutil.chown(node.socket_dir, user)
            # The server user must be able to reach its data directory through every parent.
            probe = as_user(user, ["test", "-w", str(pg)])
            import subprocess

            if subprocess.run(probe, check=False).returncode != 0:
                raise SandboxError(
                    f"user {user} cannot write {pg} (a parent directory is not traversable)",
                    hint="pick a directory it can reach, e.g. --dir /tmp/drctl-sandbox",
                )

    @staticmethod
    def _wait_streaming(primary: PgNode, standbys: list[PgNode], timeout: float = 60.0) -> None:
        """Until the primary lists every standby (by its application_name) as streaming."""
        import psycopg

        names = sorted(s.name for s in standbys)
        streaming: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(primary.dsn, autocommit=True) as conn:
                    rows = conn.execute(
                        "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
                    ).fetchall()
                streaming = sorted(str(r[0]) for r in rows)
                if set(names) <= set(streaming):
                    return
            except psycopg.Error:
                pass
            time.sleep(0.05)
        missing = ", ".join(n for n in names if n not in streaming)
        raise SandboxError(
            f"{missing} did not start streaming from {primary.name} within {timeout:.0f}s",
            hint=f"see the server logs in {primary.log_file.parent}",
        )


def _probe(node: PgNode) -> tuple[bool, NodeRole, str | None, bool]:
    """(running, live role, the host it follows, streaming now) of one node."""
    if not node.running():
        return False, NodeRole.unknown, None, False
    found = node.recovery()
    if found is None:
        return True, NodeRole.unknown, None, False
    if not found.in_recovery:
        return True, NodeRole.primary, None, False
    return True, NodeRole.standby, found.upstream_host, found.streaming


def _each(nodes: Iterable[PgNode], action: Callable[[PgNode], _T]) -> list[_T]:
    """``action`` on every node at once (each is a subprocess or a socket wait), in order.

    The first error is raised after every action has finished, so none is left running.
    """
    nodes = list(nodes)
    if len(nodes) <= 1:
        return [action(n) for n in nodes]
    with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
        futures = [pool.submit(action, n) for n in nodes]
    return [f.result() for f in futures]


def _together(background: Callable[[], object], foreground: Callable[[], object]) -> None:
    """Run ``background`` on a worker thread while ``foreground`` runs on this one.

    The daemons (named, sshd) are the foreground, on the main thread as when they run
    alone; the nodes' subprocesses are the background. Both always finish; the
    foreground's error wins, else the background's is raised.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        work = pool.submit(background)
        try:
            foreground()
        finally:
            error = work.exception()
    if error is not None:
        raise error


def _write_params(path: Path, values: dict[str, Any]) -> None:
    """A params file: one ``key: JSON`` line each (JSON is YAML, and quoting is exact)."""
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
