"""run/resume/status/log/abort/unlock through the real CLI: exit codes, secrets, signals, prompts."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

HEAD = "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: cli}\n"


def write(tmp: Path, body: str, name: str = "rb.yaml") -> str:
    path = tmp / name
    path.write_text(HEAD + body.replace("{tmp}", str(tmp)))
    return str(path)


def drctl(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--state", str(tmp / "state.db"), env=env, cwd=str(tmp))


def last_run(tmp: Path) -> dict[str, object]:
    runs = json.loads(drctl(tmp, "runs", "--output", "json").stdout)
    return runs[0]


def test_secret_canary_never_leaves_memory(tmp_path: Path) -> None:
    """A resolved secret is masked in stdout, stderr, JSON events, the journal and the run record."""
    canary = "canary-7f3a9b1c-secret"
    path = write(
        tmp_path,
        """
params:
  token: {type: str, default: "${env:DRCTL_CANARY}"}
steps:
  - id: use
    type: shell
    with:
      command: "echo token=$TOKEN; echo param={{ params.token }}; echo fail-with=$TOKEN >&2; exit 3"
      env: {TOKEN: "${env:DRCTL_CANARY}"}
      verify: "true"
""",
    )
    env = {"DRCTL_CANARY": canary}
    text = drctl(tmp_path, "run", path, env=env)
    as_json = drctl(tmp_path, "run", path, "--output", "json", env=env)
    assert text.returncode == 1
    run_id = str(last_run(tmp_path)["id"])
    log = drctl(tmp_path, "log", run_id, "--output", "json")
    status = drctl(tmp_path, "status", run_id, "--output", "json")
    dump = "\n".join(sqlite3.connect(tmp_path / "state.db").iterdump())
    for blob in (
        text.stdout,
        text.stderr,
        as_json.stdout,
        as_json.stderr,
        log.stdout,
        status.stdout,
        dump,
    ):
        assert canary not in blob
    assert "token=***" in text.stdout
    assert "fail-with=***" in text.stdout


def test_missing_secret_stops_before_any_step(tmp_path: Path) -> None:
    """An unresolvable reference is reported up front (exit 2) and nothing runs."""
    path = write(
        tmp_path,
        """
steps:
  - {id: a, type: shell, with: {command: "touch {tmp}/ran", verify: "true", env: {X: "${env:DRCTL_NOT_SET_ANYWHERE}"}}}
""",
    )
    result = drctl(tmp_path, "run", path)
    assert result.returncode == 2
    assert "environment variable DRCTL_NOT_SET_ANYWHERE is not set" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_approval_without_tty_exits_4_and_resume_with_approve_continues(tmp_path: Path) -> None:
    """No TTY, no --yes: the run stops at the gate (exit 4); resume --approve passes it."""
    path = write(
        tmp_path,
        """
steps:
  - {id: before, type: shell, with: {command: "touch {tmp}/before", verify: "test -f {tmp}/before"}}
  - {id: promote, type: shell, approve: true, with: {command: "touch {tmp}/promoted", verify: "test -f {tmp}/promoted"}}
""",
    )
    first = drctl(tmp_path, "run", path)
    assert first.returncode == 4
    assert "promote: waiting for approval" in first.stdout
    assert "resume with --approve promote" in first.stderr
    assert not (tmp_path / "promoted").exists()
    second = drctl(tmp_path, "resume", "--last", "--approve", "promote")
    assert second.returncode == 0, second.stderr
    assert "promote: approved (--approve promote by" in second.stdout
    assert (tmp_path / "promoted").exists()


def test_settings_state_chooses_the_store_of_a_run(tmp_path: Path) -> None:
    """settings.state keeps the run in the runbook's store (not the default one); the
    resume hint names it, and --state or DRCTL_STATE still win over it."""
    team = tmp_path / "team.db"
    path = write(
        tmp_path,
        f"""
settings: {{state: "{team}"}}
steps:
  - {{id: promote, type: shell, approve: true, with: {{command: "touch {{tmp}}/promoted", verify: "test -f {{tmp}}/promoted"}}}}
