"""The sandbox's SSH server: OpenSSH sshd on loopback with generated host and user keys.

Runbooks reach it with strict host-key checking through the generated ``known_hosts``
(``[host]:port``); ``down`` stops it through its pid file.

Start-up is checked, not guessed at. sshd daemonizes *before* it binds its port, so a
daemonizing sshd that cannot bind (the port still held by a previous sandbox's sshd
that is shutting down) exits 0 with the reason only in its log, and the old "poll the
port for 20 s" check then either timed out or, worse, was answered by the old server.
Polling with connections also costs: each one is a pre-authentication session that
sshd re-executes itself for, and on a loaded machine more than ``MaxStartups`` (10) of
them pending makes sshd drop new ones. So: the port must be free first (a previous
owner gets a few seconds to let go); readiness is sshd's own "Server listening" log
line, a failure its "fatal:" or "Cannot bind" line, noticed at once; then one banner
check with a patient read; and every failure quotes what sshd itself logged.
"""

from __future__ import annotations

import errno
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

#: How long sshd may take to listen on a loaded machine, and a previous one to let go.
START_TIMEOUT = 60.0
PORT_RELEASE_TIMEOUT = 5.0


def _start_lines(log: Path, port: int) -> tuple[bool, bool]:
    """Whether sshd's log says it listens on ``port``, and whether it says it gave up."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False, False
    listening = any(
        "Server listening on" in line and f"port {port}." in line for line in text.splitlines()
    )
    failed = "fatal:" in text or "Cannot bind any address" in text
    return listening, failed


def _said(log: Path, stderr: str) -> str:
    """The last lines sshd wrote (its log, else its stderr), as one line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in (text or stderr).splitlines() if line.strip()]
    return " / ".join(lines[-3:])[-400:] or "(sshd wrote nothing)"


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
        self._wait_for_free_port()
        log = self.root / "sshd.log"
        log.write_text("")
        self.pid_file.unlink(missing_ok=True)
        done = subprocess.run(
            [sshd_binary(), "-f", str(self.root / "sshd_config"), "-E", str(log)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SandboxError(f"sshd did not start: {_said(log, done.stderr or done.stdout)}")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            listening, failed = _start_lines(log, self.port)
            if listening:
                break
            if failed:
                # The daemon logged why it gave up (e.g. "Cannot bind any address.").
                raise SandboxError(
                    f"sshd did not start on {self.host}:{self.port}: {_said(log, '')}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise SandboxError(
                    f"sshd did not listen on {self.host}:{self.port} within "
                    f"{START_TIMEOUT:g}s: {_said(log, '')}"
                )
            time.sleep(0.05)
        if not self._answers(timeout=10.0):
            self.stop()
            raise SandboxError(
                f"sshd listens on {self.host}:{self.port} but sent no SSH banner within 10s: "
                f"{_said(log, '')}"
            )

    def _wait_for_free_port(self) -> None:
        """Wait a little for a previous owner of the port to let go; then say who holds it."""
        deadline = time.monotonic() + PORT_RELEASE_TIMEOUT
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.host, self.port))
                    return
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise SandboxError(
                            f"sshd cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
                        ) from exc
                    reason = exc.strerror or str(exc)
            if time.monotonic() > deadline:
                what = "an SSH server" if self._answers(timeout=2.0) else "another program"
                raise SandboxError(
                    f"port {self.port} on {self.host} is held by {what}: {reason}",
                    hint="a previous sandbox's sshd may still run: drctl sandbox down, "
                    f"or find it with: ss -ltnp 'sport = :{self.port}'",
                )
            time.sleep(0.1)

    def _answers(self, timeout: float = 1.0) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def running(self) -> bool:
        return pidfile.alive(self.pid_file) and self._answers()

    def stop(self) -> None:
        pidfile.stop(self.pid_file)
