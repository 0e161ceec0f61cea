"""The executor in-process: order, retries, timeouts, failure policies, outputs, dry-run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import HEAD, Harness


def test_steps_run_in_order_and_outputs_flow_to_later_steps(harness: Harness) -> None:
    """A later step's deferred template reads an earlier step's outputs at run time."""
    path = harness.write(
        HEAD
        + """
steps:
  - {id: measure, type: shell, with: {command: "echo 42", mutates: false}}
  - id: use
    type: shell
    with:
      command: "echo got-{{ steps.measure.outputs.stdout | trim }} > {tmp}/out"
      verify: "test -s {tmp}/out"
  - id: check
    type: assert
    with: {that: "{{ steps.measure.outputs.exit_code == 0 }}"}
"""
    )
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 0, outcome.message
    assert (harness.tmp / "out").read_text() == "got-42\n"
    assert [k for k in harness.kinds(run_id) if k[0] == "step_succeeded"] == [
        ("step_succeeded", "measure"),
        ("step_succeeded", "use"),
        ("step_succeeded", "check"),
    ]


def test_retries_back_off_and_journal_every_attempt(harness: Harness) -> None:
    """A step failing twice then passing is retried with delay × backoff, each attempt journaled."""
    path = harness.write(
        HEAD
        + """
steps:
  - id: flaky
    type: shell
    retries: {attempts: 4, delay: 1s, backoff: 2}
    with:
      command: "n=$(cat {tmp}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {tmp}/n; test $n -ge 3"
      verify: "test $(cat {tmp}/n) -ge 3"
"""
    )
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 0
    events = harness.store.events(run_id)
    attempts = [
        (e.kind, e.attempt) for e in events if e.step == "flaky" and e.kind.startswith("step_")
    ]
    assert attempts == [
        ("step_started", 1),
        ("step_failed", 1),
        ("step_started", 2),
        ("step_failed", 2),
        ("step_started", 3),
        ("step_succeeded", 3),
    ]
    assert harness.clock.slept == [1.0, 2.0]


def test_timeout_kills_the_process_group_and_fails_the_step(harness: Harness) -> None:
    """A command past its timeout is killed with its children; the step fails with a timeout."""
    path = harness.write(
        HEAD
        + """
steps:
  - id: slow
    type: shell
    timeout: 700ms
    with: {command: "sleep 30 & echo $! > {tmp}/child; wait", verify: "true", grace: 1s}
"""
    )
    started = time.monotonic()
    _, outcome = harness.run(path)
    # Far below the child's 30 s: the step did not wait for it (however slow the machine).
    assert time.monotonic() - started < 20
    assert outcome.exit_code == 1
    assert "timeout" in outcome.message
    child = int((harness.tmp / "child").read_text())
    # SIGKILL is delivered asynchronously: wait (bounded) for the kernel to end the child.
    stat = Path(f"/proc/{child}/stat")
    deadline = time.monotonic() + 10
    while stat.exists() and "Z" not in stat.read_text().split()[2]:
        assert time.monotonic() < deadline, f"child {child} outlived its killed process group"
        time.sleep(0.02)


def test_rollback_undoes_completed_mutations_in_reverse_order(harness: Harness) -> None:
    """on_failure: rollback runs undo of completed mutating steps, last first, journaled."""
    undo = "{tmp}/undo"
    path = harness.write(
        HEAD
        + f"""
steps:
  - {{id: a, type: shell, with: {{command: "true", verify: "true", undo: "echo a >> {undo}"}}}}
  - {{id: b, type: shell, with: {{command: "true", verify: "true", undo: "echo b >> {undo}"}}}}
  - {{id: c, type: shell, on_failure: rollback, with: {{command: "exit 3", verify: "true"}}}}
  - {{id: d, type: shell, with: {{command: "touch {{tmp}}/d", verify: "true"}}}}
"""
    )
    run_id, outcome = harness.run(path)
    assert outcome.status == "rolled_back"
    assert outcome.exit_code == 1
    assert (harness.tmp / "undo").read_text() == "b\na\n"
    assert not (harness.tmp / "d").exists()
    undo_events = [k for k in harness.kinds(run_id) if k[0].startswith("undo_")]
    assert undo_events == [
        ("undo_started", "b"),
        ("undo_succeeded", "b"),
        ("undo_started", "a"),
        ("undo_succeeded", "a"),
    ]


def test_on_failure_continue_and_fallback(harness: Harness) -> None:
    """continue lets the run go on; a fallback that succeeds recovers the step."""
    path = harness.write(
        HEAD
        + """