""",
    )
    env = {k: v for k, v in os.environ.items() if k != "DRCTL_STATE"}
    first = run_cli("run", path, cwd=str(tmp_path), env=env)
    assert first.returncode == 4, first.stderr
    assert team.exists() and not (tmp_path / ".drctl").exists()
    run_id = json.loads(run_cli("runs", "--output", "json", "--state", str(team)).stdout)[0]["id"]
    assert f"resume with: drctl resume {run_id} --state '{team}'" in first.stderr
    lost = run_cli("resume", run_id, "--yes", cwd=str(tmp_path), env=env)
    assert lost.returncode == 2 and "--state" in lost.stderr, lost.stderr
    done = run_cli("resume", run_id, "--yes", "--state", str(team), cwd=str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "promoted").exists()
    # The flag wins over the runbook's setting.
    (tmp_path / "promoted").unlink()
    elsewhere = tmp_path / "elsewhere.db"
    flagged = run_cli("run", path, "--yes", "--state", str(elsewhere), cwd=str(tmp_path), env=env)
    assert flagged.returncode == 0, flagged.stderr
    assert (
        len(json.loads(run_cli("runs", "--output", "json", "--state", str(elsewhere)).stdout)) == 1
    )
    assert len(json.loads(run_cli("runs", "--output", "json", "--state", str(team)).stdout)) == 1


def test_yes_approves_every_gate(tmp_path: Path) -> None:
    """--yes passes every gate and journals who approved."""
    path = write(tmp_path, "steps:\n  - {id: g, type: approve}\n  - {id: h, type: approve}\n")
    result = drctl(tmp_path, "run", path, "--yes")
    assert result.returncode == 0
    events = [
        json.loads(x)
        for x in drctl(
            tmp_path, "log", str(last_run(tmp_path)["id"]), "--output", "json"
        ).stdout.splitlines()
    ]
    granted = [e["step"] for e in events if e["kind"] == "approval_granted"]
    assert granted == ["g", "h"]


def test_approval_prompt_on_a_terminal(tmp_path: Path) -> None:
    """On a TTY the gate shows the step and asks; 'y' approves, 'n' denies with exit 4."""
    import pty

    path = write(
        tmp_path,
        "steps:\n  - {id: promote, type: shell, approve: true, with: {command: 'touch {tmp}/p', verify: 'test -f {tmp}/p'}}\n",
    )

    def session(answer: bytes) -> tuple[int, str]:
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "drctl", "run", path, "--state", str(tmp_path / "state.db")],
            stdin=secondary, stdout=secondary, stderr=secondary, cwd=tmp_path, close_fds=True,
        )  # fmt: skip
        os.close(secondary)
        seen = b""
        deadline = time.monotonic() + 30
        answered = False
        while time.monotonic() < deadline:
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"Approve promote? [y/N]" in seen:
                os.write(primary, answer + b"\n")
                answered = True
        code = proc.wait(timeout=30)
        os.close(primary)
        return code, seen.decode(errors="replace")

    code, screen = session(b"n")
    assert code == 4
    assert "Approval needed: promote" in screen
    assert not (tmp_path / "p").exists()
    drctl(tmp_path, "abort", str(last_run(tmp_path)["id"]), "--reason", "test")
    code, screen = session(b"y")
    assert code == 0, screen
    assert (tmp_path / "p").exists()


def test_first_ctrl_c_waits_for_in_flight_steps_then_exits_130(tmp_path: Path) -> None:
    """SIGINT lets the running step finish, starts nothing new, exits 130; resume finishes."""
    path = write(
        tmp_path,
        """
steps:
  - {id: slow, type: shell, with: {command: "for i in $(seq 1200); do test -f {tmp}/go && break; sleep 0.05; done; touch {tmp}/slow", verify: "test -f {tmp}/slow"}}
  - {id: next, type: shell, with: {command: "touch {tmp}/next", verify: "test -f {tmp}/next"}}
