"""Connections to ``ssh`` targets and commands run on them: the API other providers call.

    with connect(target, ctx) as session:         # one connection, several commands
        done = session.run(ctx, ["pg_ctl", "status", "-D", data_dir])
    done = run_remote(ctx, target, "systemctl stop postgresql", timeout=30)
    done.exit_code, done.output, done.truncated   # drctl.steps.process.Completed

Host keys are checked strictly, always (``hostkeys.py``): the server's key must be in
the target's ``known_hosts`` (as ``[host]:port`` for a port other than 22); an unknown,
changed or revoked key fails before any credential is offered, and nothing is ever
written to the file. Only the credentials the target names are offered (its
``key_file``, the agent if ``agent: true``, its ``password``): no ``~/.ssh`` key is
tried behind its back.

Every phase is bounded: the TCP connect and the handshake by the target's
``connect_timeout`` (capped by the step's remaining time), opening the channel and
starting the command by the same, the command by the step's deadline or ``timeout``;
past it the remote process group is killed (``command.py``). paramiko's and the
socket's exceptions become the ones in ``errors.py`` here, once; they are re-exported.
"""

from __future__ import annotations

import logging
import shlex
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from drctl.errors import Cancelled, StepError, StepTimeout, Unreachable, first_line
from drctl.providers.ssh.command import check_env, pump, start, stop
from drctl.providers.ssh.errors import (
    AuthenticationFailed,
    HostKeyChanged,
    HostKeyRejected,
    HostKeyRevoked,
    HostKeyUnknown,
)
from drctl.providers.ssh.hostkeys import (
    KnownHosts,
    RefuseUnknownHost,
    fingerprint,
    known_hosts_name,
    load_known_hosts,
)
from drctl.runbook.targets import SshTarget
from drctl.steps.base import StepContext
from drctl.steps.process import Completed

__all__ = [
    "AuthenticationFailed",
    "HostKeyChanged",
    "HostKeyRejected",
    "HostKeyRevoked",
    "HostKeyUnknown",
    "SshSession",
    "Unreachable",
    "connect",
    "describe_endpoint",
    "import_client",
    "known_hosts_name",
    "run_remote",
]


def import_client() -> None:
    """Import paramiko (about 0.2 s) ahead of the first connection, and keep its logs quiet.

    paramiko logs handshake failures itself; they would reach drctl's stderr past the
    redaction layer, and the StepError raised here already says what happened.
    """
    import paramiko  # noqa: F401

    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def describe_endpoint(target: SshTarget) -> str:
    """``user@host:port``, for messages."""
    return f"{target.user}@{target.host}:{target.port}"


#: Loaded private keys by (path, inode, mtime, size, passphrase): an encrypted OpenSSH key
#: costs about 0.3 s of bcrypt to open, and a step connects for check, apply and verify.
_KEYS: dict[tuple[str, int, int, int, bytes | None], Any] = {}
_KEYS_LOCK = threading.Lock()


def _load_key(target: SshTarget, where: str) -> Any:
    if not target.key_file:
        return None
    path = Path(target.key_file).expanduser()
    passphrase = target.key_passphrase.encode() if target.key_passphrase else None
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise StepError(f"{where}: key_file {path} does not exist") from exc
    except OSError as exc:
        raise StepError(f"{where}: cannot read key_file {path}: {exc.strerror or exc}") from exc
    cache_key = (str(path), info.st_ino, info.st_mtime_ns, info.st_size, passphrase)
    with _KEYS_LOCK:
        if cache_key in _KEYS:
            return _KEYS[cache_key]
    key = _read_key(path, passphrase, where)
    with _KEYS_LOCK:
        if len(_KEYS) >= 16:
            _KEYS.clear()
        _KEYS[cache_key] = key
    return key


