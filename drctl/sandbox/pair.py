"""The sandbox: a primary and a streaming standby on loopback, and the files that describe it.

``up`` is idempotent: on a live sandbox it changes nothing; on a stopped one it starts
the servers again; on nothing it creates them. ``down`` stops and removes everything.
The sandbox writes ``sandbox.env`` (DSNs as environment variables) and
``params.yaml`` (a params file for the example runbooks).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drctl.sandbox.named import ZONE, Named
from drctl.sandbox.pgnode import PgNode, SandboxError, as_user, find_bin_dir, os_user
from drctl.sandbox.sshd import Sshd

MANIFEST = "sandbox.json"
DEFAULT_DIR = Path(".drctl") / "sandbox"
DEFAULT_BASE_PORT = 55432

_SHARED_CONF = """
# drctl sandbox: settings shared by both nodes (per-node ones are on the start command line)
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_log_hints = on
wal_keep_size = '256MB'
fsync = on
"""


#: Each PostgreSQL server on its own loopback address and the same port, so the DNS
#: name the runbook repoints is what decides which server a client reaches.
HOSTS = ("127.0.0.2", "127.0.0.3")
DNS_NAME = "db"


@dataclass(frozen=True)
class Sandbox:
    root: Path
    nodes: tuple[PgNode, PgNode]
    named: Named
    sshd: Sshd

    @classmethod
    def at(cls, root: Path, base_port: int = DEFAULT_BASE_PORT) -> Sandbox:
        """The sandbox in ``root``: PostgreSQL on HOSTS:base_port, DNS on +1, sshd on +2."""
        root = root.resolve()
        manifest = root / MANIFEST
        if manifest.exists():
            base_port = int(json.loads(manifest.read_text())["base_port"])
        bin_dir = find_bin_dir()
        user = os_user()
        pg = root / "pg"
        nodes = tuple(
            PgNode(
                name,
                pg / name,
                base_port,
                host,
                pg / f"run-{name}",
                pg / f"{name}.log",
                bin_dir,
                user,
            )
            for name, host in zip(("node1", "node2"), HOSTS, strict=True)
        )
        return cls(
            root,
            (nodes[0], nodes[1]),
            Named(root / "dns", base_port + 1),
            Sshd(root / "ssh", base_port + 2),
        )

    # -- lifecycle ---------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        first, second = self.nodes
        if (self.root / MANIFEST).exists():
            for node in self.nodes:
                node.start()
            self._start_services()
            status = self.status()
            if {"primary", "standby"} <= set(status["postgres"]):
                # Roles swap with every failover: point the files at the live ones.
                self._write_files(status)
            return status
        if any(n.data_dir.exists() for n in self.nodes):
            raise SandboxError(
                f"{self.root} holds a half-made sandbox (no {MANIFEST})",
                hint=f"remove it with: drctl sandbox down --dir {self.root}",
            )
        self._prepare_dirs()
        first.initdb()
        with (first.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(_SHARED_CONF)
        with (first.data_dir / "pg_hba.conf").open("a") as hba:
            # The nodes live on 127.0.0.2/.3: let all of loopback in (trust, as initdb's own lines).
            hba.write("host all all 127.0.0.0/8 trust\nhost replication all 127.0.0.0/8 trust\n")
        first.start()
        second.base_backup_from(first)
        second.start()
        self._wait_streaming(first, second)
        self._start_services()
        (self.root / MANIFEST).write_text(
            json.dumps({"base_port": first.port, "created": time.time()}, indent=2) + "\n"
        )
        status = self.status()
        self._write_files(status)
        return status

    def _start_services(self) -> None:
        records = {
            DNS_NAME: self.nodes[0].host,
            "node1": self.nodes[0].host,
            "node2": self.nodes[1].host,
        }
        self.named.start(records)
        self.sshd.start()

    def down(self) -> None:
        self.named.stop()
        self.sshd.stop()
        for node in self.nodes:
            with contextlib.suppress(SandboxError):  # removing the directory is what matters
                node.stop("immediate")
        if self.root.exists():
            shutil.rmtree(self.root)

    # -- description ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Live roles: which node is primary now (after a failover they swap)."""
        roles: dict[str, Any] = {}
        for node in self.nodes:
            info = {
                "node": node.name, "port": node.port, "host": node.host, "dsn": node.dsn,
                "data_dir": str(node.data_dir), "running": node.running(),
                "start_options": node.start_options,
            }  # fmt: skip
            info["in_recovery"] = _in_recovery(node) if info["running"] else None
            key = "standby" if info["in_recovery"] else "primary"
            if key in roles:  # both primaries (split brain) or both down: list by name
                key = node.name
            roles[key] = info
        return {
            "dir": str(self.root),
            "os_user": self.nodes[0].user,
            "bin_dir": str(self.nodes[0].bin_dir),
            "postgres": roles,
            "dns": {
                "server": self.named.host, "port": self.named.port, "zone": ZONE,
                "name": f"{DNS_NAME}.{ZONE}", "running": self.named.running(),
            },
            "ssh": {
                "host": self.sshd.host, "port": self.sshd.port, "user": self.sshd.user,
                "key_file": str(self.sshd.key_file), "known_hosts": str(self.sshd.known_hosts),
                "running": self.sshd.running(),
            },
        }  # fmt: skip

    def _write_files(self, status: dict[str, Any]) -> None:
        pg = status["postgres"]
        env = [
            f"DRCTL_SANDBOX_DIR={self.root}",
            f"DRCTL_SANDBOX_PRIMARY_DSN='{pg['primary']['dsn']}'",
            f"DRCTL_SANDBOX_STANDBY_DSN='{pg['standby']['dsn']}'",
        ]
        (self.root / "sandbox.env").write_text("\n".join(env) + "\n")
        params = {
            "primary_dsn": pg["primary"]["dsn"],
            "standby_dsn": pg["standby"]["dsn"],
            "primary_data": pg["primary"]["data_dir"],
            "standby_data": pg["standby"]["data_dir"],
            "primary_start": pg["primary"]["start_options"],
            "standby_start": pg["standby"]["start_options"],
            "pg_port": pg["primary"]["port"],
            "primary_host": pg["primary"]["host"],
            "standby_host": pg["standby"]["host"],
            "pg_bin": status["bin_dir"],
            "os_user": status["os_user"],
            "dns_port": status["dns"]["port"],
            "dns_zone": status["dns"]["zone"],
            "tsig_secret_ref": f"${{file:{self.named.secret_file}}}",
            "ssh_port": status["ssh"]["port"],
            "ssh_user": status["ssh"]["user"],
            "ssh_key": status["ssh"]["key_file"],
            "ssh_known_hosts": status["ssh"]["known_hosts"],
        }
        (self.root / "params.yaml").write_text(
            "".join(f"{k}: {json.dumps(v)}\n" for k, v in params.items())
        )

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
    def _wait_streaming(primary: PgNode, standby: PgNode, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(primary.dsn, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                    ).fetchone()
                if row and row[0] >= 1:
                    return
            except psycopg.Error:
                pass
            time.sleep(0.2)
        raise SandboxError(
            f"{standby.name} did not start streaming from {primary.name} within {timeout:.0f}s"
        )


def _in_recovery(node: PgNode) -> bool | None:
    import psycopg

    try:
        with psycopg.connect(node.dsn, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return bool(row[0]) if row else None
    except psycopg.Error:
        return None