steps:
  - {id: optional, type: shell, on_failure: continue, with: {command: "exit 1", verify: "true"}}
  - {id: fence, type: shell, on_failure: {run: hard-fence}, with: {command: "exit 1", verify: "true"}}
  - {id: after, type: shell, with: {command: "touch {tmp}/after", verify: "test -f {tmp}/after"}}
fallbacks:
  - {id: hard-fence, type: shell, with: {command: "touch {tmp}/hard", verify: "test -f {tmp}/hard"}}
"""
    )
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 0, outcome.message
    assert (harness.tmp / "hard").exists()
    assert (harness.tmp / "after").exists()
    state = harness.state(run_id)
    assert state.steps["optional"].status == "ignored"
    assert state.steps["fence"].status == "recovered"
    assert state.steps["hard-fence"].status == "succeeded"


def test_abort_policy_stops_launching_and_resume_retries_the_failed_step(harness: Harness) -> None:
    """A failed step ends the run (exit 1); fixing the world and resuming finishes it."""
    path = harness.write(
        HEAD
        + """
steps:
  - {id: a, type: shell, with: {command: "test -f {tmp}/ready", verify: "test -f {tmp}/ready"}}
  - {id: b, type: shell, with: {command: "touch {tmp}/b", verify: "test -f {tmp}/b"}}
"""
    )
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 1
    assert not (harness.tmp / "b").exists()
    (harness.tmp / "ready").touch()
    again = harness.resume(run_id)
    assert again.exit_code == 0, again.message
    assert (harness.tmp / "b").exists()
    assert harness.state(run_id).steps["a"].attempts == 2


def test_when_is_rendered_at_run_time(harness: Harness) -> None:
    """A when reading an output is decided when the step is reached."""
    path = harness.write(
        HEAD
        + """
steps:
  - {id: probe, type: shell, with: {command: "echo no", mutates: false}}
  - id: maybe
    type: shell
    when: "{{ steps.probe.outputs.stdout | trim == 'yes' }}"
    with: {command: "touch {tmp}/maybe", verify: "true"}
"""
    )
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 0
    assert harness.state(run_id).steps["maybe"].status == "skipped"
    assert not (harness.tmp / "maybe").exists()


def test_dry_run_runs_checks_and_changes_nothing(harness: Harness) -> None:
    """--dry-run runs each check, journals a dry run, applies nothing and takes no lock."""
    path = harness.write(
        HEAD
        + """
steps:
  - id: a
    type: shell
    with: {command: "touch {tmp}/applied", check: "touch {tmp}/checked-a", verify: "true"}
  - id: b
    type: shell
    with: {command: "touch {tmp}/applied", check: "exit 4", verify: "true"}
"""
    )
    run_id, outcome = harness.run(path, dry_run=True)
    assert outcome.status == "dry_run_failed"
    assert outcome.exit_code == 1
    assert (harness.tmp / "checked-a").exists()
    assert not (harness.tmp / "applied").exists()
    assert harness.store.get_run(run_id).dry_run is True  # type: ignore[union-attr]
    assert harness.store.lock_info("t") is None
    checked = [
        (e.step, e.data["ok"]) for e in harness.store.events(run_id) if e.kind == "step_checked"
    ]
    assert checked == [("a", True), ("b", False)]


def test_fan_out_runs_concurrently_up_to_the_limit(harness: Harness) -> None:
    """Independent instances overlap in time, never more than --concurrency at once."""
    path = harness.write(
        HEAD
        + """
steps:
  - id: fan
    type: shell
    for_each: [a, b, c, d, e, f]
    with:
      command: >-
        echo start $(date +%s.%N) >> {tmp}/log-{{ item }}; touch {tmp}/began-{{ item }};
        for i in $(seq 400); do [ $(ls {tmp} | grep -c '^began-') -ge 3 ] && break; sleep 0.05; done;
        echo end $(date +%s.%N) >> {tmp}/log-{{ item }}
      verify: "true"