def _read_key(path: Path, passphrase: bytes | None, where: str) -> Any:
    import paramiko

    encrypted = StepError(
        f"{where}: key_file {path} is encrypted: set the target's key_passphrase "
        "(a secret reference)"
    )
    try:
        # paramiko 5 hands the passphrase to cryptography, which wants bytes.
        return paramiko.PKey.from_path(path, passphrase)
    except FileNotFoundError as exc:
        raise StepError(f"{where}: key_file {path} does not exist") from exc
    except paramiko.PasswordRequiredException as exc:
        raise encrypted from exc
    except TypeError as exc:
        # cryptography's "Key is password-protected, but password was not provided."
        if passphrase is None and "password" in str(exc):
            raise encrypted from exc
        raise StepError(f"{where}: cannot load key_file {path}: {first_line(exc)}") from exc
    except (OSError, ValueError, paramiko.SSHException) as exc:
        wrong = " (wrong key_passphrase?)" if passphrase else ""
        raise StepError(f"{where}: cannot load key_file {path}: {first_line(exc)}{wrong}") from exc


def _open_socket(target: SshTarget, where: str, budget: float) -> socket.socket:
    try:
        return socket.create_connection((target.host, target.port), timeout=budget)
    except ConnectionRefusedError as exc:
        raise Unreachable(
            f"{where}: connection refused (nothing listens on port {target.port})"
        ) from exc
    except socket.gaierror as exc:
        raise Unreachable(f"{where}: cannot resolve {target.host}: {exc.strerror or exc}") from exc
    except TimeoutError as exc:
        raise Unreachable(f"{where}: no answer within {budget:g}s (connect timeout)") from exc
    except OSError as exc:
        raise Unreachable(f"{where}: cannot connect: {exc.strerror or exc}") from exc


class SshSession:
    """One authenticated connection to an ``ssh`` target; ``run`` as many commands as needed."""

    def __init__(self, client: Any, target: SshTarget) -> None:
        self._client = client
        self.target = target
        self.where = f"ssh {describe_endpoint(target)}"

    def run(
        self,
        ctx: StepContext,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        limit: int = 65536,
        grace: float = 5.0,
    ) -> Completed:
        """Run ``command`` (a string through the remote ``/bin/sh -c``, a list quoted word
        by word); stream its lines (stdout and stderr merged) to ``ctx.log``.

        Returns the exit code and the first ``limit`` bytes of output. Past the step's
        deadline (or ``timeout`` seconds) the remote process group is killed and
        StepTimeout raised; on a cancel, the same and Cancelled.
        """
        check_env(env or {}, self.where)
        left = ctx.remaining() if timeout is None else min(timeout, ctx.remaining())
        if left <= 0:
            raise StepTimeout(f"{self.where}: no time left to run the command")
        deadline = ctx.monotonic() + left
        text = command if isinstance(command, str) else shlex.join(command)
        budget = min(left, self.target.connect_timeout)
        channel = start(self._client, self.where, text, env or {}, cwd, grace, budget)
        try:
            outcome, exit_code, output, truncated = pump(ctx, channel, deadline, limit)
            if outcome is None:
                if exit_code < 0:
                    raise StepError(
                        f"{self.where}: the connection closed before the command reported an "
                        "exit status: it may or may not have finished"
                    )
                return Completed(exit_code, output, truncated)
            ended = stop(channel, grace)
        finally:
            channel.close()
        note = "" if ended else "; the host did not confirm it ended"
        if outcome == "cancelled":
            raise Cancelled(f"remote command cancelled{note}")
        raise StepTimeout(f"{self.where}: command ran past its timeout and was killed{note}")

    def close(self) -> None:
        self._client.close()


