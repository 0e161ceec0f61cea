"""The compiler: params, templating, fan-out, graph, secrets, plan hash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from drctl.compiler.compile import compile_runbook
from drctl.compiler.params import ParamInput
from drctl.errors import RunbookInvalid

HEAD = """
apiVersion: drctl/v1
kind: Runbook
metadata: {name: t}
"""


def codes(excinfo: pytest.ExceptionInfo[RunbookInvalid]) -> list[str]:
    return [d.code for d in excinfo.value.diagnostics]


def messages(excinfo: pytest.ExceptionInfo[RunbookInvalid]) -> str:
    return "\n".join(
        f"{d.location} {d.code} {d.message} {d.hint}" for d in excinfo.value.diagnostics
    )


def test_requires_defaults_to_the_previous_step(write_runbook: Callable[..., str]) -> None:
    """Without ``requires`` a runbook reads top to bottom."""
    path = write_runbook(
        HEAD
        + """
steps:
  - {id: a, type: shell, with: {command: "true", verify: "true"}}
  - {id: b, type: shell, with: {command: "true", verify: "true"}}
  - {id: c, type: shell, with: {command: "true", verify: "true"}}
"""
    )
    plan = compile_runbook(path)
    assert [(s.id, s.requires) for s in plan.steps] == [("a", ()), ("b", ("a",)), ("c", ("b",))]


def test_for_each_fans_out_and_the_next_step_waits_for_every_instance(
    write_runbook: Callable[..., str],
) -> None:
    """Instances are named id[item], each requires the step before, the next requires all."""
    path = write_runbook(
        HEAD
        + """
params:
  shards: {type: list, default: [s1, s2, s3]}
steps:
  - {id: first, type: shell, with: {command: "true", verify: "true"}}
  - id: fan
    type: shell
    for_each: "{{ params.shards }}"
    as: shard
    with: {command: "echo {{ shard }}", verify: "true"}
  - {id: last, type: shell, with: {command: "true", verify: "true"}}
"""
    )
    plan = compile_runbook(path)
    ids = [s.id for s in plan.steps]
    assert ids == ["first", "fan[s1]", "fan[s2]", "fan[s3]", "last"]
    assert plan.step("fan[s2]").requires == ("first",)
    assert plan.step("fan[s2]").inputs["command"] == "echo s2"
    assert plan.step("last").requires == ("fan[s1]", "fan[s2]", "fan[s3]")


def test_for_each_over_mappings_uses_their_id(write_runbook: Callable[..., str]) -> None:
    """A list of mappings names instances by the item's id (or name)."""
    path = write_runbook(
        HEAD
        + """
steps:
  - id: fan
    type: shell
    for_each: [{id: eu, port: 1}, {id: us, port: 2}]
    with: {command: "echo {{ item.port }}", verify: "true"}
"""
    )
    plan = compile_runbook(path)
    assert [(s.id, s.inputs["command"]) for s in plan.steps] == [
        ("fan[eu]", "echo 1"),
        ("fan[us]", "echo 2"),
    ]


def test_order_is_topological_with_runbook_order_as_tie_break(
    write_runbook: Callable[..., str],
) -> None:
    """A step listed early but requiring a later one moves after it; others keep their order."""
    path = write_runbook(
        HEAD
        + """
steps:
  - {id: a, type: shell, requires: [c], with: {command: "true", verify: "true"}}
  - {id: b, type: shell, requires: [], with: {command: "true", verify: "true"}}
  - {id: c, type: shell, requires: [], with: {command: "true", verify: "true"}}
"""
    )
    plan = compile_runbook(path)
    assert [s.id for s in plan.steps] == ["b", "c", "a"]


def test_cycles_are_errors_naming_the_steps(write_runbook: Callable[..., str]) -> None:
    """A dependency cycle is reported as a → b → a at the requires line."""
    path = write_runbook(
        HEAD
        + """
steps:
  - {id: a, type: shell, requires: [b], with: {command: "true", verify: "true"}}
  - {id: b, type: shell, requires: [a], with: {command: "true", verify: "true"}}
"""
    )
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(path)
    assert codes(info) == ["E251"]
    assert "a → b → a" in messages(info) or "b → a → b" in messages(info)


