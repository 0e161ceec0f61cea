"""The sandbox's Patroni cluster: three PostgreSQL nodes under Patroni over a one-member etcd.

``drctl sandbox up --patroni`` makes it beside the plain nodes, under ``<sandbox>/patroni``,
on 127.0.0.1: etcd's client port at base+10 and its peer port at base+11, then for
node ``pgK`` its REST API at base+10+2K and its PostgreSQL at base+11+2K. Patroni runs
as the unprivileged OS user that runs the other servers (PostgreSQL will not run as
root), with a short ttl/loop_wait, and its REST API's write endpoints take basic auth
with a generated password kept in ``restapi.secret`` (0600). The example runbooks'
params are written beside it (``switchover.yaml``, ``manual-failover.yaml``), the
password passed as a ``${file:…}`` reference. The tests' fixture builds its clusters
from the same pieces (``patroni_command``, ``patroni_config``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drctl.sandbox.pgnode import SandboxError, as_user
from drctl.sandbox.pidfile import alive, read_pid

#: The tests' and the sandbox's timing: Patroni's minimum ttl, a one-second loop.
TIMING = (20, 1, 5)
USER = "drctl"
MEMBERS = ("pg1", "pg2", "pg3")
#: Bound on the cluster coming up (initdb, two base backups, a loaded machine).
START_WITHIN = 180.0


def patroni_command(os_user: str) -> tuple[list[str], dict[str, str]] | None:
    """How ``os_user`` runs the Patroni this interpreter has installed: argv head and env.

    This interpreter may live where that user cannot go (a pyenv under a 0700 /root),
    so the first interpreter of the same version it can run is used, with this one's
    site-packages on its path (same minor version, same ABI). ``-S`` keeps that
    interpreter's own site-packages out (Debian's pyOpenSSL breaks urllib3's import).
    None when Patroni is not installed or no such interpreter works.
    """
    import importlib.util

    spec = importlib.util.find_spec("patroni")  # where it is, without importing it here
    if spec is None or spec.origin is None:
        return None
    site = str(Path(spec.origin).resolve().parent.parent)
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    env = {"PYTHONPATH": site, "PYTHONDONTWRITEBYTECODE": "1"}
    for interpreter in (
        os.path.realpath(sys.executable), f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}",
    ):  # fmt: skip
        if not Path(interpreter).exists():
            continue
        argv = [interpreter, "-S", "-c", "import patroni.__main__, patroni.dcs.etcd3, psycopg"]
        try:
            done = subprocess.run(
                as_user(os_user, argv), env={**os.environ, **env}, capture_output=True,
                timeout=60, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return [interpreter, "-S", "-m", "patroni"], env
    return None


def patroni_config(
    *, scope: str, name: str, api_port: int, pg_port: int, root: Path, bin_dir: str,
    etcd_hosts: str, password: str, timing: tuple[int, int, int] = TIMING,
) -> dict[str, Any]:  # fmt: skip
    """One member's Patroni configuration (loopback, trust auth inside, basic auth on the API)."""
    ttl, loop_wait, retry_timeout = timing
    return {
        "scope": scope,
        "namespace": "/drctl/",
        "name": name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": f"127.0.0.1:{api_port}",
            "connect_address": f"127.0.0.1:{api_port}",
            "authentication": {"username": USER, "password": password},
        },
        "etcd3": {"hosts": etcd_hosts},
        "bootstrap": {
            "dcs": {
                "ttl": ttl,
                "loop_wait": loop_wait,
                "retry_timeout": retry_timeout,
                "maximum_lag_on_failover": 1048576,
                "postgresql": {
                    "use_pg_rewind": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "wal_log_hints": "on",
                        "wal_keep_size": "64MB",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{pg_port}",
            "connect_address": f"127.0.0.1:{pg_port}",
            "data_dir": str(root / "data"),
            "bin_dir": bin_dir,
            "pgpass": str(root / "pgpass"),
            # Trust inside loopback, as the plain sandbox nodes: these passwords are unused.
            "authentication": {
                "superuser": {"username": "postgres", "password": "unused-trust"},
                "replication": {"username": "replicator", "password": "unused-trust"},
                "rewind": {"username": "postgres", "password": "unused-trust"},
            },
            "parameters": {"unix_socket_directories": str(root / "run")},
            "pg_hba": [
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "host replication all 127.0.0.1/32 trust",
            ],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


@dataclass(frozen=True)
class PatroniSandbox:
    """The Patroni cluster of a sandbox: its directory, its base port, who runs it."""

    root: Path
    base_port: int
    bin_dir: str
    user: str

    @property
    def etcd_port(self) -> int:
        return self.base_port + 10

    def api_port(self, k: int) -> int:
        return self.base_port + 10 + 2 * k

    def pg_port(self, k: int) -> int:
        return self.base_port + 11 + 2 * k

    @property
    def secret_file(self) -> Path:
        return self.root / "restapi.secret"

    def exists(self) -> bool:
        return (self.root / "patroni.json").exists()

    # -- lifecycle ---------------------------------------------------------------------

    def up(self) -> None:
        """Start etcd and the three members (making them first if needed); wait until healthy."""
        found = patroni_command(self.user)
        if found is None:
            raise SandboxError(
                f"Patroni is not installed, or the {self.user} user cannot run it",
                hint="pip install 'patroni[psycopg3,etcd3]' (the dev extra has it)",
            )
        if shutil.which("etcd") is None:
            raise SandboxError("etcd is not installed", hint="apt-get install etcd-server")
        made = self.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if not made:
            self._make()
        self._start_etcd()
        command, env = found
        for k, name in enumerate(MEMBERS, 1):
            self._start_member(k, name, command, env)
        self._wait_healthy()
        self._write_params()

    def _make(self) -> None:
        password = secrets.token_urlsafe(18)
        self.secret_file.write_text(password)
        self.secret_file.chmod(0o600)
        scope = f"drctl-sandbox-{secrets.token_hex(3)}"
        for k, name in enumerate(MEMBERS, 1):
            node = self.root / name
            (node / "run").mkdir(parents=True, exist_ok=True)
            config = patroni_config(
                scope=scope, name=name, api_port=self.api_port(k), pg_port=self.pg_port(k),
                root=node, bin_dir=self.bin_dir, etcd_hosts=f"127.0.0.1:{self.etcd_port}",
                password=password,
            )  # fmt: skip
            (node / "patroni.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
            (node / "patroni.yml").chmod(0o600)
            if os.geteuid() == 0:
                for path in (node, node / "run", node / "patroni.yml"):
                    shutil.chown(path, self.user)
        (self.root / "patroni.json").write_text(
            json.dumps({"base_port": self.base_port, "scope": scope}, indent=2) + "\n"
        )

    def _spawn(self, argv: list[str], log: Path, pid_file: Path, **kw: Any) -> None:
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **kw,
            )  # fmt: skip
        pid_file.write_text(f"{process.pid}\n")

    def _start_etcd(self) -> None:
        pid_file = self.root / "etcd.pid"
        if alive(pid_file):
            return
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_port + 1}"
        self._spawn(
            ["etcd", "--name", "sandbox", "--data-dir", str(self.root / "etcd"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"sandbox={peer}", "--initial-cluster-state", "new"],
            self.root / "etcd.log", pid_file,
        )  # fmt: skip

    def _start_member(self, k: int, name: str, command: list[str], env: dict[str, str]) -> None:
        node = self.root / name
        pid_file = self.root / f"{name}.pid"
        if alive(pid_file):
            return
        user = pwd.getpwnam(self.user)
        other = os.geteuid() != user.pw_uid
        self._spawn(
            [*command, str(node / "patroni.yml")], node / "patroni.log", pid_file, cwd=node,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(node),
                 "LANG": "C.UTF-8", **env},
            user=user.pw_uid if other else None, group=user.pw_gid if other else None,
            extra_groups=[] if other else None,
        )  # fmt: skip

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_WITHIN
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.cluster_json() or {}
            members = last.get("members", [])
            leaders = [
                m for m in members if m.get("role") == "leader" and m.get("state") == "running"
            ]
            streaming = [m for m in members if m.get("state") == "streaming"]
            if leaders and len(streaming) == len(MEMBERS) - 1:
                return
            for name in MEMBERS:
                if not alive(self.root / f"{name}.pid"):
                    raise SandboxError(
                        f"Patroni {name} exited; see {self.root / name / 'patroni.log'}"
                    )
            time.sleep(0.5)
        raise SandboxError(
            f"the Patroni cluster has no leader with two streaming replicas after "
            f"{START_WITHIN:.0f}s: {last.get('members')}; see {self.root}/pg*/patroni.log"
        )

    def down(self) -> None:
        """SIGKILL every member, its postmaster and etcd; remove the directory."""
        for name in MEMBERS:
            _kill_group(read_pid(self.root / f"{name}.pid"))
            # The postmaster runs in a session of its own (Patroni calls setsid for it).
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = (self.root / name / "data" / "postmaster.pid").read_text()
                _kill_group(int(text.splitlines()[0]))
        _kill_group(read_pid(self.root / "etcd.pid"))
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    # -- description -------------------------------------------------------------------

    def cluster_json(self) -> dict[str, Any] | None:
        """``GET /cluster`` from the first member that answers (None: none does)."""
        import urllib.error
        import urllib.request

        for k in range(1, len(MEMBERS) + 1):
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.api_port(k)}/cluster", timeout=2
                ) as answer:
                    found = json.loads(answer.read())
                if isinstance(found, dict):
                    return found
        return None

    def status_json(self) -> dict[str, Any]:
        """``patroni.members`` (name, role, state, lag, timeline, REST API URL) and ``patroni.paused``."""
        found = self.cluster_json() or {}
        members = [
            {
                "name": m.get("name"), "role": m.get("role"), "state": m.get("state"),
                "lag": m.get("lag"), "timeline": m.get("timeline"),
                "api_url": str(m.get("api_url", "")).removesuffix("/patroni"),
                "host": m.get("host"), "port": m.get("port"),
            }
            for m in found.get("members", [])
        ]  # fmt: skip
        return {
            "members": members,
            "paused": bool(found.get("pause")),
            "answering": bool(found),
            "params": {
                "switchover": str(self.root / "switchover.yaml"),
                "manual_failover": str(self.root / "manual-failover.yaml"),
            },
        }

    def _write_params(self) -> None:
        """The example runbooks' params, pointed at the live leader."""
        found = self.cluster_json() or {}
        members = {m["name"]: m for m in found.get("members", []) if "name" in m}
        leader = next((n for n, m in members.items() if m.get("role") == "leader"), MEMBERS[0])
        others = [n for n in MEMBERS if n != leader]
        urls = [f"http://127.0.0.1:{self.api_port(k)}" for k in range(1, len(MEMBERS) + 1)]
        common = {
            "patroni_members": urls, "patroni_user": USER,
            "patroni_password_ref": f"${{file:{self.secret_file}}}",
        }  # fmt: skip

        def node(name: str) -> tuple[str, str]:
            k = MEMBERS.index(name) + 1
            dsn = f"host=127.0.0.1 port={self.pg_port(k)} dbname=postgres user=postgres connect_timeout=5"
            return dsn, str(self.root / name / "data")

        switchover = {**common, "leader": leader, "candidate": others[0], "replicas": 2}
        manual = {
            **common, "old_member": leader, "old_dsn": node(leader)[0], "old_data": node(leader)[1],
            "new_member": others[0], "new_dsn": node(others[0])[0],
            "other_member": others[1], "other_dsn": node(others[1])[0],
            "other_data": node(others[1])[1], "pg_bin": self.bin_dir, "os_user": self.user,
        }  # fmt: skip
        for file, values in (("switchover.yaml", switchover), ("manual-failover.yaml", manual)):
            text = "".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items())
            (self.root / file).write_text(text)


def _kill_group(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return
        time.sleep(0.05)