"""
    )
    # Each instance ends only once three have begun (bounded at 20 s): the first three
    # overlap however slowly the machine starts them (a serial executor shows peak 1).
    _, outcome = harness.run(path, concurrency=3)
    assert outcome.exit_code == 0
    spans = []
    for item in "abcdef":
        lines = (harness.tmp / f"log-{item}").read_text().split()
        spans.append((float(lines[1]), float(lines[3])))
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert peak == 3


def test_settings_concurrency_is_the_default_limit(harness: Harness) -> None:
    """Without --concurrency the runbook's settings.concurrency bounds the fan-out; the flag overrides it."""
    path = harness.write(
        HEAD
        + """
settings: {concurrency: 2}
steps:
  - id: fan
    type: shell
    for_each: [a, b, c, d]
    with:
      command: >-
        echo start $(date +%s.%N) >> {tmp}/log-{{ item }}; touch {tmp}/began-{{ item }};
        for i in $(seq 400); do [ $(ls {tmp} | grep -c '^began-') -ge $(cat {tmp}/want) ] && break; sleep 0.05; done;
        echo end $(date +%s.%N) >> {tmp}/log-{{ item }}
      verify: "true"
"""
    )
    # Each instance ends only once `want` instances have begun (bounded at 20 s), so the
    # limit is reached however slowly the machine starts them.
    (harness.tmp / "want").write_text("2")

    def peak() -> int:
        spans = []
        for item in "abcd":
            lines = (harness.tmp / f"log-{item}").read_text().split()
            spans.append((float(lines[-3]), float(lines[-1])))
        return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)

    _, outcome = harness.run(path)
    assert outcome.exit_code == 0 and peak() == 2
    for item in "abcd":
        (harness.tmp / f"log-{item}").unlink()
        (harness.tmp / f"began-{item}").unlink()
    (harness.tmp / "want").write_text("4")
    _, outcome = harness.run(path, concurrency=4)
    assert outcome.exit_code == 0 and peak() == 4


def test_a_second_run_is_refused_while_one_is_unfinished(harness: Harness) -> None:
    """A run waiting at a gate blocks a new run of the same runbook (exit 3) until resumed."""
    path = harness.write(
        HEAD
        + """
steps:
  - {id: gate, type: approve}
  - {id: act, type: shell, with: {command: "touch {tmp}/act", verify: "test -f {tmp}/act"}}
"""
    )
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 4
    assert outcome.status == "waiting_approval"
    from drctl.errors import LockHeld

    with pytest.raises(LockHeld, match=run_id):
        harness.run(path)
    harness.gate_answers["gate"] = "granted"
    assert harness.resume(run_id).exit_code == 0
    assert (harness.tmp / "act").exists()


def test_http_and_notify_steps_talk_to_a_real_server(
    harness: Harness, http_server: tuple[str, list[dict[str, object]]]
) -> None:
    """http checks status and a JSON value; notify POSTs its message; both against a local server."""
    url, received = http_server
    path = harness.write(
        HEAD
        + f"""
steps:
  - {{id: health, type: http, with: {{url: "{url}/health", json_path: status, equals: ok}}}}
  - {{id: tell, type: notify, with: {{url: "{url}/hook", message: "hello", fields: {{team: dba}}}}}}
  - {{id: missing, type: http, with: {{url: "{url}/nope"}}}}
"""
    )
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 1
    assert "status 404, expected 200" in outcome.message
    assert received[0]["text"] == "hello"
    assert received[0]["team"] == "dba"
    assert received[0]["run_id"] == run_id
    assert harness.state(run_id).steps["health"].outputs["json"] == {"status": "ok"}


def test_wait_until_polls_another_step_types_verify(harness: Harness) -> None:
    """wait: until polls a shell verify until it holds, within its deadline."""
    marker = harness.tmp / "ready"
    path = harness.write(
        HEAD
        + """
steps:
  - id: w
    type: wait
    with:
      until: {type: shell, with: {command: "true", verify: "test -f {tmp}/ready"}}
      interval: 100ms
      deadline: 1s
"""
    )
    _, outcome = harness.run(path)
    assert outcome.exit_code == 1
    assert "gave up after" in outcome.message
    marker.touch()
    harness.store = type(harness.store)(harness.tmp / "state2.db")
    _, outcome = harness.run(path)
    assert outcome.exit_code == 0, outcome.message


def test_process_environment_is_not_leaked_into_the_plan(harness: Harness) -> None:
    """Sanity: the harness runs in tmp_path (relative paths in steps resolve there)."""
    assert os.getcwd() == str(harness.tmp)


