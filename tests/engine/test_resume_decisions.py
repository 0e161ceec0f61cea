"""Resume's escape hatches: --mark-done asks verify first, decisions hold, doubt persists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.engine.conftest import HEAD

PROC_TIMEOUT = 120


def _drctl(workdir: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m drctl ARGS`` in ``workdir`` against its own state file, bounded in time."""
    env = {k: v for k, v in os.environ.items() if k not in ("DRCTL_FAULT", "DRCTL_STATE")}
    if fault is not None:
        env["DRCTL_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "drctl", *args, "--state", str(workdir / "state.db")],
        capture_output=True, text=True, env=env, cwd=workdir, timeout=PROC_TIMEOUT, check=False,
    )  # fmt: skip


def _journal(workdir: Path, run_id: str) -> list[dict[str, Any]]:
    out = _drctl(workdir, "log", run_id, "--output", "json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _last_run(workdir: Path) -> str:
    out = _drctl(workdir, "runs", "--output", "json")
    return str(json.loads(out.stdout)[0]["id"])


def _killed_after_apply(tmp_path: Path, steps: str, step: str) -> str:
    """Run the runbook, killed right after ``step``'s apply; the run's id."""
    (tmp_path / "rb.yaml").write_text(HEAD + steps.replace("{tmp}", str(tmp_path)))
    crashed = _drctl(tmp_path, "run", "rb.yaml", fault=f"after-apply:{step}")
    assert crashed.returncode == -9, crashed.stderr
    return _last_run(tmp_path)


ONE_SHELL = """
steps:
  - id: bump
    type: shell
    with: {command: "echo x >> {tmp}/effect"}
acknowledge: [DR004]
"""


def test_mark_done_after_a_resume_stopped_in_doubt_marks_it_done_instead_of_reapplying(
    tmp_path: Path,
) -> None:
    """After a resume stops on an in-doubt step, every later resume keeps it in doubt until --mark-done settles it."""
    run_id = _killed_after_apply(tmp_path, ONE_SHELL, "bump")
    effect = tmp_path / "effect"
    assert effect.read_text() == "x\n"

    first = _drctl(tmp_path, "resume", "--last")
    assert first.returncode == 1, first.stderr
    assert "--reapply bump or --mark-done bump" in first.stdout + first.stderr
    # A second resume with no decision does not guess either: the step is still in doubt.
    second = _drctl(tmp_path, "resume", "--last")
    assert second.returncode == 1, second.stderr
    assert "--reapply bump or --mark-done bump" in second.stdout + second.stderr
    assert effect.read_text() == "x\n"

    marked = _drctl(tmp_path, "resume", "--last", "--mark-done", "bump")
    assert marked.returncode == 0, marked.stdout + marked.stderr
    assert effect.read_text() == "x\n", "--mark-done re-applied the step"
    done = [e for e in _journal(tmp_path, run_id) if e["kind"] == "step_succeeded"]
    assert len(done) == 1
    assert done[0]["data"]["marked_done"] is True
    assert done[0]["data"]["unverified"] is True
    assert "cannot verify" in done[0]["data"]["verdict"]
    assert "marked done by the operator UNVERIFIED" in marked.stdout


VERIFIED_SHELL = """
steps:
  - id: make
    type: shell
    with:
      command: "echo x >> {tmp}/effect"
      verify: "test -f {tmp}/wanted"
"""


def test_mark_done_runs_verify_first_and_needs_a_reason_against_a_failing_one(
    tmp_path: Path,
) -> None:
    """--mark-done shows what verify answers; against a failing verify it is refused without --reason, and journaled unverified with it."""
    run_id = _killed_after_apply(tmp_path, VERIFIED_SHELL, "make")

    refused = _drctl(tmp_path, "resume", run_id, "--mark-done", "make")
    assert refused.returncode == 1
    text = refused.stdout + refused.stderr
    assert "make: --mark-done: verify says it is NOT in effect" in text
    assert "--reason" in text
    # Refused, and still in doubt: the next resume is asked again, nothing re-applied.
    assert (tmp_path / "effect").read_text() == "x\n"

    marked = _drctl(
        tmp_path, "resume", run_id, "--mark-done", "make", "--reason", "checked the host by hand"
    )
    assert marked.returncode == 0, marked.stdout + marked.stderr
    assert (tmp_path / "effect").read_text() == "x\n"
    done = [e for e in _journal(tmp_path, run_id) if e["kind"] == "step_succeeded"]
    assert [d["data"].get("unverified") for d in done] == [True]
    assert done[0]["data"]["reason"] == "checked the host by hand"
    assert "verify says it is NOT in effect" in done[0]["data"]["verdict"]


def test_mark_done_with_a_confirming_verify_needs_no_reason(tmp_path: Path) -> None:
    """A --mark-done step whose verify confirms it is marked done, verified, with no --reason."""
    run_id = _killed_after_apply(tmp_path, VERIFIED_SHELL, "make")
    (tmp_path / "wanted").write_text("")
    marked = _drctl(tmp_path, "resume", run_id, "--mark-done", "make")
    assert marked.returncode == 0, marked.stdout + marked.stderr
    assert "verify says it is in effect" in marked.stdout
    done = [e for e in _journal(tmp_path, run_id) if e["kind"] == "step_succeeded"]
    assert done[0]["data"]["verified_on_resume"] is True
    assert "unverified" not in done[0]["data"]


def test_a_decision_that_would_not_be_acted_on_is_a_usage_error(tmp_path: Path) -> None:
    """--mark-done naming a step not in doubt, or no step at all, exits 2 instead of being ignored."""
    (tmp_path / "rb.yaml").write_text(
        HEAD
        + """
steps:
  - {id: ok, type: shell, with: {command: "true", verify: "true"}}
  - {id: bad, type: shell, with: {command: "exit 1", verify: "true"}}
"""
    )
    assert _drctl(tmp_path, "run", "rb.yaml").returncode == 1
    not_in_doubt = _drctl(tmp_path, "resume", "--last", "--mark-done", "ok")
    assert not_in_doubt.returncode == 2
    assert "--mark-done ok: the step is succeeded, not in doubt" in not_in_doubt.stderr
    unknown = _drctl(tmp_path, "resume", "--last", "--reapply", "nope")
    assert unknown.returncode == 2
    assert "--reapply nope: the plan has no step 'nope'" in unknown.stderr


def test_an_ignored_failure_names_its_attempt(tmp_path: Path) -> None:
    """A failure ignored under on_failure: continue is told with the attempt that failed, never 'attempt None'."""
    (tmp_path / "rb.yaml").write_text(
        HEAD
        + """
steps:
  - id: flaky
    type: shell
    on_failure: continue
    retries: {attempts: 2, delay: 10ms}
    with: {command: "exit 3", mutates: false}
"""
    )
    out = _drctl(tmp_path, "run", "rb.yaml")
    assert out.returncode == 0, out.stderr
    ignored = [line for line in out.stdout.splitlines() if "(ignored:" in line]
    assert len(ignored) == 1
    assert "flaky: FAILED (attempt 2): command exited 3" in ignored[0]
    assert "None" not in out.stdout
    events = _journal(tmp_path, _last_run(tmp_path))
    assert [e["attempt"] for e in events if e["data"].get("ignored")] == [2]


def test_an_http_post_that_cannot_verify_stays_in_doubt_on_every_resume(
    tmp_path: Path, http_server: Any
) -> None:
    """A mutating http POST with no json_path, killed after it was sent, is never taken as done nor sent again without a decision."""
    base, received = http_server
    steps = f"""
steps:
  - id: hook
    type: http
    with: {{method: POST, url: "{base}/hook", json: {{event: failover}}, expect_status: [204]}}
acknowledge: [DR004]
"""
    run_id = _killed_after_apply(tmp_path, steps, "hook")
    assert len(received) == 1
    for _ in range(2):
        resumed = _drctl(tmp_path, "resume", run_id)
        assert resumed.returncode == 1, resumed.stdout + resumed.stderr
        assert "cannot verify whether it took effect" in resumed.stderr
    assert len(received) == 1, "a resume sent the POST again without --reapply"
    again = _drctl(tmp_path, "resume", run_id, "--reapply", "hook")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(received) == 2


def test_an_unverifiable_post_that_timed_out_is_in_doubt_not_retried(tmp_path: Path) -> None:
    """A POST cut off by its timeout after the server got it is neither retried nor re-sent on resume: it is in doubt."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[str] = []
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(self.path)
            release.wait(10)  # answers only after the step gave up
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "rb.yaml").write_text(
            HEAD
            + f"""
steps:
  - id: hook
    type: http
    timeout: 1s
    retries: {{attempts: 3, delay: 10ms}}
    with: {{method: POST, url: "http://127.0.0.1:{server.server_address[1]}/hook", json: {{a: 1}}, expect_status: [204]}}
acknowledge: [DR004]
"""
        )
        ran = _drctl(tmp_path, "run", "rb.yaml")
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert "timed out" in ran.stderr and "--reapply hook or --mark-done hook" in ran.stderr
        assert received == ["/hook"], "a POST that may have been sent was retried"
        resumed = _drctl(tmp_path, "resume", "--last")
        assert resumed.returncode == 1, resumed.stdout + resumed.stderr
        assert "cannot verify whether it took effect" in resumed.stderr
        assert received == ["/hook"]
    finally:
        release.set()
        server.shutdown()
        server.server_close()


READ_ONLY_AROUND_A_WRITE = """
steps:
  - id: look
    type: shell
    with: {command: "echo look >> {tmp}/reads", mutates: false}
  - id: write
    type: shell
    with: {command: "echo write >> {tmp}/effect", verify: "grep -qx write {tmp}/effect"}
  - id: again
    type: shell
    with: {command: "echo again >> {tmp}/reads", mutates: false}
"""


def test_read_only_steps_journaled_with_the_next_intent_and_lost_ones_run_again(
    tmp_path: Path,
) -> None:
    """A read-only step's events become durable with the next mutating intent; one lost to a kill runs again on resume, and no outcome is ever journaled without its start."""
    run_id = _killed_after_apply(tmp_path, READ_ONLY_AROUND_A_WRITE, "again")
    kinds = [(e["kind"], e["step"]) for e in _journal(tmp_path, run_id)]
    # look's start and outcome were committed with write's intent; again's were still queued.
    assert ("step_succeeded", "look") in kinds
    assert ("step_started", "write") in kinds
    assert not [k for k in kinds if k[1] == "again"], kinds

    resumed = _drctl(tmp_path, "resume", "--last")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (tmp_path / "effect").read_text() == "write\n"  # verified, not applied again
    assert (tmp_path / "reads").read_text() == "look\nagain\nagain\n"  # look ran once
    events = _journal(tmp_path, run_id)
    for n, e in enumerate(events):
        if e["kind"] == "step_succeeded":
            started = [
                p for p in events[:n] if (p["kind"], p["step"]) == ("step_started", e["step"])
            ]
            assert started, f"{e['step']} succeeded with no step_started before it"
    assert events[-1]["data"]["status"] == "succeeded"
