"""A real OpenSSH sshd on 127.0.0.1 for integration tests, with generated keys.

Import the fixture explicitly from a test module::

    from tests.integration.sshd import sshd_server  # noqa: F401

The server runs in the foreground (``sshd -D -e -f CONFIG``) from /usr/sbin/sshd on a
free loopback port, with its own configuration: a generated ed25519 host key, public
key authentication only, for the user the tests run as (root logs in with a key).
Two user keys are authorised: a plain one and one locked with a passphrase (for the
secret-masking tests). ``known_hosts`` holds the server's key as ``[127.0.0.1]:PORT``.
Every wait is bounded; the server is always stopped at teardown.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import require_or_skip

SSHD = Path("/usr/sbin/sshd")
#: Bound on the server answering with its banner after it is started.
START_TIMEOUT = 10.0
#: Bound on the server exiting after SIGTERM (then SIGKILL).
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class SshServer:
    """A running sshd and the files a client needs to reach it."""

    root: Path
    host: str
    port: int
    user: str
    key_file: Path
    locked_key_file: Path
    key_passphrase: str
    known_hosts: Path
    host_key: str  # "ssh-ed25519 AAAA…", as known_hosts holds it
    log_file: Path
    process: subprocess.Popen[bytes]

    @property
    def known_hosts_name(self) -> str:
        return f"[{self.host}]:{self.port}"

    def target(self, **overrides: Any) -> dict[str, Any]:
        """This server as an ``ssh`` target mapping (as the engine hands it to a step)."""
        return {
            "type": "ssh", "host": self.host, "port": self.port, "user": self.user,
            "key_file": str(self.key_file), "known_hosts": str(self.known_hosts),
            "connect_timeout": 5.0, **overrides,
        }  # fmt: skip

    def write_known_hosts(self, path: Path, *lines: str) -> Path:
        """A known_hosts file holding exactly ``lines``."""
        path.write_text("".join(f"{line}\n" for line in lines))
        return path

    def changed_known_hosts(self, path: Path) -> Path:
        """A known_hosts file that holds another ed25519 key for this server's ``[host]:port``."""
        other = keygen(path.with_suffix(".otherkey"))
        return self.write_known_hosts(path, f"{self.known_hosts_name} {other}")

    def host_key_fingerprint(self) -> str:
        """The server's key fingerprint, ``SHA256:…``, as ssh-keygen computes it."""
        out = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(self.root / "host_ed25519.pub")],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return out.stdout.split()[1]

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def keygen(path: Path, passphrase: str = "") -> str:
    """Generate an ed25519 key pair at ``path``; returns the public key as ``type base64``."""
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "drctl-test",
            "-f",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    kind, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def free_loopback_port() -> int:
    """A port nothing listens on now (the kernel's choice); also a target for 'refused'."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.settimeout(1.0)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _skip_without_sshd() -> None:
    if not SSHD.is_file():
        require_or_skip(f"no OpenSSH server at {SSHD} (apt-get install openssh-server)")
    if shutil.which("ssh-keygen") is None:
        require_or_skip("no ssh-keygen on PATH (apt-get install openssh-client)")
    try:
        import paramiko  # noqa: F401
    except ImportError:
        require_or_skip("paramiko is not installed")


def _config(root: Path, port: int) -> Path:
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        "AddressFamily inet\n"
        f"HostKey {root / 'host_ed25519'}\n"
        f"PidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        # The keys live under pytest's temp directory, whose modes sshd would refuse.
        "StrictModes no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        "LoginGraceTime 10\n"
        "MaxStartups 100\n"
        "MaxSessions 50\n"
        "LogLevel VERBOSE\n"
    )
    return config


def start_sshd(root: Path) -> tuple[SshServer, Callable[[], None]]:
    """Generate keys under ``root``, start sshd, wait for its banner; returns it and its stop."""
    _skip_without_sshd()
    if os.geteuid() == 0:
        # Privilege separation needs it; without systemd nothing creates it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    host_key = keygen(root / "host_ed25519")
    user_key = keygen(root / "id_ed25519")
    passphrase = f"pass-{secrets.token_hex(8)}"
    locked_key = keygen(root / "id_locked", passphrase)
    (root / "authorized_keys").write_text(f"{user_key}\n{locked_key}\n")
    log_file = root / "sshd.log"
    last = ""
    for _ in range(3):  # another process may take the port between choosing and binding it
        port = free_loopback_port()
        config = _config(root, port)
        tested = subprocess.run(
            [str(SSHD), "-t", "-f", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if tested.returncode != 0:
            pytest.fail(f"sshd refuses the test configuration: {tested.stderr.strip()}")
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None and not _banner(port):
            time.sleep(0.05)
        if proc.poll() is None and _banner(port):
            known_hosts = root / "known_hosts"
            known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
            server = SshServer(
                root=root, host="127.0.0.1", port=port, user=getpass.getuser(),
                key_file=root / "id_ed25519", locked_key_file=root / "id_locked",
                key_passphrase=passphrase, known_hosts=known_hosts, host_key=host_key,
                log_file=log_file, process=proc,
            )  # fmt: skip
            return server, functools.partial(_stop, proc)
        _stop(proc)
        last = log_file.read_text(errors="replace")[-2000:]
    pytest.fail(f"sshd did not answer on 127.0.0.1 within {START_TIMEOUT:g}s:\n{last}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="module")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One sshd for a test module; tests must not change its keys or configuration."""
    server, stop = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stop()
