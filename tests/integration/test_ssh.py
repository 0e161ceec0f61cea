"""``ssh.run`` and the remote-command helper against a real OpenSSH sshd on loopback.

The step type is called directly with a real-clock context for most behaviours, and
driven through the real CLI where the exit code, the journal or a killed drctl matter.
The server runs on this machine, so a test sees the remote side directly: files the
commands create, and (in /proc) whether a remote process outlived its step.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from drctl.errors import Cancelled, StepError, StepTimeout, Unreachable
from drctl.providers.ssh.command import wrapped
from drctl.providers.ssh.run import SshRun, SshRunInputs
from drctl.providers.ssh.session import (
    AuthenticationFailed,
    HostKeyChanged,
    HostKeyRevoked,
    HostKeyUnknown,
    connect,
    run_remote,
)
from drctl.steps.base import Role
from tests.conftest import REPO, run_cli
from tests.integration.pg_sandbox import RealContext
from tests.integration.sshd import (
    SshServer,
    free_loopback_port,
    keygen,
    sshd_server,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: Bound on a remote process disappearing after its step gave up on it (grace 1 s + margin).
GONE_WITHIN = 10.0


def _ctx(inputs: SshRunInputs, target: dict[str, Any], timeout: float = 30.0) -> RealContext:
    return RealContext(inputs, target=target, timeout=timeout)


def _sleep_token() -> str:
    """A sleep duration no other process on the machine uses, to find the remote process by."""
    return f"61.{secrets.randbelow(10**6):06d}"


def _processes_with(token: str) -> list[str]:
    """Command lines of live processes (other than this one) that contain ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        line = raw.replace(b"\0", b" ").decode(errors="replace")
        if token in line:
            found.append(f"{entry.name}: {line[:200]}")
    return found


def _wait_until_gone(token: str, within: float = GONE_WITHIN) -> float:
    """Wait until no process mentions ``token``; returns how long that took, or fails."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if not _processes_with(token):
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"remote processes still running after {within:g}s: {_processes_with(token)}")


def _wait_for_file(path: Path, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            return
        time.sleep(0.05)
    pytest.fail(f"{path} did not appear within {within:g}s")


def _accepted_logins(server: SshServer) -> int:
    return server.log().count("Accepted publickey")


def _target_yaml(server: SshServer, **fields: Any) -> str:
    spec = {
        "type": "ssh", "host": server.host, "port": server.port, "user": server.user,
        "key_file": str(server.key_file), "known_hosts": str(server.known_hosts),
        "connect_timeout": 5, **fields,
    }  # fmt: skip
    return json.dumps(spec)


def _runbook(path: Path, target: str, steps: list[dict[str, Any]]) -> str:
    """A runbook (JSON is YAML) with one ssh target named ``box``."""
    body = {
        "apiVersion": "drctl/v1", "kind": "Runbook", "metadata": {"name": "ssh-test"},
        "targets": {"box": json.loads(target)}, "steps": steps,
    }  # fmt: skip
    path.write_text(json.dumps(body, indent=1))
    return str(path)


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A directory the remote commands write into (the 'remote' host is this machine)."""
    path = tmp_path / "remote"
    path.mkdir()
    return path


# -- the step's lifecycle -------------------------------------------------------------------


