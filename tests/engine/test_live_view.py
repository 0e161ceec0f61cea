"""What an operator sees: rendered gates and texts, Ctrl-C at a prompt, the live view, resume.

The gate, Ctrl-C and live-view tests run drctl in a real pseudo-terminal (tmux, whose
screen is read back as a person would see it, or a stdlib pty as its controlling
terminal); the rest read the plain lines, JSON and ``drctl log``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_cli
from tests.engine.terminal import Pty, Screen
from tests.integration.conftest import PG_ADMIN_URL

HEAD = "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: live}\n"

#: A gate reading params and an earlier step's output, as issue 14 found it shown raw.
GATED = """
params:
  a_name: {type: str, default: node2}
targets:
  a: {type: postgres, dsn: "%s"}
steps:
  - id: position-a
    type: postgres.sql
    target: a
    with: {query: "SELECT '0/5000060'::text AS lsn"}
  - id: confirm
    type: approve
    with: {message: "{{ params.a_name }} is at {{ steps['position-a'].outputs.rows[0][0] }}; promote node3?"}
  - id: promote
    type: shell
    with: {command: "touch {tmp}/promoted", verify: "test -f {tmp}/promoted"}
"""


def write(tmp: Path, body: str) -> str:
    path = tmp / "rb.yaml"
    path.write_text(HEAD + body.replace("{tmp}", str(tmp)))
    return str(path)


def drctl(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--state", str(tmp / "state.db"), cwd=str(tmp))


def gated(tmp: Path) -> str:
    dsn = PG_ADMIN_URL.rsplit("/", 1)[0] + "/postgres"
    return write(tmp, GATED % dsn)


def last_run_id(tmp: Path) -> str:
    return str(json.loads(drctl(tmp, "runs", "--output", "json").stdout)[0]["id"])


def test_gate_prompt_and_its_row_show_params_and_outputs_rendered_once(tmp_path: Path) -> None:
    """On a terminal, the gate's prompt and its table row show the message rendered (a param
    and a PostgreSQL step's output), never braces, the message once, the run id and elapsed
    time above a table refreshed before the prompt, and no second table after the answer."""
    path = gated(tmp_path)
    screen = Screen(tmp_path, "run", path, "--state", str(tmp_path / "state.db"))
    try:
        before = screen.wait_for("Approve confirm? [y/N]")
        assert "{{" not in before and "}}" not in before
        prompt = before.split("Approval needed: confirm", 1)[1]
        assert prompt.count("node2 is at 0/5000060; promote node3?") == 1
        table = before.split("Approval needed: confirm", 1)[0]
        assert "waiting for approval: gate: node2 is at 0/5000060" in table
        assert "position-a" in table and "succeeded" in table and "running" not in table
        run_id = last_run_id(tmp_path)
        assert f"run {run_id} · live · elapsed" in table
        screen.send("y", "Enter")
        assert screen.exit_code() == 0
        after = screen.text()
    finally:
        screen.close()
    assert (tmp_path / "promoted").exists()
    # One table: the prompt was erased and the view went on in its place.
    assert len(re.findall(r"step\s+state\s+try", after)) == 1, after
    assert after.count(f"run {run_id} ·") == 1, after
    assert "Approve confirm?" not in after
    # The journal keeps what the approver was shown.
    log = drctl(tmp_path, "log", run_id).stdout
    assert "confirm: approved (prompt by " in log
    assert "): gate: node2 is at 0/5000060; promote node3?" in log


def test_ctrl_c_at_the_approval_prompt_interrupts_the_run(tmp_path: Path) -> None:
    """Ctrl-C typed at a gate's prompt ends the run as interrupted (exit 130), not denied, and
    resume asks again."""
    path = write(
        tmp_path,
        "steps:\n  - {id: promote, type: shell, approve: true, with: {command: 'touch {tmp}/p', verify: 'test -f {tmp}/p'}}\n",
    )
    term = Pty(tmp_path, "run", path, "--state", str(tmp_path / "state.db"))
    try:
        term.read_until(b"Approve promote? [y/N]")
        term.type(b"\x03")
        code = term.wait(timeout=20)
    finally:
        term.close()
    assert code == 130, term.seen.decode(errors="replace")
    assert not (tmp_path / "p").exists()
    run_id = last_run_id(tmp_path)
    record = json.loads(drctl(tmp_path, "status", run_id, "--output", "json").stdout)
    assert record["status"] == "interrupted"
    kinds = [
        json.loads(line)["kind"]
        for line in drctl(tmp_path, "log", run_id, "--output", "json").stdout.splitlines()
    ]
    assert "approval_denied" not in kinds
    resumed = drctl(tmp_path, "resume", run_id, "--approve", "promote")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (tmp_path / "p").exists()


def test_a_fan_out_is_one_row_with_progress_and_its_failed_shards(tmp_path: Path) -> None:
    """A 40-shard for_each is one row with a progress bar and counts, and the failed shards
    are listed by their id with its shard key."""
    items = ", ".join(f"s{i:02d}" for i in range(40))
    path = write(
        tmp_path,
        f"""
