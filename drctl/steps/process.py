"""Running a local command for a step: live output, a size cap, and a timeout that
kills the whole process group (a shell's children included)."""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from drctl.errors import Cancelled, StepError, StepTimeout
from drctl.steps.base import StepContext

# The watchdog: a shell that outlives drctl by design. drctl tells it, on a pipe only
# the two of them hold, what to kill should drctl go: each command's mark (an env var)
# before the command starts, then its process group once its pid is known, and that
# the group is done once the command is reaped. When the pipe closes — drctl exited or
# was killed, even with SIGKILL — it kills what is still listed: the groups, and any
# process carrying a listed mark (one caught between fork and the group's line).
# One process per drctl, instead of a helper exec'd before every command (setpriv
# --pdeathsig, ~1 ms each); it kills a command's whole group, not just its first
# process. The loop never forks: removal is POSIX prefix/suffix expansion.
_MARK = "DRCTL_WATCH"
_WATCHDOG_SCRIPT = f"""
listed=' '
while read -r line; do
  for item in $line; do
    case $item in
      +*) listed="$listed${{item#+}} " ;;
      -*) x=${{item#-}}
          case $listed in *" $x "*) listed="${{listed%% $x *}} ${{listed#* $x }}" ;; esac ;;
    esac
  done
done
for x in $listed; do
  case $x in
    g*) kill -s KILL -- "-${{x#g}}" 2>/dev/null ;;
    m*) for f in $(grep -lzxF "{_MARK}=${{x#m}}" /proc/[0-9]*/environ 2>/dev/null); do
          p=${{f#/proc/}}; p=${{p%/environ}}
          kill -s KILL -- "$p" "-$p" 2>/dev/null
        done ;;
  esac
done
"""
_SHELL = "/bin/sh"


class _Watchdog:
    """The per-process watchdog that kills our commands' groups if drctl dies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._started = False
        self._marks = itertools.count(1)

    def mark(self) -> str:
        """A new mark for one command's environment, listed before the command starts."""
        mark = f"{os.getpid()}.{next(self._marks)}"
        self.tell(f"+m{mark}")
        return mark

    def ready(self) -> int | None:
        with self._lock:
            if not self._started:
                self._started = True
                self._fd = self._start()
            return self._fd

    def _start(self) -> int | None:
        if not os.access(_SHELL, os.X_OK):
            return None  # then a killed drctl leaves its command running, as before
        read_end, write_end = os.pipe()  # both non-inheritable: no command holds them
        try:
            # Spawned, not Popen'd: it is never waited for (it exits only once drctl
            # has gone, and init reaps it), so no Popen object is left to warn of it.
            os.posix_spawn(
                _SHELL,
                [_SHELL, "-c", _WATCHDOG_SCRIPT],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read_end, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                ],
                # Its own session: a Ctrl-C at the terminal must not take it first.
                setsid=True,
            )
        except OSError:
            os.close(write_end)
            return None
        finally:
            os.close(read_end)
        return write_end

    def tell(self, *items: str) -> None:
        fd = self.ready()
        if fd is not None:
            # One write under PIPE_BUF is atomic: threads' lines never interleave.
            with contextlib.suppress(OSError):
                os.write(fd, " ".join(items).encode() + b"\n")


_WATCHDOG = _Watchdog()


@dataclass(frozen=True)
class Completed:
    """A finished command: its exit code and output (``truncated``: only its first bytes kept)."""

    exit_code: int
    output: str
    truncated: bool