def test_check_apply_verify_undo_on_a_real_host(
    sshd_server: SshServer,  # noqa: F811
    box: Path,
) -> None:
    """check runs the preflight, apply the command (output streamed, outputs published), verify proves it, undo reverses it."""
    marker = box / "applied"
    inputs = SshRunInputs(
        command=f"echo applying; echo to-stderr >&2; echo done > {marker}",
        check=f"test -d {box}",
        verify=f"test -s {marker}",
        undo=f"rm {marker}",
    )
    step = SshRun()
    ctx = _ctx(inputs, sshd_server.target())

    would = step.check(ctx)
    assert would is not None
    assert f"on {sshd_server.user}@127.0.0.1:{sshd_server.port}" in would
    assert "check command ok" in would
    assert not marker.exists()
    assert step.verify(ctx) is False

    step.apply(ctx)
    assert marker.read_text() == "done\n"
    assert ctx.outputs == {"exit_code": 0, "stdout": "applying\nto-stderr\n"}
    assert ctx.lines == ["applying", "to-stderr"]  # stderr merged, in order
    assert step.verify(ctx) is True

    step.undo(ctx)
    assert not marker.exists()
    assert step.verify(ctx) is False

    failing_check = _ctx(
        SshRunInputs(command="true", check="echo not ready; exit 4"), sshd_server.target()
    )
    with pytest.raises(StepError, match=r"check command exited 4: not ready"):
        step.check(failing_check)
    failing_undo = _ctx(
        SshRunInputs(command="true", undo="echo nope; exit 2"), sshd_server.target()
    )
    with pytest.raises(StepError, match=r"undo command exited 2: nope"):
        step.undo(failing_undo)


def test_dry_run_check_connects_but_runs_nothing(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
    box: Path,
) -> None:
    """A dry run (called directly and through `drctl run --dry-run`) logs in and reports, and the command itself never runs."""
    marker = box / "applied"
    before = _accepted_logins(sshd_server)
    ctx = RealContext(
        SshRunInputs(command=f"touch {marker}", verify=f"test -e {marker}"),
        target=sshd_server.target(),
        timeout=30.0,
        dry_run=True,
    )
    would = SshRun().check(ctx) or ""
    assert would.startswith("run `touch /")
    assert would.endswith(
        f"` on {sshd_server.user}@127.0.0.1:{sshd_server.port} (host key and login ok)"
    )
    assert not marker.exists()
    assert _accepted_logins(sshd_server) == before + 1

    runbook = _runbook(tmp_path / "rb.yaml", _target_yaml(sshd_server), [
        {"id": "plain", "type": "ssh.run", "target": "box",
         "with": {"command": f"touch {marker}", "verify": f"test -e {marker}"}},
        {"id": "checked", "type": "ssh.run", "target": "box",
         "with": {"command": f"touch {marker}", "check": f"test -d {box}", "verify": f"test -e {marker}"}},
    ])  # fmt: skip
    dry = run_cli("run", runbook, "--dry-run", "--state", str(tmp_path / "state.db"))
    assert dry.returncode == 0, _explain(dry)
    assert "plain: would run `touch /tmp/" in dry.stdout, _explain(dry)
    assert "(host key and login ok)" in dry.stdout
    assert "(host key, login and check command ok)" in dry.stdout
    assert "nothing was changed" in dry.stdout
    assert not marker.exists()


def test_describe_roles_and_catalogue() -> None:
    """The plan line names the command and target; roles, verifies and undoable follow the inputs; the catalogue shows the docstring."""
    step = SshRun()
    plain = SshRunInputs(command=["systemctl", "stop", "postgresql"])
    assert step.describe(plain, "db1") == "run `systemctl stop postgresql` on db1"
    assert step.step_roles(plain) == {Role.MUTATING}
    assert not step.verifies(plain)
    assert not step.undoable(plain)
    fence = SshRunInputs(command="x", verify="y", undo="z", roles=[Role.FENCE])
    assert step.step_roles(fence) == {Role.FENCE, Role.MUTATING}
    assert step.verifies(fence)
    assert step.undoable(fence)
    assert step.step_roles(SshRunInputs(command="uptime", mutates=False)) == frozenset()

    shown = run_cli("steps", "ssh.run")
    assert shown.returncode == 0, shown.stderr
    assert "ssh.run: Run a command on an SSH host" in shown.stdout
    assert "known_hosts" in shown.stdout
    assert "targets: ssh" in shown.stdout


