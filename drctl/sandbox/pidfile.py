"""The sandbox's daemons (named, sshd) by their pid files: alive?, stop (bounded)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(path: Path) -> bool:
    """A pid file names a live process (it may still be starting up)."""
    pid = read_pid(path)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(path: Path, timeout: float = 10.0) -> None:
    """SIGTERM the process, wait up to ``timeout`` for it to exit, then SIGKILL it."""
    pid = read_pid(path)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