def test_unknown_requires_and_type_and_target_get_suggestions(
    write_runbook: Callable[..., str],
) -> None:
    """Misspelled step ids, step types and targets say what was meant, all at once."""
    path = write_runbook(
        HEAD
        + """
targets:
  status: {type: http, base_url: "https://x"}
steps:
  - {id: check, type: htp, target: status, with: {url: /}}
  - {id: call, type: http, target: statsu, requires: [chekc], with: {url: /}}
"""
    )
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(path)
    text = messages(info)
    assert "E210 unknown step type 'htp' did you mean 'http'?" in text
    assert "E211 unknown target 'statsu' did you mean 'status'?" in text
    assert "E250 step 'call' requires unknown step 'chekc' did you mean 'check'?" in text


def test_template_names_are_checked_with_suggestions(write_runbook: Callable[..., str]) -> None:
    """Unknown params, unknown names and secret target fields are errors with positions."""
    path = write_runbook(
        HEAD
        + """
params:
  region: {type: str, default: eu}
targets:
  db: {type: postgres, dsn: "${env:DSN}", host: db1}
steps:
  - id: a
    type: shell
    with:
      command: "echo {{ params.regoin }} {{ regoin }} {{ targets.db.dsn }} {{ targets.db.hots }}"
      verify: "true"
"""
    )
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(path)
    text = messages(info)
    assert ":13:16 E241 unknown parameter params.regoin did you mean 'region'?" in text
    assert "unknown name 'regoin'" in text
    assert "targets.db.dsn is secret" in text
    assert "targets.db has no field 'hots'" in text


def test_target_fields_render_and_secrets_stay_references(
    write_runbook: Callable[..., str],
) -> None:
    """Non-secret target fields render; secret references pass through unresolved."""
    path = write_runbook(
        HEAD
        + """
targets:
  db: {type: postgres, dsn: "${env:DRCTL_TEST_DSN}", host: db1.internal}
steps:
  - id: a
    type: shell
    with:
      command: "psql -h {{ targets.db.host }}"
      env: {PGPASSWORD: "${env:DRCTL_TEST_PW}"}
      verify: "true"
"""
    )
    plan = compile_runbook(path)
    step = plan.steps[0]
    assert step.inputs["command"] == "psql -h db1.internal"
    assert step.inputs["env"] == {"PGPASSWORD": "${env:DRCTL_TEST_PW}"}
    assert plan.targets["db"]["dsn"] == "${env:DRCTL_TEST_DSN}"