@contextmanager
def connect(target: SshTarget, ctx: StepContext) -> Iterator[SshSession]:
    """An authenticated connection to an ``ssh`` target, closed on exit.

    Raises Unreachable, HostKeyUnknown, HostKeyChanged, HostKeyRevoked,
    AuthenticationFailed, StepTimeout or StepError — never a paramiko exception.
    """
    import paramiko

    import_client()
    spec = target
    where = f"ssh {describe_endpoint(spec)}"
    budget = min(spec.connect_timeout, ctx.remaining())
    if budget <= 0:
        raise StepTimeout(f"{where}: no time left to connect")
    known_hosts = Path(spec.known_hosts).expanduser()
    if not known_hosts.is_file():
        raise HostKeyUnknown(
            f"{where}: known_hosts file {known_hosts} does not exist; drctl never accepts an "
            "unknown host key: create it with the host's verified key"
        )
    if not (spec.key_file or spec.agent or spec.password):
        raise StepError(
            f"{where}: the target names no credential: set key_file, agent: true or password"
        )
    pkey = _load_key(spec, where)
    client = paramiko.SSHClient()
    known = load_known_hosts(client, known_hosts, where)
    client.set_missing_host_key_policy(RefuseUnknownHost(where, known))
    started = ctx.monotonic()
    sock = _open_socket(spec, where, budget)
    left = max(0.5, budget - (ctx.monotonic() - started))
    try:
        client.connect(
            spec.host, spec.port, username=spec.user, pkey=pkey, password=spec.password,
            sock=sock, timeout=left, banner_timeout=left, auth_timeout=left,
            channel_timeout=left, allow_agent=spec.agent, look_for_keys=False,
        )  # fmt: skip
    except BaseException as exc:
        client.close()
        sock.close()
        translated = _translate(exc, spec, where, known, budget)
        if translated is exc:
            raise
        raise translated from exc
    session = SshSession(client, spec)
    try:
        yield session
    finally:
        session.close()


def _translate(
    exc: BaseException, spec: SshTarget, where: str, known: KnownHosts, budget: float
) -> BaseException:
    import paramiko

    if isinstance(exc, StepError | Cancelled) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        revoked = known.revocation(where, exc.key)
        if revoked is not None:
            return revoked
        name, known_hosts = known_hosts_name(spec), known.path
        return HostKeyChanged(
            f"{where}: HOST KEY CHANGED: the server offers {fingerprint(exc.key)} but "
            f"known_hosts {known_hosts} has {fingerprint(exc.expected_key)} for {name}; "
            "refusing to connect (a rebuilt host, or someone in the middle): if the host was "
            "rebuilt, verify its new key on the host and replace the entry "
            f"(ssh-keygen -R '{name}' -f {known_hosts})"
        )
    if isinstance(exc, paramiko.BadAuthenticationType):
        return AuthenticationFailed(
            f"{where}: authentication failed: the server accepts only {', '.join(exc.allowed_types)}"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        offered = [
            label
            for label, present in (
                (f"key {spec.key_file}", spec.key_file),
                ("the agent", spec.agent),
                ("a password", spec.password),
            )
            if present
        ]
        return AuthenticationFailed(
            f"{where}: authentication failed (offered {', '.join(offered)}): {first_line(exc)}"
        )
    text = first_line(exc)
    # paramiko's start_client returns quietly when its timeout passes; the next call then
    # fails with "No existing session". A missing banner says so; a dropped link is EOF.
    stalled = ("banner", "no existing session", "negotiation failed")
    if any(s in text.lower() for s in stalled) or isinstance(exc, TimeoutError | EOFError):
        return Unreachable(f"{where}: no SSH handshake within {budget:g}s ({text})")
    if isinstance(exc, OSError):
        return Unreachable(f"{where}: connection lost during the handshake: {text}")
    return StepError(f"{where}: SSH handshake failed: {text}")


def run_remote(
    ctx: StepContext,
    target: SshTarget,
    command: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    limit: int = 65536,
    grace: float = 5.0,
) -> Completed:
    """Connect to ``target``, run ``command`` there, disconnect: ``SshSession.run`` in one call.

    The helper for any step that acts on a host over SSH (``postgres.fence`` with
    ``mode: stop`` on a remote server, ``postgres.rejoin``). A non-zero exit is not an
    error: the caller decides what the exit code means.
    """
    with connect(target, ctx) as session:
        return session.run(
            ctx, command, env=env, cwd=cwd, timeout=timeout, limit=limit, grace=grace
        )
