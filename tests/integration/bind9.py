"""A real authoritative BIND9 on loopback, with a zone that accepts TSIG-signed updates.

Import the fixture explicitly from a test module::

    from tests.integration.bind9 import Bind9, bind9  # noqa: F401

or start one without pytest (the sandbox does)::

    server = Bind9.start(Path("/tmp/dns"), records={"db": ("A", 30, ["127.0.0.2"])})
    try:
        server.target()  # an rfc2136 target mapping: server, port, zone, TSIG key
    finally:
        server.stop()

``named`` runs in the foreground (``-g``) with its own configuration, zone file, pid
file and journal in ``root``, listening on one free high port of 127.0.0.1 (UDP and
TCP), no recursion, no rndc (``controls { };``). The zone allows updates signed
with one generated hmac-sha256 key. ``start`` waits, bounded, until the server
answers the zone's SOA; ``stop`` terminates it, bounded, and waits for it to exit so
the port can be reused. Everything it logs (updates included) goes to ``log_file``.
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import require_or_skip

NAMED = os.environ.get("DRCTL_NAMED", shutil.which("named") or "/usr/sbin/named")
#: Bound on the server starting to answer, and on it exiting after SIGTERM.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

ZONE = "example."
KEY_NAME = "drctl-test"
ALGORITHM = "hmac-sha256"
#: name (relative to the zone, "@" for the apex) → (type, TTL, values)
Records = Mapping[str, tuple[str, int, Sequence[str]]]
DEFAULT_RECORDS: Records = {
    "db": ("A", 30, ["127.0.0.2"]),
    "www": ("A", 300, ["127.0.0.10", "127.0.0.11"]),
    "standby": ("A", 300, ["127.0.0.3"]),
}

#: Below the ephemeral range, beside pg_sandbox's (see there).
_PORTS_FROM = 22100
_PORTS_TO = 23900
_taken: set[int] = set()


class Bind9Error(RuntimeError):
    """Raised when named cannot be started (the message carries the tail of its log)."""


def named_available() -> bool:
    return Path(NAMED).is_file() and os.access(NAMED, os.X_OK)


def new_secret() -> str:
    """A fresh TSIG secret for hmac-sha256: 32 random bytes, base64."""
    return base64.b64encode(os.urandom(32)).decode()


def free_port() -> int:
    """A loopback port free for both UDP and TCP, not handed out before by this process."""
    span = _PORTS_TO - _PORTS_FROM
    start = (os.getpid() * 7) % span
    for i in range(span):
        port = _PORTS_FROM + (start + i) % span
        if port in _taken:
            continue
        if _bindable(port, socket.SOCK_STREAM) and _bindable(port, socket.SOCK_DGRAM):
            _taken.add(port)
            return port
    raise Bind9Error(f"no free port in {_PORTS_FROM}-{_PORTS_TO}")


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Bind9:
    """One running named: where it listens, its zone, and the key that may update it."""

    root: Path
    port: int
    zone: str
    key_name: str
    algorithm: str
    secret: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    user: str | None = None

    host = "127.0.0.1"

    @property
    def conf_file(self) -> Path:
        return self.root / "named.conf"

    @property
    def zone_file(self) -> Path:
        return self.root / f"{self.zone.rstrip('.') or 'root'}.zone"

    @property
    def log_file(self) -> Path:
        return self.root / "named.log"

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        root: Path,
        *,
        port: int | None = None,
        zone: str = ZONE,
        records: Records = DEFAULT_RECORDS,
        key_name: str = KEY_NAME,
        algorithm: str = ALGORITHM,
        secret: str | None = None,
        user: str | None = None,
    ) -> Bind9:
        """Write the configuration and zone under ``root`` and start named on ``port``.

        ``user``: run as this OS user (``named -u``; only when started as root; the
        directory is then handed to that user). Raises Bind9Error when named does not
        answer within START_TIMEOUT.
        """
        zone = zone if zone.endswith(".") else zone + "."
        server = cls(
            root=root, port=port or free_port(), zone=zone, key_name=key_name,
            algorithm=algorithm, secret=secret or new_secret(), user=user,
        )  # fmt: skip
        root.mkdir(parents=True, exist_ok=True)
        server._write_config(records)
        server._launch()
        return server

    def _write_config(self, records: Records) -> None:
        self.conf_file.write_text(
            f"""\