""",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", path, "--state", str(tmp_path / "state.db")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out = _Lines(proc)
    _wait_for_event(tmp_path, "step_started", "slow")
    proc.send_signal(signal.SIGINT)
    # The step is held until drctl has taken the Ctrl-C, however slow the machine.
    out.wait_for("waiting for 1 in-flight step")
    (tmp_path / "go").touch()
    err = out.finish(timeout=30)
    assert proc.returncode == 130, err
    assert (tmp_path / "slow").exists()
    assert not (tmp_path / "next").exists()
    resumed = drctl(tmp_path, "resume", "--last")
    assert resumed.returncode == 0
    assert (tmp_path / "next").exists()


def test_second_ctrl_c_cancels_in_flight_steps(tmp_path: Path) -> None:
    """A second SIGINT kills the running command; the step stays in doubt and resume verifies it."""
    path = write(
        tmp_path,
        """
steps:
  - {id: long, type: shell, with: {command: "sleep 60", verify: "test -f {tmp}/done"}}
""",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", path, "--state", str(tmp_path / "state.db")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out = _Lines(proc)
    _wait_for_event(tmp_path, "step_started", "long")
    proc.send_signal(signal.SIGINT)
    # Two signals before the handler runs would count as one press: wait for the first.
    out.wait_for("waiting for 1 in-flight step")
    proc.send_signal(signal.SIGINT)
    # Bounded well below the command's 60 s: the second press cancelled it.
    out.finish(timeout=45)
    assert proc.returncode == 130
    run_id = str(last_run(tmp_path)["id"])
    kinds = [
        json.loads(x)["kind"]
        for x in drctl(tmp_path, "log", run_id, "--output", "json").stdout.splitlines()
    ]
    assert "step_failed" not in kinds
    (tmp_path / "done").touch()
    resumed = drctl(tmp_path, "resume", run_id)
    assert resumed.returncode == 0
    assert "already in effect (verified on resume)" in resumed.stdout


def test_resume_refuses_a_changed_plan_unless_allowed(tmp_path: Path) -> None:
    """Editing the runbook between run and resume is refused; --allow-changed-plan --yes shows the diff."""
    path = write(
        tmp_path,
        """
steps:
  - {id: gate, type: approve}
  - {id: act, type: shell, with: {command: "touch {tmp}/one", verify: "true"}}