steps:
  - id: noop
    type: shell
    for_each: [{items}]
    as: shard
    on_failure: continue
    with: {{command: "test {{{{ shard }}}} != s07 && test {{{{ shard }}}} != s31", mutates: false}}
  - {{id: gate, type: approve, with: {{message: "go on?"}}}}
""",
    )
    screen = Screen(tmp_path, "run", path, "--state", str(tmp_path / "state.db"))
    try:
        seen = screen.wait_for("Approve gate? [y/N]")
        screen.send("n", "Enter")
        assert screen.exit_code() == 4
    finally:
        screen.close()
    table = seen.split("Approval needed", 1)[0]
    assert "noop ×40" in table
    assert "38/40 done · 0 running · 2 failed" in table
    assert "█" in table
    assert "noop[s07]" in table and "noop[s31]" in table
    assert "noop[s08]" not in table  # the ones that passed are counted, not listed


def test_a_resumed_run_shows_what_already_succeeded(tmp_path: Path) -> None:
    """Resumed on a terminal, the steps the journal has as succeeded show as succeeded (not
    pending), under the run's id."""
    path = write(
        tmp_path,
        """
steps:
  - {id: first, type: shell, with: {command: "touch {tmp}/first", verify: "test -f {tmp}/first"}}
  - {id: gate, type: approve, with: {message: "go on?"}}
""",
    )
    assert drctl(tmp_path, "run", path).returncode == 4  # no terminal: waits for approval
    run_id = last_run_id(tmp_path)
    screen = Screen(tmp_path, "resume", run_id, "--state", str(tmp_path / "state.db"))
    try:
        seen = screen.wait_for("Approve gate? [y/N]")
        screen.send("y", "Enter")
        assert screen.exit_code() == 0
    finally:
        screen.close()
    first = next(line for line in seen.splitlines() if " first " in line)
    assert "succeeded" in first and "pending" not in first
    assert f"run {run_id} (resumed) ·" in seen


