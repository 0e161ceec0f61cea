"""Real terminals for tests: tmux (its screen read back as text) and a stdlib pseudo-terminal.

Both run the real ``drctl`` in a fresh interpreter; every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path


class Screen:
    """``drctl ARGS`` in its own tmux server: what a person at that terminal sees."""

    def __init__(
        self,
        tmp: Path,
        *args: str,
        width: int = 150,
        height: int = 45,
        env: dict[str, str] | None = None,
    ) -> None:
        self.socket = str(tmp / f"tmux-{time.monotonic_ns()}.sock")
        # The terminal's own size, not one a parent process left in the environment.
        command = shlex.join(
            ["env", "-u", "COLUMNS", "-u", "LINES", sys.executable, "-m", "drctl", *args]
        )
        # The shell stays after drctl exits, so its last screen and exit code can be read.
        script = f"{command}; echo EXIT=$?; sleep 600"
        extra = [f"-e{k}={v}" for k, v in (env or {}).items()]
        self._tmux(
            "new-session", "-d", "-x", str(width), "-y", str(height), "-c", str(tmp), *extra,
            script,
        )  # fmt: skip

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def text(self) -> str:
        """The screen and its scrollback, as text."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "0")

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        """The screen once ``needle`` is on it (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen = self.text()
            if needle in seen:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not on the screen after {timeout}s:\n{seen}")

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "0", *keys)

    def exit_code(self, timeout: float = 60.0) -> int:
        found = re.search(r"EXIT=(\d+)", self.wait_for("EXIT=", timeout))
        assert found is not None
        return int(found.group(1))

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=30, check=False
        )


class Pty:
    """``drctl ARGS`` on a stdlib pseudo-terminal it has as its controlling terminal.

    Bytes written to it are typed at the terminal: ``\\x03`` is Ctrl-C, which the
    terminal turns into SIGINT for drctl, as for a person at a keyboard.
    """

    def __init__(self, cwd: Path, *args: str) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: drctl, with the pty as its terminal
            try:
                os.chdir(cwd)
                os.execv(sys.executable, [sys.executable, "-m", "drctl", *args])
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.seen = b""
        self.code: int | None = None

    def read_until(self, needle: bytes, timeout: float = 60.0) -> str:
        import select

        deadline = time.monotonic() + timeout
        while needle not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                self.seen += chunk
        text = self.seen.decode(errors="replace")
        assert needle in self.seen, f"{needle!r} not seen after {timeout}s:\n{text}"
        return text

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 60.0) -> int:
        """The exit code, reading (and keeping) what it still prints meanwhile."""
        import select

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.fd, 4096)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(
            f"drctl did not exit within {timeout}s:\n{self.seen.decode(errors='replace')}"
        )

    def close(self) -> None:
        if self.code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)
