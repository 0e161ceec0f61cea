"""Running a local command for a step: live output, a size cap, and a timeout that
kills the whole process group (a shell's children included)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from drctl.errors import Cancelled, StepError, StepTimeout
from drctl.steps.base import StepContext

_SETPRIV = shutil.which("setpriv")


@dataclass(frozen=True)
class Completed:
    exit_code: int
    output: str
    truncated: bool


def run_command(
    ctx: StepContext,
    command: str | list[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    limit: int = 65536,
    grace: float = 5.0,
) -> Completed:
    """Run ``command`` (a string through /bin/sh, a list as argv) within ctx's deadline."""
    if ctx.remaining() <= 0:
        raise StepTimeout("no time left to run the command")
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    if _SETPRIV:
        # If drctl is killed (kill -9, a lost machine), the command dies with it rather
        # than finishing unobserved while a resume decides whether to run it again.
        argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    except OSError as exc:
        raise StepError(f"cannot start command: {exc.strerror or exc}") from exc
    kept: list[bytes] = []
    size = 0
    truncated = False

    def pump() -> None:
        nonlocal size, truncated
        assert proc.stdout is not None
        for raw in proc.stdout:
            ctx.log(raw.decode("utf-8", "replace"))
            room = limit - size
            if len(raw) > room:
                truncated = True
            if room > 0:
                kept.append(raw[:room])
                size += min(len(raw), room)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    exited = _exit_waiter(proc)
    outcome: str | None = None
    try:
        while proc.poll() is None:
            if ctx.cancelled:
                outcome = "cancelled"
            elif ctx.remaining() <= 0:
                outcome = "timeout"
            if outcome is not None:
                _kill_group(proc, grace)
                break
            exited(min(0.05, max(ctx.remaining(), 0.001)))
    finally:
        exited(None)
    reader.join(timeout=2.0)
    if proc.stdout is not None and not reader.is_alive():
        # A grandchild that escaped the group may still hold the pipe: then leave it
        # to the reader thread rather than close it under its feet.
        proc.stdout.close()
    if outcome == "cancelled":
        raise Cancelled("command cancelled")
    if outcome == "timeout":
        raise StepTimeout("command ran past the step's timeout and was killed")
    return Completed(proc.returncode, b"".join(kept).decode("utf-8", "replace"), truncated)


def _exit_waiter(proc: subprocess.Popen[bytes]) -> Callable[[float | None], None]:
    """``wait(seconds)`` returning as soon as ``proc`` exits (None: release the waiter).

    On Linux a pidfd wakes the wait the moment the process exits; ``Popen.wait`` with a
    timeout sleeps in growing steps instead, adding a millisecond or more to every
    short command. Elsewhere that is the fallback.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):

        def wait(seconds: float | None) -> None:
            if seconds is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=seconds)

        return wait
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)

    def wait_fd(seconds: float | None) -> None:
        if seconds is None:
            os.close(pidfd)
        else:
            poller.poll(seconds * 1000)

    return wait_fd


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