def test_secret_references_are_never_resolved_by_the_compiler(
    write_runbook: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when the variable is set, its value appears nowhere in the plan."""
    from drctl.render.plan import as_json, as_markdown, as_text

    canary = "canary-s3cr3t-value-91723"
    monkeypatch.setenv("DRCTL_CANARY", canary)
    path = write_runbook(
        HEAD
        + """
targets:
  api: {type: http, base_url: "https://x", headers: {Authorization: "${env:DRCTL_CANARY}"}}
steps:
  - {id: a, type: notify, with: {url: "${env:DRCTL_CANARY}", message: hi}}
"""
    )
    plan = compile_runbook(path)
    for text in (as_text(plan), as_markdown(plan), as_json(plan)):
        assert canary not in text
        assert "${env:DRCTL_CANARY}" in text


def test_bad_secret_reference_syntax_is_an_error(write_runbook: Callable[..., str]) -> None:
    """``${vault:x}`` and an unclosed ``${env:X`` are errors, not literals."""
    path = write_runbook(
        HEAD
        + """
steps:
  - {id: a, type: notify, with: {url: "${vault:x}", message: "${env:UNCLOSED"}}
"""
    )
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(path)
    assert codes(info) == ["E260", "E260"]


def test_step_output_references_are_deferred_to_run_time(write_runbook: Callable[..., str]) -> None:
    """A template reading steps.X.outputs is kept as written and marked deferred."""
    path = write_runbook(
        HEAD
        + """
steps:
  - {id: measure, type: shell, with: {command: "true", mutates: false}}
  - id: check
    type: assert
    with: {that: "{{ steps.measure.outputs.bytes < 10 }}"}
"""
    )
    plan = compile_runbook(path)
    step = plan.step("check")
    assert step.inputs["that"] == "{{ steps.measure.outputs.bytes < 10 }}"
    assert step.deferred == ("with.that",)


def test_output_reference_to_a_step_that_does_not_run_before_is_an_error(
    write_runbook: Callable[..., str],
) -> None:
    """Reading outputs of a step that is not a dependency is caught at compile time."""
    path = write_runbook(
        HEAD
        + """
steps:
  - id: check
    type: assert
    with: {that: "{{ steps.measure.outputs.bytes < 10 }}"}
  - {id: measure, type: shell, with: {command: "true", mutates: false}}
  - id: other
    type: assert
    with: {that: "{{ steps.mesure.outputs.x }}"}
"""
    )
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(path)
    text = messages(info)
    assert "reads outputs of 'measure', which does not run before it" in text
    assert "steps.mesure, which is not a step did you mean 'measure'?" in text


def test_when_false_at_plan_time_marks_the_step_skipped(write_runbook: Callable[..., str]) -> None:
    """``when`` is rendered at compile time when it can be."""
    path = write_runbook(
        HEAD
        + """
params:
  dry: {type: bool, default: true}
steps:
  - {id: a, type: shell, when: "not params.dry", with: {command: "true", verify: "true"}}
"""
    )
    assert compile_runbook(path).steps[0].when is False
    assert compile_runbook(path, ParamInput(("dry=false",))).steps[0].when is True


def test_step_inputs_are_validated_against_the_step_type(write_runbook: Callable[..., str]) -> None:
    """Unknown and mistyped ``with`` fields are positioned errors."""
    path = write_runbook(
        HEAD
        + """
steps:
  - id: a
    type: http
    with: {url: /, methd: GET, expect_status: [two hundred]}
"""
    )
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(path)
    text = messages(info)
    assert ":8:20 E201 steps[0].with.methd: unknown field did you mean 'method'?" in text
    assert "steps[0].with.expect_status[0]" in text


def test_templated_numbers_are_validated_after_rendering(write_runbook: Callable[..., str]) -> None:
    """A single-expression template keeps its type, so an int param fills an int field."""
    path = write_runbook(
        HEAD
        + """
params:
  code: {type: int, default: 204}
steps:
  - id: a
    type: http
    with: {url: /, expect_status: ["{{ params.code }}"]}
"""
    )
    assert compile_runbook(path).steps[0].inputs["expect_status"] == [204]


def test_duplicate_ids_are_reported_with_the_first_line(write_runbook: Callable[..., str]) -> None:
    """Two steps with one id is an error pointing at the second, naming the first."""
    path = write_runbook(
        HEAD
        + """
steps:
  - {id: a, type: shell, with: {command: "true", verify: "true"}}
  - {id: a, type: shell, with: {command: "true", verify: "true"}}
"""
    )
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(path)
    assert "duplicate step id 'a' (first at line 6)" in messages(info)


def test_all_errors_in_a_file_are_reported_at_once(write_runbook: Callable[..., str]) -> None:
    """A broken header and two broken steps give errors for all three."""
    path = write_runbook("""
apiVersion: drctl/v9
kind: Runbook
metadata: {name: t}
steps:
  - {id: a, type: shel}
  - {id: b, type: shell, timeout: forever, with: {command: x}}
""")
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(path)
    assert codes(info) == ["E200", "E210", "E200"]


def test_plan_hash_ignores_file_location_but_not_content(write_runbook: Callable[..., str]) -> None:
    """Moving a runbook keeps its hash; changing an input changes it."""
    body = (
        HEAD
        + """
steps:
  - {id: a, type: shell, with: {command: "true", verify: "true"}}
"""
    )
    one = compile_runbook(write_runbook(body, "one.yaml"))
    two = compile_runbook(write_runbook(body, "two.yaml"))
    three = compile_runbook(
        write_runbook(body.replace('"true", verify', '"false", verify'), "three.yaml")
    )
    assert one.hash == two.hash
    assert one.hash != three.hash
    assert one.hash.startswith("sha256:") and len(one.hash) == 71


def test_on_failure_must_name_a_fallback(write_runbook: Callable[..., str]) -> None:
    """``on_failure: {run: X}`` must name a step under fallbacks."""
    path = write_runbook(
        HEAD
        + """
steps:
  - {id: a, type: shell, on_failure: {run: stop-it}, with: {command: "true", verify: "true"}}
fallbacks:
  - {id: stop, type: shell, with: {command: "true", verify: "true"}}
"""
    )
    with pytest.raises(RunbookInvalid) as info:
        compile_runbook(path)
    assert (
        "on_failure runs 'stop-it', which is not a step under fallbacks: did you mean 'stop'?"
        in messages(info)
    )


def test_plan_hashes_are_what_0_1_0_computed() -> None:
    """Every example runbook hashes as drctl 0.1.0 hashed it, so its journaled runs resume."""
    import json

    from tests.conftest import REPO

    cases = json.loads((REPO / "tests/fixtures/plan_hashes_0_1_0.json").read_text())
    assert len(cases) >= 10
    for case in cases:
        plan = compile_runbook(
            str(REPO / case["runbook"]),
            ParamInput(tuple(case["params"])),
            placeholders=case["placeholders"],
        )
        assert plan.hash == case["hash"], case["runbook"]


def test_retries_wait_as_their_policy_says() -> None:
    """delay_before: nothing before the first attempt, then delay growing by backoff, capped."""
    from drctl.compiler.plan import Retries

    policy = Retries(attempts=5, delay=1.0, backoff=2.0, max_delay=5.0)
    assert [policy.delay_before(n) for n in range(1, 6)] == [0.0, 1.0, 2.0, 4.0, 5.0]
    assert Retries(attempts=3, delay=2.0).delay_before(3) == 2.0
    with pytest.raises(ValueError, match="attempts"):
        Retries(attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        Retries(backoff=0.5)


def test_a_stored_plan_reads_back_as_the_same_typed_plan() -> None:
    """plan_from_dict(to_dict()) gives back the typed values, and the same content and hash."""
    from drctl.compiler.plan import FailurePolicy, plan_from_dict, plan_hash
    from tests.conftest import REPO

    plan = compile_runbook(str(REPO / "tests/fixtures/journal_0_1_0/runbook.yaml"))
    again = plan_from_dict(plan.to_dict())
    assert again.content() == plan.content()
    assert plan_hash(again) == plan.hash
    assert again.settings.lock_key(again.name) == "journal-fixture"
    flaky, fenced, promote = again.step("flaky"), again.step("fenced"), again.step("promote")
    assert flaky.retries.attempts == 2
    assert fenced.on_failure.policy is FailurePolicy.FALLBACK
    assert fenced.on_failure.run == "fallback-fence"
    assert promote.rollback is not None
    assert promote.rollback.inputs == {"command": "rm -f promoted"}


def test_a_plan_diff_names_changed_settings(write_runbook: Callable[..., str]) -> None:
    """A settings change shows as settings.<field> in the diff, in text and JSON."""
    from drctl.compiler.diff import diff_plans
    from drctl.render.diff import as_json, as_text

    body = "settings: {lock: %s}\nsteps:\n  - {id: a, type: wait, with: {duration: 0s}}\n"
    old = compile_runbook(write_runbook(HEAD + body % "one", name="old.yaml"))
    new = compile_runbook(write_runbook(HEAD + body % "two", name="new.yaml"))
    changed = diff_plans(old, new)
    assert "settings.lock" in as_text(changed, "old", "new")
    assert "settings.lock" in as_json(changed, "old", "new")


def test_a_step_made_from_its_fields_is_the_one_init_makes(tmp_path: Path) -> None:
    """CompiledStep.of gives what CompiledStep(**fields) gives, and refuses a wrong field."""
    from dataclasses import fields

    from drctl.compiler.plan import CompiledStep

    path = tmp_path / "rb.yaml"
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: t}\nsteps:\n"
        "  - {id: a, type: wait, with: {duration: 0s}}\n"
        "  - {id: b, type: shell, retries: {attempts: 2}, with: {command: 'true', verify: 'true'}}\n"
    )
    for step in compile_runbook(str(path)).steps:
        given = {f.name: getattr(step, f.name) for f in fields(step) if f.name != "guards"}
        made = CompiledStep.of(given)
        assert made == CompiledStep(**given) == step
        assert repr(made) == repr(step)
    with pytest.raises(TypeError, match="requires"):
        CompiledStep.of({k: v for k, v in given.items() if k != "requires"})
    with pytest.raises(TypeError, match="colour"):
        CompiledStep.of({**given, "colour": "red"})