options {{
    directory "{self.root}";
    pid-file "{self.root}/named.pid";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-transfer {{ none; }};
}};
controls {{ }};
key "{self.key_name}" {{
    algorithm {self.algorithm};
    secret "{self.secret}";
}};
zone "{self.zone}" {{
    type primary;
    file "{self.zone_file.name}";
    allow-update {{ key "{self.key_name}"; }};
}};
"""
        )
        self.conf_file.chmod(0o640)  # it holds the secret
        lines = [
            f"$ORIGIN {self.zone}",
            "$TTL 300",
            f"@ 3600 IN SOA ns1.{self.zone} hostmaster.{self.zone} 1 3600 600 86400 30",
            f"@ 3600 IN NS ns1.{self.zone}",
            "ns1 3600 IN A 127.0.0.1",
        ]
        for name, (rdtype, ttl, values) in records.items():
            lines += [f"{name} {ttl} IN {rdtype} {value}" for value in values]
        self.zone_file.write_text("\n".join(lines) + "\n")
        if self.user and os.geteuid() == 0:
            entry = pwd.getpwnam(self.user)
            for path in [self.root, *self.root.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _launch(self) -> None:
        argv = [NAMED, "-g", "-4", "-n", "1", "-c", str(self.conf_file)]
        if self.user and os.geteuid() == 0:
            argv += ["-u", self.user]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Bind9Error(f"named exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.soa_serial(timeout=0.5) is not None:
                return
            time.sleep(0.1)
        self.stop()
        raise Bind9Error(f"named did not answer within {START_TIMEOUT:g}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate named and wait (bounded) until it has exited; SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop and start again on the same port, keeping the zone and its journal."""
        self.stop()
        self._launch()

    # -- what tests and the sandbox need --------------------------------------------

    def target(self, **overrides: Any) -> dict[str, Any]:
        """This server as an rfc2136 target mapping (secret included: for direct calls)."""
        return {
            "type": "rfc2136", "server": self.host, "port": self.port, "zone": self.zone,
            "tsig_key_name": self.key_name, "tsig_algorithm": self.algorithm,
            "tsig_secret": self.secret, **overrides,
        }  # fmt: skip

    def fqdn(self, name: str) -> str:
        """``db`` → ``db.example.``; ``@`` → the apex; absolute names unchanged."""
        if name.endswith("."):
            return name
        return self.zone if name == "@" else f"{name}.{self.zone}"

    def query(self, name: str, rdtype: str = "A", timeout: float = 2.0) -> tuple[int, list[str]]:
        """(TTL, sorted values) of an RRset as the server has it now; (0, []) if absent.

        An unsigned query over TCP, independent of the code under test.
        """
        import dns.message
        import dns.query
        import dns.rcode
        import dns.rdatatype

        request = dns.message.make_query(self.fqdn(name), rdtype)
        response = dns.query.tcp(request, self.host, timeout=timeout, port=self.port)
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise Bind9Error(f"{name} {rdtype}: {dns.rcode.to_text(response.rcode())}")
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.from_text(rdtype):
                return rrset.ttl, sorted(rdata.to_text() for rdata in rrset)
        return 0, []

    def set_rrset(self, name: str, rdtype: str, ttl: int, values: Sequence[str]) -> None:
        """Replace (or, with no values, delete) an RRset with a signed update of our own."""
        import dns.query
        import dns.rcode
        import dns.tsig
        import dns.update

        update = dns.update.UpdateMessage(
            self.zone, keyring=dns.tsig.Key(self.key_name, self.secret, self.algorithm)
        )
        if values:
            update.replace(self.fqdn(name), ttl, rdtype, *values)
        else:
            update.delete(self.fqdn(name), rdtype)
        response = dns.query.tcp(update, self.host, timeout=5.0, port=self.port)
        if response.rcode() != dns.rcode.NOERROR:
            raise Bind9Error(f"update {name} {rdtype}: {dns.rcode.to_text(response.rcode())}")

    def serial(self) -> int:
        """The zone's SOA serial now; Bind9Error when the server does not answer."""
        found = self.soa_serial()
        if found is None:
            raise Bind9Error(f"no SOA answer from {self.host}:{self.port}:\n{self.log_tail()}")
        return found

    def soa_serial(self, timeout: float = 2.0) -> int | None:
        """The zone's SOA serial, or None when the server does not answer."""
        import dns.exception
        import dns.message
        import dns.query

        request = dns.message.make_query(self.zone, "SOA")
        try:
            response = dns.query.udp(request, self.host, timeout=timeout, port=self.port)
        except (dns.exception.DNSException, OSError):
            return None
        for rrset in response.answer:
            for rdata in rrset:
                return int(rdata.serial)
        return None

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def updates_logged(self, owner: str | None = None) -> int:
        """How many update requests named has applied to the zone (touching ``owner``, if given).

        named logs one ``updating zone`` line per change in a request, prefixed with the
        client's address and port; one request is one distinct prefix.
        """
        zone = f"'{self.zone.rstrip('.')}/IN'"
        at = f" at '{self.fqdn(owner).rstrip('.')}'" if owner else ""
        requests = set()
        for line in self.log_text().splitlines():
            if f"updating zone {zone}: " in line and "update unsuccessful" not in line:
                if at and at not in line:
                    continue
                requests.add(line.split(": updating zone", 1)[0].split(" ", 2)[-1])
        return len(requests)


def bind9_available() -> None:
    """Skip (or fail under DRCTL_REQUIRE_SERVICES=1) when named or dnspython is missing."""
    if not named_available():
        require_or_skip(f"BIND9's named is not at {NAMED} (apt-get install bind9)")
    try:
        import dns.version  # noqa: F401
    except ImportError:
        require_or_skip("dnspython is not installed")


@pytest.fixture(scope="module")
def bind9() -> Iterator[Bind9]:
    """One authoritative BIND9 for a test module, on a free loopback port; stopped afterwards."""
    bind9_available()
    root = Path(tempfile.mkdtemp(prefix="drctl-bind9-"))
    try:
        server = Bind9.start(root)
    except Bind9Error as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