""",
    )
    assert drctl(tmp_path, "run", path).returncode == 4
    Path(path).write_text(Path(path).read_text().replace("/one", "/two"))
    refused = drctl(tmp_path, "resume", "--last", "--yes")
    assert refused.returncode == 1
    assert "the runbook changed since run" in refused.stderr
    allowed = drctl(tmp_path, "resume", "--last", "--yes", "--allow-changed-plan")
    assert allowed.returncode == 0, allowed.stderr
    assert "with.command:" in allowed.stdout
    assert (tmp_path / "two").exists()


def test_lock_held_names_the_holder_and_unlock_needs_the_lease(tmp_path: Path) -> None:
    """A live holder makes a second run exit 3; unlock needs the exact lease id and is audited."""
    path = write(
        tmp_path,
        # Held until the test is done with the lock (bounded at 60 s), however slow the CLI.
        "steps:\n  - {id: s, type: shell, with: {command: 'for i in $(seq 1200); do test -f {tmp}/go && break; "
        "sleep 0.05; done', verify: 'true'}}\n",
    )
    holder = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", path, "--state", str(tmp_path / "state.db")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_event(tmp_path, "step_started", "s")
        second = drctl(tmp_path, "run", path)
        assert second.returncode == 3
        assert "lock 'cli' is held by run" in second.stderr
        status = json.loads(drctl(tmp_path, "status", "--output", "json").stdout)
        lease = status["lock"]["lease_id"]
        wrong = drctl(tmp_path, "unlock", "cli", "--lease", "nope", "--reason", "x")
        assert wrong.returncode == 2
        assert f"held under lease {lease}" in wrong.stderr
        right = drctl(tmp_path, "unlock", "cli", "--lease", lease, "--reason", "holder wedged")
        assert right.returncode == 0
    finally:
        (tmp_path / "go").touch()
        holder.wait(timeout=30)
    # The old holder lost its lease: it could not journal its success.
    assert holder.returncode == 1
    log = drctl(tmp_path, "log", str(status["id"]))
    assert "force-released by" in log.stdout
    assert "holder wedged" in log.stdout


def test_status_runs_and_log_in_json(tmp_path: Path) -> None:
    """status/runs/log describe a finished run as JSON documents."""
    path = write(
        tmp_path, "steps:\n  - {id: a, type: shell, with: {command: 'echo hi', verify: 'true'}}\n"
    )
    assert drctl(tmp_path, "run", path).returncode == 0
    run = last_run(tmp_path)
    assert run["status"] == "succeeded"
    status = json.loads(drctl(tmp_path, "status", str(run["id"])[:15], "--output", "json").stdout)
    assert status["steps"] == [
        {
            "id": "a",
            "status": "succeeded",
            "attempts": 1,
            "error": None,
            "outputs": {"exit_code": 0, "stdout": "hi\n"},
        }
    ]
    events = [
        json.loads(x)
        for x in drctl(tmp_path, "log", str(run["id"]), "--output", "json").stdout.splitlines()
    ]
    assert [e["kind"] for e in events] == [
        "run_started",
        "step_started",
        "step_succeeded",
        "run_finished",
    ]
    assert all(e["token"] == events[0]["token"] for e in events)
    missing = drctl(tmp_path, "status", "nope")
    assert missing.returncode == 2
    assert "no run 'nope'" in missing.stderr


class _Lines:
    """A child's stdout read line by line as it comes, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._more = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._more:
                self.lines.append(line)
                self._more.notify_all()
        with self._more:
            self.lines.append("")  # end of output
            self._more.notify_all()

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        with self._more:
            found = self._more.wait_for(
                lambda: any(text in line for line in self.lines) or "" in self.lines, timeout
            )
            seen = found and any(text in line for line in self.lines)
        if not seen:
            self.proc.kill()
            self.finish(timeout=10)
            raise AssertionError(f"drctl never printed {text!r}: {self.lines}")

    def finish(self, timeout: float) -> str:
        """Wait for the child to exit; returns its stderr."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.wait(timeout=timeout)  # what drctl writes to stderr here fits in the pipe
        self._reader.join(timeout=timeout)
        with self.proc.stdout, self.proc.stderr:
            return self.proc.stderr.read()


def _wait_for_event(tmp: Path, kind: str, step: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    db = tmp / "state.db"
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    row = conn.execute(
                        "SELECT 1 FROM events WHERE kind = ? AND step = ?", (kind, step)
                    ).fetchone()
                if row:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no {kind} for {step} within {timeout}s")


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def test_run_log_status_and_errors_show_escape_sequences_escaped(tmp_path: Path) -> None:
    """Escape sequences from a runbook or a command's output reach no terminal raw: run, log, status, runs, errors."""
    hidden = "\x1b[2K\x1b]0;owned\x07\u202e"
    path = write(
        tmp_path,
        f"""
steps:
  - id: a
    type: shell
    description: {json.dumps("look " + hidden + "here")}
    with:
      command: "printf 'out\\\\033[2Kput\\\\n'; exit 3"
      mutates: false
""",
    )
    ran = drctl(tmp_path, "run", path)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    run_id = str(last_run(tmp_path)["id"])
    shown = {
        "run": ran.stdout + ran.stderr,
        "log": drctl(tmp_path, "log", run_id).stdout,
        "status": drctl(tmp_path, "status", run_id).stdout,
        "runs": drctl(tmp_path, "runs").stdout,
        # A usage error that quotes what the operator typed.
        "error": drctl(tmp_path, "log", "run-\x1b[2K").stderr,
    }
    for name, text in shown.items():
        assert text.strip(), name
        assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text, (name, text)
    assert "\\u001b[2Kput" in shown["run"] + shown["log"], shown