@dataclass(frozen=True)
class OsUser:
    """An OS user a command runs as, from root: its ids, groups and login variables.

    What ``runuser -u NAME`` gives a command, without its two extra processes (runuser
    stays in a PAM session and forks the command) and its syslog and nscd traffic: the
    user's uid, primary gid and every supplementary group it is in, and HOME, USER,
    LOGNAME and SHELL from the user database. No PAM session, so no login limits:
    for client tools, not for a command that starts a server.
    """

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str

    @classmethod
    def named(cls, name: str) -> OsUser:
        """The user ``name`` (looked up once per process); a StepError if there is none."""
        found = _OS_USERS.get(name)
        if found is None:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise StepError(
                    f"there is no OS user named {name!r} to run the command as"
                ) from None
            found = cls(
                name, entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(name, entry.pw_gid)),
                entry.pw_dir, entry.pw_shell or _SHELL,
            )  # fmt: skip
            _OS_USERS[name] = found
        return found

    def environment(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": self.shell}


_OS_USERS: dict[str, OsUser] = {}


def run_command(
    ctx: StepContext,
    command: str | list[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    limit: int = 65536,
    grace: float = 5.0,
    user: OsUser | None = None,
) -> Completed:
    """Run ``command`` (a string through /bin/sh, a list as argv) within ctx's deadline.

    ``user``: exec it as that OS user (drctl is root), from ``cwd`` or else "/" — the
    caller's directory may be closed to that user.
    """
    if ctx.remaining() <= 0:
        raise StepTimeout("no time left to run the command")
    argv = [_SHELL, "-c", command] if isinstance(command, str) else list(command)
    if user is not None:
        env = {**(env or {}), **user.environment()}
        cwd = cwd or "/"
    # If drctl is killed (kill -9, a lost machine), the command dies with it rather than
    # finishing unobserved while a resume decides whether to run it again.
    mark = _WATCHDOG.mark()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_environment(env, mark),
            cwd=cwd,
            user=user.uid if user else None,
            group=user.gid if user else None,
            # Always set when switching: root's own groups must not go with the command.
            extra_groups=list(user.groups) if user else None,
        )
    except OSError as exc:
        _WATCHDOG.tell(f"-m{mark}")
        raise StepError(f"cannot start command: {exc.strerror or exc}") from exc
    # One line, so the watchdog never sees the command in neither form.
    _WATCHDOG.tell(f"+g{proc.pid}", f"-m{mark}")
    try:
        return _supervise(ctx, proc, limit, grace)
    finally:
        if proc.returncode is not None:
            # Its leader reaped, the group id may be reused: no longer ours to kill.
            _WATCHDOG.tell(f"-g{proc.pid}")


def _environment(extra: Mapping[str, str] | None, mark: str) -> dict[bytes, bytes]:
    # In bytes, as exec takes it: os.environ's str view decodes and re-encodes every
    # variable on each copy, a tenth of a millisecond per command.
    env = {**os.environb}
    for key, value in (extra or {}).items():
        env[os.fsencode(key)] = os.fsencode(value)
    env[_MARK.encode()] = mark.encode()
    return env


def _supervise(
    ctx: StepContext, proc: subprocess.Popen[bytes], limit: int, grace: float
) -> Completed:
    """Show and keep the command's output, and end it at the deadline or on cancel.

    One thread waits on both the output pipe and (on Linux) a pidfd, so a short command
    costs no reader thread and its exit wakes the wait at once.
    """
    assert proc.stdout is not None
    out = proc.stdout.fileno()
    os.set_blocking(out, False)
    shown = _Output(ctx, limit)
    poller = select.poll()
    poller.register(out, select.POLLIN)
    pidfd = _pidfd(proc)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    outcome: str | None = None
    reading = True
    # Once the command has gone, a grandchild that escaped its group may still hold
    # the pipe: it is read for this long more, then left.
    drain_until: float | None = None
    try:
        while reading or drain_until is None:
            if drain_until is None:
                if ctx.cancelled:
                    outcome = "cancelled"
                elif ctx.remaining() <= 0:
                    outcome = "timeout"
                if outcome is not None:
                    _kill_group(proc, grace)
                if outcome is not None or proc.poll() is not None:
                    drain_until = time.monotonic() + 2.0
                    continue
                wait = min(0.05, max(ctx.remaining(), 0.001))
            else:
                wait = drain_until - time.monotonic()
                if wait <= 0:
                    break
            for fd, _ in poller.poll(wait * 1000):
                if fd != out:
                    poller.unregister(fd)  # the pidfd: exited (reaped by poll() above)
                elif not shown.read(out):
                    reading = False
                    poller.unregister(out)
    finally:
        if pidfd is not None:
            os.close(pidfd)
        proc.stdout.close()
    shown.end()
    if outcome == "cancelled":
        raise Cancelled("command cancelled")
    if outcome == "timeout":
        raise StepTimeout("command ran past the step's timeout and was killed")
    return Completed(proc.returncode, shown.text(), shown.truncated)


class _Output:
    """A command's output: shown line by line, its first ``limit`` bytes kept."""

    def __init__(self, ctx: StepContext, limit: int) -> None:
        self._ctx = ctx
        self._room = limit
        self._kept: list[bytes] = []
        self._partial = b""
        self.truncated = False

    def read(self, fd: int) -> bool:
        """Take what the pipe holds; False once it is closed (end of output)."""
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if chunk:
            self.take(chunk)
        return bool(chunk)

    def take(self, chunk: bytes) -> None:
        if len(chunk) > self._room:
            self.truncated = True
        if self._room > 0:
            self._kept.append(chunk[: self._room])
            self._room -= min(len(chunk), self._room)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._ctx.log((line + b"\n").decode("utf-8", "replace"))

    def end(self) -> None:
        if self._partial:
            self._ctx.log(self._partial.decode("utf-8", "replace"))

    def text(self) -> str:
        return b"".join(self._kept).decode("utf-8", "replace")


def _pidfd(proc: subprocess.Popen[bytes]) -> int | None:
    """A pidfd of ``proc``, readable once it exits (Linux); else None, and the wait
    polls in 50 ms steps."""
    try:
        return os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return None


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
