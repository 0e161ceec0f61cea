"""The sandbox's SSH server: OpenSSH sshd on loopback with generated host and user keys.

sshd daemonizes itself; ``down`` stops it through its pid file. Runbooks reach it with
strict host-key checking through the generated ``known_hosts`` (``[host]:port``).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from drctl.sandbox import pidfile
from drctl.sandbox.pgnode import SandboxError


def sshd_binary() -> str:
    found = os.environ.get("DRCTL_SSHD") or shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(found).is_file():
        raise SandboxError("OpenSSH's sshd is not installed", hint="apt-get install openssh-server")
    return found


@dataclass(frozen=True)
class Sshd:
    root: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def user(self) -> str:
        return getpass.getuser()

    @property
    def key_file(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def pid_file(self) -> Path:
        return self.root / "sshd.pid"

    def start(self) -> None:
        if self.running():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        host_key = self.root / "ssh_host_ed25519_key"
        for key in (host_key, self.key_file):
            if not key.exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                    check=True, capture_output=True, timeout=30,
                )  # fmt: skip
        shutil.copy(f"{self.key_file}.pub", self.root / "authorized_keys")
        public = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {public[0]} {public[1]}\n")
        (self.root / "sshd_config").write_text(
            f"""Port {self.port}
ListenAddress {self.host}
HostKey {host_key}
PidFile {self.pid_file}
AuthorizedKeysFile {self.root}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
"""
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation dir, no systemd here
        done = subprocess.run(
            [sshd_binary(), "-f", str(self.root / "sshd_config"), "-E", str(self.root / "sshd.log")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SandboxError(f"sshd did not start: {(done.stderr or done.stdout).strip()[-300:]}")
        deadline = time.monotonic() + 20
        while not self._answers():
            if time.monotonic() > deadline:
                raise SandboxError(f"sshd did not answer on {self.host}:{self.port} within 20s")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def running(self) -> bool:
        return pidfile.alive(self.pid_file) and self._answers()

    def stop(self) -> None:
        pidfile.stop(self.pid_file)