def test_argv_lists_cwd_and_one_connection_for_several_commands(
    sshd_server: SshServer,  # noqa: F811
    box: Path,
) -> None:
    """An argv list reaches the host word for word, cwd applies, and one session runs several commands."""
    ctx = _ctx(SshRunInputs(command="x"), sshd_server.target())
    tricky = ["printf", "%s|", "two words", "it's", "$HOME", "a;b"]
    done = run_remote(ctx, ctx.target, tricky)
    assert done.output == "two words|it's|$HOME|a;b|"
    assert done.exit_code == 0

    before = _accepted_logins(sshd_server)
    with connect(ctx.target, ctx) as session:
        first = session.run(ctx, "pwd", cwd=str(box))
        second = session.run(ctx, "exit 7")
    assert first.output == f"{box}\n"
    assert second.exit_code == 7
    assert _accepted_logins(sshd_server) == before + 1

    missing = run_remote(ctx, ctx.target, "pwd", cwd=str(box / "nope"))
    assert missing.exit_code == 126
    assert "nope" in missing.output


def test_expect_exit_decides_success(
    sshd_server: SshServer,  # noqa: F811
) -> None:
    """An exit code outside expect_exit fails with the last output line; one inside it passes and is published."""
    command = "echo first; echo 'last line'; exit 3"
    failing = _ctx(SshRunInputs(command=command), sshd_server.target())
    with pytest.raises(StepError, match=r"^command exited 3 \(expected 0\): last line$"):
        SshRun().apply(failing)
    assert failing.outputs["exit_code"] == 3

    allowed = _ctx(SshRunInputs(command=command, expect_exit=[0, 3]), sshd_server.target())
    SshRun().apply(allowed)
    assert allowed.outputs == {"exit_code": 3, "stdout": "first\nlast line\n"}


def test_output_is_capped_but_streamed_whole(
    sshd_server: SshServer,  # noqa: F811
) -> None:
    """Output past output_limit is dropped from what is kept (truncated is set) but every line is still logged."""
    ctx = _ctx(SshRunInputs(command="x"), sshd_server.target())
    done = run_remote(ctx, ctx.target, "seq 1 5000", limit=1024)
    assert done.truncated
    assert len(done.output.encode()) == 1024
    assert done.output.startswith("1\n2\n3\n")
    assert ctx.lines[-1] == "5000"
    assert len(ctx.lines) == 5000

    step_ctx = _ctx(SshRunInputs(command="seq 1 5000", output_limit=1024), sshd_server.target())
    SshRun().apply(step_ctx)
    assert len(step_ctx.outputs["stdout"]) == 1024

    whole = run_remote(ctx, ctx.target, "seq 1 10")
    assert not whole.truncated
    assert whole.output == "".join(f"{i}\n" for i in range(1, 11))


def test_env_values_reach_the_command_but_no_command_line(
    sshd_server: SshServer,  # noqa: F811
    box: Path,
) -> None:
    """env values (with quotes and newlines) reach the remote command intact and appear on no remote process's command line."""
    value = f"s3cret-{secrets.token_hex(6)} 'quoted' \"double\" $(nope)\nsecond line"
    seen = box / "cmdlines"
    command = (
        f"for f in /proc/[0-9]*/cmdline; do tr '\\000' ' ' < $f; echo; done > {seen} 2>/dev/null; "
        'printf %s "$TOKEN"'
    )
    ctx = _ctx(SshRunInputs(command="x"), sshd_server.target())
    done = run_remote(ctx, ctx.target, command, env={"TOKEN": value})
    assert done.output == value
    assert seen.stat().st_size > 0
    assert "s3cret-" not in seen.read_text(errors="replace")

    with pytest.raises(StepError, match="not a valid environment variable name"):
        run_remote(ctx, ctx.target, "true", env={"BAD-NAME": "x"})


