"""Firewall rules on loopback ports a test owns (iptables), always removed afterwards.

``drop(address, port)`` drops TCP packets sent to ``address:port`` on ``lo`` while the
``with`` block runs: a client connecting there hangs (DROP, not REJECT: a partition, not
a closed port), while other paths to the same server — another loopback address, its
unix socket — still work. Each rule carries a comment naming the port, so a rule left by
a crashed test is recognisable, and is deleted by exact spec in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

from tests.integration.conftest import require_or_skip


def rule(address: str, port: int, tag: str) -> list[str]:
    """The OUTPUT rule spec (without -I/-D/-C) dropping TCP to ``address:port`` on lo."""
    return [
        "OUTPUT", "-o", "lo", "-p", "tcp", "-d", address, "--dport", str(port),
        "-m", "comment", "--comment", f"drctl-test-{tag}-{port}", "-j", "DROP",
    ]  # fmt: skip


def iptables_argv(action: str, spec: list[str]) -> list[str]:
    """An iptables command line; ``-w 10`` waits for the xtables lock other tests may hold."""
    return ["iptables", "-w", "10", action, *spec]


def shell_line(action: str, spec: list[str]) -> str:
    """The same command as one /bin/sh line, for a runbook's shell step."""
    return " ".join(iptables_argv(action, spec))


def require_iptables() -> None:
    """Skip (or fail in CI) unless iptables is there and this process may change rules."""
    if shutil.which("iptables") is None or os.geteuid() != 0:
        require_or_skip("iptables (and root) for firewall rules on loopback")
    probe = subprocess.run(
        ["iptables", "-w", "10", "-S", "OUTPUT"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        require_or_skip(f"iptables cannot list rules here: {probe.stderr.strip()}")


def present(spec: list[str]) -> bool:
    done = subprocess.run(iptables_argv("-C", spec), capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def remove(spec: list[str]) -> None:
    """Delete every copy of the rule (bounded: a rule is inserted at most a few times)."""
    for _ in range(10):
        if not present(spec):
            return
        subprocess.run(iptables_argv("-D", spec), capture_output=True, timeout=30, check=True)


@contextlib.contextmanager
def drop(address: str, port: int, tag: str = "drop") -> Iterator[list[str]]:
    """Drop TCP to ``address:port`` on loopback for the block; the rule is always removed."""
    require_iptables()
    spec = rule(address, port, tag)
    try:
        subprocess.run(iptables_argv("-I", spec), capture_output=True, timeout=30, check=True)
        yield spec
    finally:
        remove(spec)
