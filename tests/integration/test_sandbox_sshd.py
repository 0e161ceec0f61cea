"""The sandbox's sshd starts reliably, and says why when it cannot (drctl/sandbox/sshd.py).

Real OpenSSH sshd on loopback ports; the port is held by a real listening socket.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drctl.sandbox.pgnode import SandboxError
from drctl.sandbox.sshd import Sshd
from tests.integration.conftest import require_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An unstarted sandbox sshd on a free loopback port, always stopped afterwards."""
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        require_or_skip("OpenSSH sshd is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Sshd(tmp_path / "ssh", port)
    yield server
    server.stop()


def _hold(port: int) -> socket.socket:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_a_port_released_during_start_up_is_waited_for(sshd: Sshd) -> None:
    """A previous owner that lets go of the port within seconds does not fail the start."""
    holder = _hold(sshd.port)
    release = threading.Timer(1.0, holder.close)
    release.start()
    try:
        sshd.start()
    finally:
        release.cancel()
        holder.close()
    assert sshd.running()


def test_a_port_that_stays_held_is_named_with_its_holder(sshd: Sshd) -> None:
    """A port held by another program is a prompt error naming the port, not a 20 s timeout."""
    holder = _hold(sshd.port)
    try:
        started = time.monotonic()
        with pytest.raises(SandboxError) as caught:
            sshd.start()
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    message = caught.value.message
    assert f"port {sshd.port} on 127.0.0.1 is held by another program" in message, message
    assert "did not answer" not in message
    assert elapsed < 15, elapsed  # bounded by the 5 s release wait, far from the old 20 s