def test_a_command_whose_environment_never_arrived_does_not_run(
    sshd_server: SshServer,  # noqa: F811
    box: Path,
) -> None:
    """If the channel closes before the environment's end line (drctl died mid-send), the wrapper exits 125 and runs nothing."""
    marker = box / "ran"
    ctx = _ctx(SshRunInputs(command="x"), sshd_server.target())
    with connect(ctx.target, ctx) as session:
        # The command line as command.start sends it, but its stdin stops half-way.
        channel = session._client.get_transport().open_session(timeout=5)
        channel.exec_command(wrapped(f"touch {marker}", None, "END", 1))
        channel.sendall(b"export A='half")
        channel.shutdown_write()
        assert channel.status_event.wait(10)
        assert channel.recv_exit_status() == 125
        channel.close()
    assert not marker.exists()


# -- host keys: strict, always --------------------------------------------------------------


@pytest.mark.parametrize("case", ["empty", "other host", "missing file"])
def test_unknown_host_key_is_refused_and_nothing_runs(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
    box: Path,
    case: str,
) -> None:
    """A server whose key known_hosts does not list is refused before login: clear message, no command run, file untouched."""
    known = tmp_path / "known_hosts"
    if case == "empty":
        known.write_text("")
    elif case == "other host":
        known.write_text(f"[127.0.0.1]:{sshd_server.port + 1} {sshd_server.host_key}\n")
    before_text = known.read_text() if known.exists() else None
    marker = box / "ran"
    before = _accepted_logins(sshd_server)
    ctx = _ctx(SshRunInputs(command=f"touch {marker}"), sshd_server.target(known_hosts=str(known)))

    with pytest.raises(HostKeyUnknown) as caught:
        SshRun().apply(ctx)
    message = caught.value.message
    if case == "missing file":
        assert f"known_hosts file {known} does not exist" in message
    else:
        assert f"[127.0.0.1]:{sshd_server.port} has no entry in known_hosts {known}" in message
        fingerprint = sshd_server.host_key_fingerprint()
        assert f"the server offers ssh-ed25519 {fingerprint}" in message
        assert "never accepts an unknown host key" in message
    assert not marker.exists()
    assert _accepted_logins(sshd_server) == before
    assert (known.read_text() if known.exists() else None) == before_text


def test_changed_host_key_is_refused_before_login(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
    box: Path,
) -> None:
    """known_hosts holding another key for [host]:port fails with both fingerprints, and no credential is offered."""
    known = sshd_server.changed_known_hosts(tmp_path / "known_hosts")
    before_text = known.read_text()
    marker = box / "ran"
    before = _accepted_logins(sshd_server)
    ctx = _ctx(SshRunInputs(command=f"touch {marker}"), sshd_server.target(known_hosts=str(known)))

    with pytest.raises(HostKeyChanged) as caught:
        SshRun().check(ctx)
    message = caught.value.message
    assert "HOST KEY CHANGED" in message
    assert f"the server offers ssh-ed25519 {sshd_server.host_key_fingerprint()}" in message
    assert f"has ssh-ed25519 {_fingerprint_of(known)}" in message
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd_server.port}'" in message
    with pytest.raises(HostKeyChanged):
        SshRun().apply(ctx)
    assert not marker.exists()
    assert _accepted_logins(sshd_server) == before
    assert known.read_text() == before_text


def test_hashed_entries_are_honoured_and_revoked_keys_refused(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
    box: Path,
) -> None:
    """A hashed known_hosts entry (Debian's default) is trusted; a key marked @revoked never is, even when also listed."""
    hashed = tmp_path / "hashed_hosts"
    hashed.write_text(sshd_server.known_hosts.read_text())
    subprocess.run(
        ["ssh-keygen", "-H", "-f", str(hashed)], capture_output=True, timeout=30, check=True
    )
    assert hashed.read_text().startswith("|1|")
    ok = _ctx(SshRunInputs(command="echo in"), sshd_server.target(known_hosts=str(hashed)))
    SshRun().apply(ok)
    assert ok.outputs["stdout"] == "in\n"

    marker = box / "ran"
    before = _accepted_logins(sshd_server)
    listed = f"{sshd_server.known_hosts_name} {sshd_server.host_key}"
    revoked = f"@revoked * {sshd_server.host_key}"
    for lines in ((listed, revoked), (revoked,)):
        known = sshd_server.write_known_hosts(tmp_path / "revoked_hosts", *lines)
        ctx = _ctx(
            SshRunInputs(command=f"touch {marker}"), sshd_server.target(known_hosts=str(known))
        )
        with pytest.raises(
            HostKeyRevoked, match=r"host key ssh-ed25519 SHA256:\S+ is marked @revoked"
        ):
            SshRun().apply(ctx)
    assert not marker.exists()
    assert _accepted_logins(sshd_server) == before


