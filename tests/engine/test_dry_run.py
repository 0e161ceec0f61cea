"""--dry-run runs read-only steps for real, checks mutating ones, and defers what depends on them."""

from __future__ import annotations

from tests.engine.conftest import HEAD, Harness
from tests.integration.pg_sandbox import free_port


def _checked(harness: Harness, run_id: str) -> dict[str, dict[str, object]]:
    return {
        str(e.step): dict(e.data) for e in harness.store.events(run_id) if e.kind == "step_checked"
    }


def test_a_read_only_query_that_would_fail_fails_the_dry_run(harness: Harness) -> None:
    """postgres.sql SELECT 1 expecting 2 fails a dry run, against the machine's server and against one that does not exist."""
    nowhere = free_port()
    path = harness.write(
        HEAD
        + f"""
targets:
  real: {{type: postgres, dsn: "host=127.0.0.1 port=5432 dbname=postgres user=postgres"}}
  gone: {{type: postgres, dsn: "host=127.0.0.1 port={nowhere} dbname=postgres user=postgres connect_timeout=2"}}
steps:
  - {{id: on-real, type: postgres.sql, target: real, with: {{query: "SELECT 1", expect: 2}}}}
  - {{id: on-gone, type: postgres.sql, target: gone, requires: [], with: {{query: "SELECT 1", expect: 1}}}}
  - {{id: fine, type: postgres.sql, target: real, requires: [], with: {{query: "SELECT 1", expect: 1}}}}
"""
    )
    run_id, outcome = harness.run(path, dry_run=True)
    assert outcome.status == "dry_run_failed", outcome.message
    assert outcome.message.startswith("2 checks failed")
    checked = _checked(harness, run_id)
    assert checked["on-real"]["ok"] is False
    assert "2" in str(checked["on-real"]["error"])
    assert checked["on-gone"]["ok"] is False
    assert checked["fine"] == {
        "ok": True, "would": checked["fine"]["would"], "ran": True, "outputs": {"rows": [[1]]},
    }  # fmt: skip


def test_a_read_only_shell_step_runs_and_its_outputs_reach_later_steps(harness: Harness) -> None:
    """shell with mutates: false runs in a dry run; a later step reading its output is checked with it; a mutating one is not applied."""
    path = harness.write(
        HEAD
        + """
steps:
  - {id: look, type: shell, with: {command: "touch {tmp}/looked; echo node3", mutates: false}}
  - id: act
    type: shell
    with:
      command: "touch {tmp}/acted-{{ steps.look.outputs.stdout | trim }}"
      check: "touch {tmp}/checked-{{ steps.look.outputs.stdout | trim }}"
      verify: "true"
"""
    )
    run_id, outcome = harness.run(path, dry_run=True)
    assert outcome.exit_code == 0, outcome.message
    assert (harness.tmp / "looked").exists()
    assert (harness.tmp / "checked-node3").exists()
    assert not list(harness.tmp.glob("acted-*"))
    checked = _checked(harness, run_id)
    assert checked["look"]["ran"] is True
    assert "ran" not in checked["act"]


def test_a_step_reading_outputs_of_a_mutating_step_is_deferred_not_failed(
    harness: Harness,
) -> None:
    """A step whose inputs read a mutating step's outputs is deferred (named), and the dry run passes."""
    path = harness.write(
        HEAD
        + """
steps:
  - {id: make, type: shell, with: {command: "echo made", verify: "true"}}
  - id: use
    type: shell
    with: {command: "echo {{ steps.make.outputs.stdout }}", mutates: false}
  - id: after
    type: assert
    with: {that: "{{ steps.use.outputs.exit_code == 0 }}"}
"""
    )
    run_id, outcome = harness.run(path, dry_run=True)
    assert outcome.exit_code == 0, outcome.message
    assert "2 deferred until earlier steps take effect" in outcome.message
    checked = _checked(harness, run_id)
    assert checked["use"]["deferred"] == "reads outputs of make, which a dry run does not apply"
    assert checked["after"]["deferred"] == "reads outputs of use, which is deferred"
    lines = [n for n in harness.sink.events if n.kind == "step_checked"]
    assert len(lines) == 3


def test_a_check_on_a_target_an_earlier_step_changes_is_deferred(harness: Harness) -> None:
    """A read-only query failing on a target that an earlier mutating step acts on is deferred; the same failure elsewhere fails."""
    nowhere = free_port()
    dsn = f"host=127.0.0.1 port={nowhere} dbname=postgres user=postgres connect_timeout=2"
    path = harness.write(
        HEAD
        + f"""
targets:
  node: {{type: postgres, dsn: "{dsn}"}}
steps:
  - id: restart
    type: shell
    with: {{command: "true", verify: "true"}}
  - id: promote
    type: postgres.promote
    target: node
    with: {{force: true, accept_data_loss: true}}
    acknowledge: [DR001, DR002]
  - {{id: is-primary, type: postgres.sql, target: node, with: {{query: "SELECT NOT pg_is_in_recovery()", expect: true}}}}
"""
    )
    run_id, outcome = harness.run(path, dry_run=True)
    checked = _checked(harness, run_id)
    # The promote's own check fails (nothing answers): the run would stop there first.
    assert checked["promote"]["ok"] is False
    assert checked["is-primary"]["deferred"] == "promote acts on node first"
    assert checked["is-primary"]["error"]
    assert outcome.message.startswith("1 check failed; 1 deferred")
