"""One command on an open SSH connection: the wrapper it runs under, its output, its end.

The command runs under a small POSIX ``sh`` wrapper (``WRAPPER``) that

- reads the command's environment from the channel's stdin, so no value (a secret)
  is ever on a remote command line, and runs nothing if that stdin ends early;
- runs the command with stdin from /dev/null and stderr into stdout (one stream, in
  order, as the local ``shell`` step has it), in the session's process group (sshd
  makes every session a session leader);
- watches the channel: when drctl closes its side — a timeout, a cancel, or drctl
  dying and taking the connection with it — it sends TERM to the whole group, then
  KILL after ``grace`` seconds. A remote command does not outlive its step.

The remote login shell must be POSIX (sh, bash, dash, ksh, zsh) and ``/bin/sh`` must
exist on the host.
"""

from __future__ import annotations

import math
import re
import secrets
import shlex
import threading
from collections.abc import Mapping
from typing import Any

from drctl.errors import StepError, Unreachable, first_line
from drctl.steps.base import StepContext

#: After the command exits, how long to keep reading output that something it left
#: running in the background still holds open (the local shell step waits as long).
_DRAIN_AFTER_EXIT = 2.0
#: A line longer than this is logged in pieces, so one endless line cannot exhaust memory.
_MAX_LINE = 65536
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# $1 command, $2 working directory ('' for the login directory), $3 the end-of-environment
# line, $4 grace seconds. Without that end line (drctl went away mid-send) nothing runs.
# fd 3 keeps the channel's stdin for the watchdog: without job control, a background
# list's stdin would otherwise be /dev/null.
WRAPPER = """\
exec 3<&0
e=
ok=
while IFS= read -r l; do [ "$l" = "$3" ] && { ok=1; break; }; e="$e$l
"; done
[ -n "$ok" ] || exit 125
eval "$e"
if [ -n "$2" ]; then cd "$2" || exit 126; fi
/bin/sh -c "$1" </dev/null 2>&1 3<&- &
c=$!
(
  trap '' TERM
  while read -r l; do :; done
  kill -s TERM -- -$$ || kill -s TERM "$c"
  sleep "$4"
  kill -s KILL -- -$$ || kill -s KILL "$c"
) <&3 >/dev/null 2>&1 &
w=$!
exec 3<&-
wait "$c"
r=$?
kill -s KILL "$w" 2>/dev/null
exit "$r"
"""


def check_env(env: Mapping[str, str], where: str) -> None:
    """Refuse names the wrapper could not export."""
    for name in env:
        if not _ENV_NAME.match(name):
            raise StepError(f"{where}: {name!r} is not a valid environment variable name")


def wrapped(command: str, cwd: str | None, end: str, grace: float) -> str:
    """The remote command line: ``command`` under the wrapper, ``end`` closing its environment."""
    return shlex.join(
        ["exec", "/bin/sh", "-c", WRAPPER, "drctl-ssh", command, cwd or "", end,
         str(max(0, math.ceil(grace)))]
    )  # fmt: skip


def start(
    client: Any,
    where: str,
    command: str,
    env: Mapping[str, str],
    cwd: str | None,
    grace: float,
    budget: float,
) -> Any:
    """Open a session channel on paramiko ``client`` and start ``command`` under the wrapper.

    Bounded by ``budget`` seconds. Returns the channel, its stdin already sent.
    """
    import paramiko

    transport = client.get_transport()
    end = f"drctl-env-end-{secrets.token_hex(8)}"
    remote = wrapped(command, cwd, end, grace)
    stdin = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()) + end + "\n"
    # exec_command waits for the server's answer with no timeout of its own; closing
    # the transport when the budget runs out wakes it with an error.
    timer = threading.Timer(max(budget, 1.0), transport.close)
    timer.daemon = True
    timer.start()
    try:
        channel = transport.open_session(timeout=max(budget, 1.0))
        channel.set_combine_stderr(True)
        channel.exec_command(remote)
        channel.sendall(stdin.encode())
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if not timer.is_alive():
            raise Unreachable(
                f"{where}: the server did not start the command within {budget:g}s"
            ) from exc
        raise StepError(f"{where}: cannot start the command: {first_line(exc)}") from exc
    finally:
        timer.cancel()
    return channel


def pump(
    ctx: StepContext, channel: Any, deadline: float, limit: int
) -> tuple[str | None, int, str, bool]:
    """Read output until the command ends, the deadline passes, or the step is cancelled."""
    kept = bytearray()
    truncated = False
    partial = b""
    eof = False
    exited_at: float | None = None
    outcome: str | None = None

    def keep(data: bytes) -> None:
        nonlocal truncated, partial
        room = limit - len(kept)
        if len(data) > room:
            truncated = True
        if room > 0:
            kept.extend(data[:room])
        partial += data
        while b"\n" in partial or len(partial) > _MAX_LINE:
            cut = partial.find(b"\n") + 1 or _MAX_LINE
            ctx.log(partial[:cut].decode("utf-8", "replace"))
            partial = partial[cut:]

    # Bounded by the deadline: every pass waits at most 0.1 s.
    while True:
        now = ctx.monotonic()
        if ctx.cancelled:
            outcome = "cancelled"
            break
        if now >= deadline or ctx.remaining() <= 0:
            outcome = "timeout"
            break
        if channel.exit_status_ready():
            exited_at = exited_at or now
            if eof or now - exited_at > _DRAIN_AFTER_EXIT:
                break
        wait = max(0.001, min(0.1, deadline - now))
        if eof:
            channel.status_event.wait(wait)
            continue
        channel.settimeout(wait)
        try:
            data = channel.recv(32768)
        except TimeoutError:
            continue
        if data:
            keep(data)
        else:
            eof = True
    if partial:
        ctx.log(partial.decode("utf-8", "replace"))
    exit_code = channel.recv_exit_status() if outcome is None else -1
    return outcome, exit_code, kept.decode("utf-8", "replace"), truncated


def stop(channel: Any, grace: float) -> bool:
    """Close our side of stdin: the wrapper's watchdog kills the process group.

    Returns whether the host confirmed the command ended within ``grace`` (plus a
    margin); the watchdog goes on to KILL regardless.
    """
    try:
        channel.shutdown_write()
    except (OSError, EOFError):
        return False
    return bool(channel.status_event.wait(grace + 2.0))