def _fingerprint_of(known_hosts: Path) -> str:
    """The SHA256 fingerprint of the (single) key in a known_hosts file."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(known_hosts)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.split()[1]


def test_host_key_refusals_through_the_cli(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
    box: Path,
) -> None:
    """Through `drctl run` (and its dry run), a changed or unknown host key fails the step with exit 1 and its message; nothing runs."""
    marker = box / "ran"
    step = {"id": "touch", "type": "ssh.run", "target": "box",
            "with": {"command": f"touch {marker}", "verify": f"test -e {marker}"}}  # fmt: skip
    changed = sshd_server.changed_known_hosts(tmp_path / "changed_hosts")
    unknown = sshd_server.write_known_hosts(tmp_path / "unknown_hosts")
    for known, expected in (
        (changed, "HOST KEY CHANGED"),
        (unknown, "has no entry in known_hosts"),
    ):
        runbook = _runbook(
            tmp_path / f"{known.name}.yaml",
            _target_yaml(sshd_server, known_hosts=str(known)),
            [step],
        )
        result = run_cli("run", runbook, "--state", str(tmp_path / f"{known.name}.db"))
        assert result.returncode == 1, _explain(result)
        assert "touch: FAILED" in result.stdout, _explain(result)
        assert expected in result.stdout, _explain(result)
        assert not marker.exists()
    dry = run_cli("run", runbook, "--dry-run", "--state", str(tmp_path / "dry.db"))
    assert dry.returncode == 1, _explain(dry)
    assert "has no entry in known_hosts" in dry.stdout, _explain(dry)
    assert "1 check failed; nothing was changed" in dry.stdout, _explain(dry)
    assert not marker.exists()


# -- credentials --------------------------------------------------------------------------------


def test_credentials_failures_are_clear(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An unauthorised key, a locked key without (or with a wrong) passphrase, a missing key or no credential at all: each says which."""
    stranger = tmp_path / "stranger"
    keygen(stranger)
    inputs = SshRunInputs(command="true")
    cases: list[tuple[dict[str, Any], type[StepError], str]] = [
        ({"key_file": str(stranger)}, AuthenticationFailed, f"authentication failed (offered key {stranger})"),
        ({"key_file": str(sshd_server.locked_key_file)}, StepError, "is encrypted: set the target's key_passphrase"),
        ({"key_file": str(sshd_server.locked_key_file), "key_passphrase": "wrong-passphrase"}, StepError, "wrong key_passphrase?"),
        ({"key_file": str(tmp_path / "absent")}, StepError, f"key_file {tmp_path / 'absent'} does not exist"),
        ({"key_file": None}, StepError, "the target names no credential"),
        ({"key_file": None, "password": "not-a-password"}, AuthenticationFailed, "the server accepts only publickey"),
    ]  # fmt: skip
    for overrides, kind, expected in cases:
        target = {k: v for k, v in sshd_server.target(**overrides).items() if v is not None}
        with pytest.raises(kind) as caught:
            SshRun().apply(_ctx(inputs, target))
        assert expected in caught.value.message, overrides

    ok = _ctx(inputs, sshd_server.target(key_file=str(sshd_server.locked_key_file),
                                         key_passphrase=sshd_server.key_passphrase))  # fmt: skip
    SshRun().apply(ok)
    assert ok.outputs["exit_code"] == 0