def _interrupted_in_flight(tmp_path: Path) -> str:
    """A run whose one step was cancelled by two Ctrl-Cs: started, no outcome."""
    path = write(
        tmp_path,
        """
steps:
  - {id: long, type: shell, timeout: 30s, with: {command: "sleep 60", verify: "sleep 1; test -f {tmp}/done"}}
""",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "drctl", "run", path, "--state", str(tmp_path / "state.db")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    with proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded: the step ends at its 30 s timeout at the latest
            lines.append(line)
            if "long: started" in line:
                proc.send_signal(signal.SIGINT)
            if "in-flight step" in line:
                proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, "".join(lines)
    return last_run_id(tmp_path)


def test_status_lists_a_step_of_an_interrupted_run_as_interrupted(tmp_path: Path) -> None:
    """drctl status shows a step started with no outcome in a stopped run as interrupted,
    not running."""
    run_id = _interrupted_in_flight(tmp_path)
    status = drctl(tmp_path, "status", run_id)
    assert "interrupted long" in " ".join(status.stdout.split()), status.stdout
    assert "running" not in status.stdout.split("\n\n", 1)[1]
    data = json.loads(drctl(tmp_path, "status", run_id, "--output", "json").stdout)
    assert data["steps"][0]["status"] == "interrupted"


def test_a_resumed_in_doubt_step_says_its_verify_is_checking(tmp_path: Path) -> None:
    """Resuming an in-doubt step says that its verify is checking whether it took effect
    (and for how long it may wait) before the verify's answer."""
    run_id = _interrupted_in_flight(tmp_path)
    (tmp_path / "done").touch()
    resumed = drctl(tmp_path, "resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    out = resumed.stdout
    assert "long: interrupted earlier; checking whether it took effect" in out
    assert "may wait up to 30s" in out
    assert out.index("checking whether") < out.index("already in effect (verified on resume)")


def test_journal_and_log_keep_each_steps_rendered_inputs_with_secrets_masked(
    tmp_path: Path,
) -> None:
    """Each attempt's rendered inputs (an earlier output filled in) are journaled on its
    step_started and listed by drctl log; a resolved secret never is."""
    canary = "canary-5d1e-secret-value"
    path = write(
        tmp_path,
        """
params:
  token: {type: str, default: "${env:LV_CANARY}"}
steps:
  - {id: pick, type: shell, with: {command: "printf node3", mutates: false}}
  - id: use
    type: shell
    description: "repoint to {{ steps.pick.outputs.stdout }}"
    with:
      command: "echo {{ steps.pick.outputs.stdout }} {{ params.token }}"
      mutates: false
""",
    )
    done = run_cli(
        "run", path, "--state", str(tmp_path / "state.db"), cwd=str(tmp_path),
        env={"LV_CANARY": canary},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "use: repoint to node3 — ok in" in done.stdout
    run_id = last_run_id(tmp_path)
    log = drctl(tmp_path, "log", run_id).stdout
    assert "with.command: echo node3 ${env:LV_CANARY}" in log
    events = [
        json.loads(x)
        for x in drctl(tmp_path, "log", run_id, "--output", "json").stdout.splitlines()
    ]
    started = next(e for e in events if e["kind"] == "step_started" and e["step"] == "use")
    assert started["data"]["inputs"]["command"] == "echo node3 ${env:LV_CANARY}"
    assert started["data"]["description"] == "repoint to node3"
    assert canary not in log and canary not in json.dumps(events)


def test_a_skip_line_shows_the_values_its_condition_read(tmp_path: Path) -> None:
    """A step skipped by a when that reads an output says which values made it false, in
    plain output, JSON and drctl log, never in braces."""
    path = write(
        tmp_path,
        """
steps:
  - {id: role, type: shell, with: {command: "printf standby", mutates: false}}
  - id: promote
    type: shell
    when: "{{ steps.role.outputs.stdout == 'primary' }}"
    with: {command: "true", mutates: false}
""",
    )
    done = drctl(tmp_path, "run", path)
    assert done.returncode == 0, done.stdout + done.stderr
    want = "promote: skipped (when steps.role.outputs.stdout == 'primary' is false (steps.role.outputs.stdout = 'standby'))"
    assert want in done.stdout
    run_id = last_run_id(tmp_path)
    assert want in drctl(tmp_path, "log", run_id).stdout
    lines = [
        json.loads(x)["line"]
        for x in drctl(tmp_path, "log", run_id, "--output", "json").stdout.splitlines()
    ]
    assert want in lines
    assert not any("{{" in (line or "") for line in lines)


def test_what_cannot_be_rendered_yet_is_said_in_words() -> None:
    """A text reading a step that has not run shows its known part and says what the rest
    waits for; one whose value cannot be had says why; neither shows braces."""
    from drctl.engine import shown

    context = {"params": {"a_name": "node2"}, "targets": {}, "steps": {}}
    text = "{{ params.a_name }} is at {{ steps['position-a'].outputs.rows[0][0] }}"
    assert shown.text(text, context) == "node2 is at (known once position-a has run)"
    context["steps"] = {"position-a": {"outputs": {"rows": []}}}
    got = shown.text(text, context)
    assert got.startswith("node2 is at (cannot be shown: ") and "{" not in got
    assert shown.text("{% if steps.x.outputs.ok %}go{% endif %}", context) == (
        "(known once x has run)"
    )


def test_the_plan_time_live_row_of_a_gate_is_rendered_as_far_as_known(tmp_path: Path) -> None:
    """Before its step runs, a gate's row in the live view shows the params part of its
    message and says the rest waits for position-a, with no braces."""
    import io

    from drctl.compiler.compile import compile_runbook
    from drctl.compiler.params import ParamInput
    from drctl.engine.output import LiveSink

    plan = compile_runbook(gated(tmp_path), ParamInput(()))
    live = LiveSink(plan, io.StringIO())
    try:
        text = live.rows["confirm"].text
    finally:
        live.close()
    assert "node2" in text and "{{" not in text
    assert "(known once position-a has run)" in text
    assert os.path.exists(tmp_path / "rb.yaml")


def test_plan_and_dry_run_show_a_gate_without_braces(tmp_path: Path) -> None:
    """drctl plan words a gate with its params filled in and what waits for an output said in
    words, in text and markdown; a dry run shows no braces either."""
    path = gated(tmp_path)
    plan = run_cli("plan", path, cwd=str(tmp_path))
    assert plan.returncode == 0, plan.stderr
    assert "   gate: node2 is at (known once position-a has run)\n" in plan.stdout
    markdown = run_cli("plan", path, "--format", "markdown", cwd=str(tmp_path)).stdout
    assert "| gate: node2 is at (known once position-a has run) |" in markdown
    dry = drctl(tmp_path, "run", path, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "{{" not in dry.stdout and "confirm: would gate: node2 is at" in dry.stdout


def test_a_gate_without_a_terminal_is_journaled_and_printed_rendered(tmp_path: Path) -> None:
    """With no terminal, the gate's waiting line (plain output, drctl log) carries the message
    rendered with the params and the earlier step's output."""
    path = gated(tmp_path)
    done = drctl(tmp_path, "run", path)
    assert done.returncode == 4, done.stdout + done.stderr
    want = "confirm: waiting for approval: gate: node2 is at 0/5000060; promote node3?"
    assert want in done.stdout
    assert want in drctl(tmp_path, "log", last_run_id(tmp_path)).stdout


def test_a_thousand_shard_fan_out_is_one_row_in_the_live_view(tmp_path: Path) -> None:
    """A 1,000-shard fan-out's events leave one row for it, counting 1,000 of 1,000 done, and
    a rendered view of a few lines, not a thousand."""
    import io

    from rich.console import Console

    from drctl.engine.output import LiveSink
    from drctl.state.base import RunRecord
    from tests.engine.conftest import Harness

    harness = Harness(
        tmp_path,
        __import__("drctl.state.sqlite", fromlist=["x"]).SqliteStore(tmp_path / "state.db"),
    )
    ids = ", ".join(f"s{i:04d}" for i in range(1000))
    path = write(
        tmp_path,
        f"""
params:
  ids: {{type: list, default: [{ids}]}}
steps:
  - {{id: noop, type: wait, for_each: "{{{{ params.ids }}}}", as: shard, with: {{duration: 0s}}}}
""",
    )
    run_id, outcome = harness.run(path, concurrency=64)
    assert outcome.exit_code == 0
    record = harness.store.get_run(run_id)
    assert isinstance(record, RunRecord)
    live = LiveSink(record.plan(), io.StringIO())
    try:
        for event in harness.store.events(run_id):
            live.event(event)
        assert live.group_counts("noop") == (1000, 0, 0, 1000)
        out = io.StringIO()
        live.console.width = 150  # as on a 150-column terminal
        Console(file=out, width=150).print(live._render())
    finally:
        live.close()
    screen = out.getvalue()
    assert "noop ×1000" in screen and "1000/1000 done · 0 running · 0 failed" in screen
    assert len(screen.splitlines()) < 10
    assert f"run {run_id} · live · elapsed" in screen


def test_a_gate_rendering_an_output_that_holds_a_secret_shows_it_masked(tmp_path: Path) -> None:
    """A gate message that renders an earlier output holding a resolved secret shows ***
    at the prompt and in its row, never the secret."""
    canary = "canary-91b7-gate-secret"
    path = write(
        tmp_path,
        """
steps:
  - {id: leak, type: shell, with: {command: "printf \\"token=$TOKEN\\"", env: {TOKEN: "${env:LV_GATE_CANARY}"}, mutates: false}}
  - {id: confirm, type: approve, with: {message: "saw {{ steps.leak.outputs.stdout }}; go on?"}}
""",
    )
    screen = Screen(
        tmp_path, "run", path, "--state", str(tmp_path / "state.db"),
        env={"LV_GATE_CANARY": canary},
    )  # fmt: skip
    try:
        seen = screen.wait_for("Approve confirm? [y/N]")
        screen.send("n", "Enter")
        assert screen.exit_code() == 4
        seen += screen.text()
    finally:
        screen.close()
    assert "saw token=***; go on?" in seen
    assert canary not in seen


def test_the_live_view_shows_each_guard_and_its_last_reading(tmp_path: Path) -> None:
    """A guarded run in a real terminal shows the guard's reading, then its change."""
    path = tmp_path / "rb.yaml"
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: guarded}\nguards:\n"
        f"  - {{id: healthy, type: shell, with: {{command: 'test ! -e {tmp_path}/bad', mutates: false}}, every: 0.1s, trip_after: 2}}\n"
        "steps:\n"
        f"  - {{id: hold, type: shell, with: {{command: 'for i in $(seq 1200); do test -e {tmp_path}/release && break; sleep 0.05; done', mutates: false}}}}\n"
    )
    screen = Screen(tmp_path, "run", str(path), "--state", str(tmp_path / "state.db"))
    try:
        screen.wait_for("guard healthy: ok")
        (tmp_path / "bad").touch()
        shown = screen.wait_for("guard healthy TRIPPED")
        assert "guard healthy: ok" not in shown  # one line per guard: its last reading
        (tmp_path / "release").touch()
        assert screen.exit_code() == 1
    finally:
        screen.close()
