"""known_hosts, strictly: entries loaded with ``@revoked`` honoured, and a policy that refuses.

paramiko's own loader skips marker lines, so a key revoked in the file but listed in
another line would be trusted; here it never is. An unknown host is refused with the
fingerprint it offered (to check on the host itself), never added to the file.
Host certificates (``@cert-authority``) are not supported: such a host is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drctl.errors import StepError, first_line
from drctl.providers.ssh.errors import HostKeyRevoked, HostKeyUnknown
from drctl.runbook.targets import SshTarget


def known_hosts_name(target: SshTarget) -> str:
    """The name the host's entry has in known_hosts: ``host``, or ``[host]:port``."""
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"


def fingerprint(key: Any) -> str:
    """``ssh-ed25519 SHA256:…``, as ssh-keygen -l shows a key."""
    return f"{key.get_name()} {key.fingerprint}"


@dataclass
class KnownHosts:
    """What a known_hosts file says beyond its plain entries (those go into paramiko's HostKeys)."""

    path: Path
    revoked: list[Any] = field(default_factory=list)
    cert_authority: bool = False

    def revocation(self, where: str, key: Any) -> HostKeyRevoked | None:
        """The error to raise if ``key`` is revoked, else None."""
        if any(key == bad for bad in self.revoked):
            return HostKeyRevoked(
                f"{where}: the server's host key {fingerprint(key)} is marked @revoked in "
                f"known_hosts {self.path}; refusing to connect"
            )
        return None


def load_known_hosts(client: Any, path: Path, where: str) -> KnownHosts:
    """Load the file's plain entries into paramiko ``client``, leaving revoked keys out."""
    from paramiko.hostkeys import HostKeyEntry

    found = KnownHosts(path)
    entries = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                marker, _, rest = line.partition(" ")
                if marker == "@revoked":
                    entry = HostKeyEntry.from_line(rest.strip(), lineno)
                    if entry is not None:
                        found.revoked.append(entry.key)
                found.cert_authority |= marker == "@cert-authority"
                continue
            entry = HostKeyEntry.from_line(line, lineno)
            if entry is not None:
                entries.append(entry)
    except Exception as exc:  # OSError, or paramiko's InvalidHostKey for a broken line
        raise StepError(f"{where}: cannot read known_hosts {path}: {first_line(exc)}") from exc
    known = client.get_host_keys()
    for entry in entries:
        if found.revocation(where, entry.key) is None:
            for name in entry.hostnames:
                known.add(name, entry.key.get_name(), entry.key)
    return found


class RefuseUnknownHost:
    """paramiko's missing-host-key policy, duck-typed (paramiko is imported lazily)."""

    def __init__(self, where: str, known_hosts: KnownHosts) -> None:
        self.where = where
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        revoked = self.known_hosts.revocation(self.where, key)
        if revoked is not None:
            raise revoked
        certs = (
            " (host certificates, @cert-authority, are not supported: list the host's own key)"
            if self.known_hosts.cert_authority
            else ""
        )
        raise HostKeyUnknown(
            f"{self.where}: host key not trusted: {hostname} has no entry in known_hosts "
            f"{self.known_hosts.path} (the server offers {fingerprint(key)}); drctl never "
            "accepts an unknown host key: check that fingerprint on the host itself "
            f"(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then add the entry{certs}"
        )
