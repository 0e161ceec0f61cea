"""Running a local command for a step: live output, a size cap, and a timeout that
kills the whole process group (a shell's children included)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping
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
    outcome: str | None = None
    while proc.poll() is None:
        if ctx.cancelled:
            outcome = "cancelled"
        elif ctx.remaining() <= 0:
            outcome = "timeout"
        if outcome is not None:
            _kill_group(proc, grace)
            break
        try:
            proc.wait(timeout=min(0.05, max(ctx.remaining(), 0.001)))
        except subprocess.TimeoutExpired:
            continue
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