def test_a_bug_in_a_step_type_journals_its_redacted_traceback(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception in a step type is journaled with its traceback, secrets masked,
    and a debug sink prints that traceback."""
    import io

    from drctl.engine import executor
    from drctl.engine.output import PlainSink
    from drctl.steps.shell import Shell

    secret = "tok-7c1e9a2b-bug"

    class Buggy(Shell):
        def apply(self, ctx: Any) -> None:
            raise ZeroDivisionError(f"division by the token {secret}")

    monkeypatch.setenv("BUG_TOKEN", secret)
    real = executor.get_step_type
    monkeypatch.setattr(
        executor, "get_step_type", lambda name: Buggy() if name == "shell" else real(name)
    )
    shown = io.StringIO()
    harness.sink = PlainSink(shown, debug=True)  # type: ignore[assignment]
    path = harness.write(
        HEAD
        + """
steps:
  - id: s
    type: shell
    with: {command: "true", verify: "true", env: {T: "${env:BUG_TOKEN}"}}
"""
    )
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 1
    [failed] = [e for e in harness.store.events(run_id) if e.kind == "step_failed"]
    trace = failed.data["traceback"]
    assert "Traceback (most recent call last)" in trace
    assert "ZeroDivisionError: division by the token ***" in trace
    assert "in apply" in trace
    assert secret not in json.dumps(failed.data)
    assert "ZeroDivisionError: division by the token ***" in shown.getvalue()
    assert secret not in shown.getvalue()


def test_a_plain_sink_prints_no_traceback_without_debug(harness: Harness) -> None:
    """Without DRCTL_DEBUG a step type's traceback stays in the journal, out of the lines."""
    import io

    from drctl.engine.output import PlainSink
    from drctl.state.base import Event

    shown = io.StringIO()
    data = {"error": "internal error", "final": True, "traceback": "Traceback (most recent"}
    PlainSink(shown).event(Event("step_failed", 0.0, "s", 1, data))
    assert shown.getvalue().endswith("s: FAILED (attempt 1): internal error\n")
    PlainSink(shown, debug=True).event(Event("step_failed", 0.0, "s", 1, data))
    assert shown.getvalue().endswith("Traceback (most recent")


def test_every_view_tells_a_step_in_the_same_words(harness: Harness) -> None:
    """Plain lines, JSON lines, drctl log and the live view show each outcome's one line."""
    import io

    from drctl.engine.output import JsonSink, LiveSink, PlainSink
    from drctl.render.runs import log_text
    from drctl.state.base import RunRecord

    path = harness.write(
        HEAD
        + """
steps:
  - {id: ok, type: shell, with: {command: "true", verify: "true"}}
  - {id: bad, type: shell, on_failure: continue, with: {command: "exit 3", verify: "true"}}
"""
    )
    run_id, _ = harness.run(path)
    events = harness.store.events(run_id)
    record = harness.store.get_run(run_id)
    assert isinstance(record, RunRecord)
    plain, as_json = io.StringIO(), io.StringIO()
    live = LiveSink(record.plan(), io.StringIO())
    for e in events:
        PlainSink(plain).event(e)
        JsonSink(as_json).event(e)
        live.event(e)
    live.close()
    plain_lines = [line.split(" ", 1)[1] for line in plain.getvalue().splitlines()]
    json_lines = [json.loads(line)["line"] for line in as_json.getvalue().splitlines()]
    # drctl log also lists each attempt's rendered inputs, under its started line.
    log_lines = [line.split("] ", 1)[1] for line in log_text(events).splitlines() if "] " in line]
    assert plain_lines == json_lines == log_lines
    succeeded = next(line for line in plain_lines if line.startswith("ok: run"))
    assert succeeded.startswith("ok: run `true` — ok in ")
    assert live.rows["ok"].text == succeeded
    ignored = [line for line in plain_lines if line.startswith("bad: FAILED")][-1]
    assert live.rows["bad"].text == ignored
    assert "(attempt None)" not in ignored


def test_a_refused_new_run_does_not_take_over_a_dead_holders_lock(harness: Harness) -> None:
    """A run refused because an earlier one is unfinished leaves that run's expired lease in place (no unjournaled takeover)."""
    path = harness.write(HEAD + "steps:\n  - {id: gate, type: approve}\n")
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 4
    record = harness.store.get_run(run_id)
    assert record is not None
    # The earlier run's process died holding the lock: its lease ran out long ago.
    dead = harness.store.acquire(
        record.lock_key, run_id, "someone", "elsewhere", 1, ttl=1.0, now=time.time() - 60
    ).lease
    from drctl.errors import LockHeld

    with pytest.raises(LockHeld, match=run_id):
        harness.run(path)
    held = harness.store.lock_info(record.lock_key)
    assert held is not None
    assert (held.lease_id, held.token) == (dead.lease_id, dead.token)


@pytest.mark.parametrize("words", ["plain words", "déjà vu — ✓"])
def test_a_run_record_keeps_the_plan_it_ran(harness: Harness, words: str) -> None:
    """The stored plan reads back as the plan's to_dict, ASCII only, whatever text it holds."""
    from drctl.compiler.compile import compile_runbook
    from drctl.state.base import dumps

    path = harness.write(
        HEAD
        + f"steps:\n  - {{id: s, type: wait, description: '{words}', with: {{duration: 0s}}}}\n"
    )
    run_id, outcome = harness.run(path)
    assert outcome.exit_code == 0, outcome.message
    record = harness.store.get_run(run_id)
    assert record is not None
    assert record.plan_json.isascii()
    plan = compile_runbook(path)
    assert json.loads(record.plan_json) == json.loads(dumps(plan.to_dict()))
    assert record.plan().hash == record.plan_hash == plan.hash
