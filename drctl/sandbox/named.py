"""The sandbox's authoritative DNS: BIND9 on loopback, a zone open to TSIG-signed updates.

``named`` daemonizes itself (no ``-g``), so it outlives ``drctl sandbox up``; its pid
file is how ``down`` stops it. ``controls { };`` keeps it off rndc's port 953.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from drctl.sandbox import pidfile
from drctl.sandbox.pgnode import SandboxError

ZONE = "sandbox.drctl.test."
KEY_NAME = "drctl-sandbox"
ALGORITHM = "hmac-sha256"


def named_binary() -> str:
    found = os.environ.get("DRCTL_NAMED") or shutil.which("named") or "/usr/sbin/named"
    if not Path(found).is_file():
        raise SandboxError(
            "BIND9's named is not installed",
            hint="apt-get install bind9 (the sandbox's DNS server)",
        )
    return found


@dataclass(frozen=True)
class Named:
    root: Path
    port: int
    host: str = "127.0.0.1"
    zone: str = ZONE

    @property
    def secret_file(self) -> Path:
        return self.root / "tsig.secret"

    @property
    def pid_file(self) -> Path:
        return self.root / "named.pid"

    def start(self, records: dict[str, str]) -> None:
        """Write the config and zone (first time only) and start named if it is not running."""
        if self.running():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.secret_file.exists():
            self.secret_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
            self.secret_file.chmod(0o600)
            self._write_zone(records)
        secret = self.secret_file.read_text().strip()
        (self.root / "named.conf").write_text(
            f"""options {{
    directory "{self.root}";
    pid-file "{self.pid_file}";
    listen-on port {self.port} {{ {self.host}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
logging {{
    channel file {{ file "{self.root}/named.log"; severity info; print-time yes; }};
    category default {{ file; }};
    category update {{ file; }};
}};
key "{KEY_NAME}" {{ algorithm {ALGORITHM}; secret "{secret}"; }};
zone "{self.zone}" {{
    type primary;
    file "{self.root}/zone.db";
    allow-update {{ key "{KEY_NAME}"; }};
}};
"""
        )
        done = subprocess.run(
            [named_binary(), "-4", "-c", str(self.root / "named.conf")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SandboxError(
                f"named did not start: {(done.stderr or done.stdout).strip()[-300:]}"
            )
        deadline = time.monotonic() + 20
        while not self.answers():
            if time.monotonic() > deadline:
                raise SandboxError(f"named did not answer on {self.host}:{self.port} within 20s")
            time.sleep(0.1)

    def _write_zone(self, records: dict[str, str]) -> None:
        lines = [
            "$TTL 30",
            f"@ IN SOA ns.{self.zone} hostmaster.{self.zone} 1 60 30 600 30",
            f"@ IN NS ns.{self.zone}",
            f"ns IN A {self.host}",
            *(f"{name} 30 IN A {ip}" for name, ip in records.items()),
        ]
        (self.root / "zone.db").write_text("\n".join(lines) + "\n")

    def answers(self) -> bool:
        import dns.exception
        import dns.message
        import dns.query

        try:
            reply = dns.query.tcp(
                dns.message.make_query(self.zone, "SOA"), self.host, port=self.port, timeout=1
            )
        except (OSError, EOFError, dns.exception.DNSException):
            return False
        return bool(reply.answer)

    def running(self) -> bool:
        return pidfile.alive(self.pid_file) and self.answers()

    def stop(self) -> None:
        pidfile.stop(self.pid_file)