def test_agent_keys_are_used_when_the_target_asks(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With `agent: true` and no key_file, the key held by a real ssh-agent logs in; without it, the agent is not asked."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        added = subprocess.run(
            ["ssh-add", str(sshd_server.key_file)],
            env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        target = {k: v for k, v in sshd_server.target(agent=True).items() if k != "key_file"}
        ctx = _ctx(SshRunInputs(command="echo via-agent"), target)
        SshRun().apply(ctx)
        assert ctx.outputs["stdout"] == "via-agent\n"
        stranger = tmp_path / "stranger"
        keygen(stranger)
        # The agent holds a good key, but the target did not ask for it: not offered.
        with pytest.raises(AuthenticationFailed, match=f"offered key {stranger}\\)"):
            SshRun().apply(
                _ctx(SshRunInputs(command="true"), sshd_server.target(key_file=str(stranger)))
            )
    finally:
        agent.terminate()
        agent.wait(timeout=10)


# -- unreachable hosts ------------------------------------------------------------------------


def test_closed_port_fails_at_once(
    sshd_server: SshServer,  # noqa: F811
) -> None:
    """A port nobody listens on fails with 'connection refused' well within the connect timeout."""
    port = free_loopback_port()
    ctx = _ctx(SshRunInputs(command="true"), sshd_server.target(port=port, connect_timeout=60.0))
    started = time.monotonic()
    with pytest.raises(Unreachable, match=rf"127\.0\.0\.1:{port}: connection refused"):
        SshRun().check(ctx)
    # No retrying until the 60 s connect timeout (a bound no slow machine comes near).
    assert time.monotonic() - started < 15.0


def test_silent_server_fails_within_the_connect_timeout(
    sshd_server: SshServer,  # noqa: F811
) -> None:
    """A listener that never sends an SSH banner fails after connect_timeout, not later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        ctx = _ctx(SshRunInputs(command="true"), sshd_server.target(port=port, connect_timeout=1.0))
        started = time.monotonic()
        with pytest.raises(Unreachable, match=r"no SSH handshake within 1s"):
            SshRun().apply(ctx)
        took = time.monotonic() - started
    # After connect_timeout (the message names it), well before paramiko's own 15 s banner
    # timeout; the upper bound leaves a loaded machine room.
    assert 0.9 <= took < 10.0, took


# -- timeouts and cancellation kill the remote command ----------------------------------------


def test_command_timeout_kills_the_remote_process_group(
    sshd_server: SshServer,  # noqa: F811
) -> None:
    """Past its timeout the remote command and its children get TERM; one that ignores TERM gets KILL after grace."""
    ctx = _ctx(SshRunInputs(command="x"), sshd_server.target())
    for ignores_term in (False, True):
        token = _sleep_token()
        trap = "trap '' TERM; " if ignores_term else ""
        command = f"{trap}echo started; sleep {token} & sleep {token}; echo never"
        started = time.monotonic()
        with pytest.raises(StepTimeout, match="command ran past its timeout and was killed"):
            run_remote(ctx, ctx.target, command, timeout=1.0, grace=1.0)
        took = time.monotonic() - started
        # Timeout plus grace is 2 s; the commands would sleep 61 s; room for a loaded machine.
        assert 1.0 <= took < 20.0, took
        assert "started" in ctx.lines
        assert "never" not in ctx.lines
        _wait_until_gone(token)


def test_cancel_kills_the_remote_command(
    sshd_server: SshServer,  # noqa: F811
) -> None:
    """An operator's cancel stops the remote command and raises Cancelled."""
    token = _sleep_token()
    ctx = _ctx(SshRunInputs(command=f"sleep {token}", grace=1), sshd_server.target())
    timer = threading.Timer(1.0, lambda: setattr(ctx, "cancel_requested", True))
    timer.start()
    try:
        with pytest.raises(Cancelled, match="remote command cancelled"):
            SshRun().apply(ctx)
    finally:
        timer.cancel()
    _wait_until_gone(token)


def test_step_timeout_through_the_cli_kills_the_command(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A step with `timeout: 2s` fails the run with exit 1 and leaves no remote process behind."""
    token = _sleep_token()
    runbook = _runbook(tmp_path / "rb.yaml", _target_yaml(sshd_server), [
        {"id": "slow", "type": "ssh.run", "target": "box", "timeout": "2s",
         "with": {"command": f"echo started; sleep {token}", "grace": 1, "mutates": False}},
    ])  # fmt: skip
    result = run_cli("run", runbook, "--state", str(tmp_path / "state.db"))
    assert result.returncode == 1, _explain(result)
    assert "slow | started" in result.stdout
    assert "ran past its timeout and was killed" in result.stdout, _explain(result)
    _wait_until_gone(token)


def test_remote_command_dies_with_drctl(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
    box: Path,
) -> None:
    """kill -9 of drctl mid-command closes the connection, and the remote command is killed rather than left running."""
    token = _sleep_token()
    started = box / "started"
    runbook = _runbook(tmp_path / "rb.yaml", _target_yaml(sshd_server), [
        {"id": "long", "type": "ssh.run", "target": "box", "timeout": "50s",
         "with": {"command": f"touch {started}; sleep {token}", "grace": 1, "mutates": False}},
    ])  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", runbook, "--state", str(tmp_path / "state.db")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_file(started)
        assert _processes_with(f"sleep {token}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _wait_until_gone(token)


# -- secrets through the real CLI ----------------------------------------------------------------


def test_secrets_never_reach_output_or_journal(
    sshd_server: SshServer,  # noqa: F811
    tmp_path: Path,
    box: Path,
) -> None:
    """A key passphrase and an env value from ${env:...} are used for real but show as *** in output, errors and the journal."""
    token = f"tok-{secrets.token_hex(8)}"
    passphrase = sshd_server.key_passphrase
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    target = _target_yaml(
        sshd_server, key_file=str(sshd_server.locked_key_file), key_passphrase="${env:DRCTL_T_PASS}"
    )
    runbook = _runbook(tmp_path / "rb.yaml", target, [
        {"id": "use", "type": "ssh.run", "target": "box",
         "with": {"command": f'echo "token=$TOKEN pass=$PASS"; printf %s "$TOKEN" > {box}/token',
                  "verify": f"test -s {box}/token",
                  "env": {"TOKEN": "${env:DRCTL_T_TOKEN}", "PASS": "${env:DRCTL_T_PASS}"}}},
        {"id": "fail", "type": "ssh.run", "target": "box",
         "with": {"command": 'echo "bad $TOKEN"; exit 5', "mutates": False,
                  "env": {"TOKEN": "${env:DRCTL_T_TOKEN}"}}},
    ])  # fmt: skip
    env = {"DRCTL_T_TOKEN": token, "DRCTL_T_PASS": passphrase}
    result = run_cli("run", runbook, "--state", str(state_dir / "state.db"), env=env)
    assert result.returncode == 1, _explain(result)
    assert (box / "token").read_text() == token  # the real value reached the host
    assert "use | token=*** pass=***" in result.stdout, _explain(result)
    assert "command exited 5 (expected 0): bad ***" in result.stdout, _explain(result)

    as_json = run_cli(
        "run", runbook, "--state", str(tmp_path / "json.db"), "--output", "json", env=env
    )
    listed = run_cli("runs", "--output", "json", "--state", str(state_dir / "state.db"))
    run_id = json.loads(listed.stdout)[0]["id"]
    log = run_cli("log", run_id, "--output", "json", "--state", str(state_dir / "state.db"))
    assert log.returncode == 0, _explain(log)
    assert '"step_failed"' in log.stdout
    everything = [result.stdout, result.stderr, as_json.stdout, as_json.stderr, log.stdout]
    everything += [p.read_bytes().decode(errors="replace") for p in state_dir.iterdir()]
    for text in everything:
        assert token not in text
        assert passphrase not in text
