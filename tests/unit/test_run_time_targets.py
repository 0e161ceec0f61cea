"""Targets as templates: rendered at compile time, or decided at run time among known targets.

Offline: the compiler, the plan's wording, the lints over every target a step can take,
and the bad input of ``target_one_of`` and ``verifies``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drctl.compiler.compile import compile_runbook
from drctl.compiler.params import ParamInput
from drctl.compiler.plan import plan_from_dict
from drctl.errors import RunbookInvalid
from drctl.render.plan import as_markdown, as_text
from tests.conftest import run_cli

HEAD = """apiVersion: drctl/v1
kind: Runbook
metadata: {name: chosen}
params:
  standby: {type: str, default: node2}
targets:
  node1: {type: postgres, dsn: "${env:N1}"}
  node2: {type: postgres, dsn: "${env:N2}"}
  node3: {type: postgres, dsn: "${env:N3}"}
  app: {type: postgres, dsn: "${env:APP}"}
  dns: {type: rfc2136, server: 127.0.0.1, zone: z., tsig_key_name: k, tsig_secret: "${env:K}"}
steps:
"""

CHOOSE = """  - id: choose
    type: postgres.choose_primary
    with: {old_primary: node1, candidates: [node2, node3]}
"""

FENCE = "  - {id: fence, type: postgres.fence, target: node1, with: {mode: hard}}\n"

PROMOTE = """  - id: promote
    type: postgres.promote
    target: "{{ steps.choose.outputs.target }}"
    with: {old_primary: node1}
"""

FOLLOW = """  - id: follow
    type: postgres.follow
    for_each: "{{ steps.choose.outputs.others }}"
    target: "{{ item }}"
    with: {new_primary: "{{ steps.choose.outputs.target }}"}
"""

PROBE = "  - {id: probe, type: postgres.write_probe, target: app, verifies: promote}\n"


def errors(path: str, *flags: str) -> list[tuple[str, str]]:
    """(code, message) of every diagnostic compiling ``path`` gives (none: it compiles)."""
    try:
        compile_runbook(path, ParamInput(flags))
    except RunbookInvalid as exc:
        return [(d.code, d.message) for d in exc.diagnostics]
    return []


def located(path: str) -> list[str]:
    """The ``file:line:col: error CODE`` heads of ``drctl validate``'s lines (it must exit 2)."""
    done = run_cli("validate", path)
    assert done.returncode == 2, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if ": error " in line]


def test_the_plan_says_in_words_how_a_run_time_target_is_decided(
    write_runbook: Callable[..., str],
) -> None:
    """The promote's target reads 'decided at run time from steps.choose.outputs.target: one of node2, node3', braces nowhere."""
    plan = compile_runbook(write_runbook(HEAD + CHOOSE + FENCE + PROMOTE + FOLLOW + PROBE))
    promote = plan.step("promote")
    assert promote.target is None
    assert promote.target_choices == ("node2", "node3")
    words = "decided at run time from steps.choose.outputs.target: one of node2, node3"
    assert promote.target_text() == words
    text = as_text(plan)
    line = next(x for x in text.splitlines() if "postgres.promote" in x)
    assert words in line and "{" not in line
    assert "promote node2 or node3 (decided at run time) to primary" in text
    assert words in as_markdown(plan)


def test_a_fan_out_over_run_time_targets_has_one_instance_per_candidate(
    write_runbook: Callable[..., str],
) -> None:
    """for_each over choose's others plans follow[node2] and follow[node3], each on its own target, run only if listed."""
    plan = compile_runbook(write_runbook(HEAD + CHOOSE + FENCE + PROMOTE + FOLLOW + PROBE))
    follows = [s for s in plan.steps if s.base_id == "follow"]
    assert [(s.id, s.target) for s in follows] == [
        ("follow[node2]", "node2"),
        ("follow[node3]", "node3"),
    ]
    assert all(s.item_from == "{{ steps.choose.outputs.others }}" for s in follows)
    assert "runs only if node3 is among steps.choose.outputs.others at run time" in as_text(plan)


def test_a_fan_out_over_a_params_list_of_targets_types_each_item(
    write_runbook: Callable[..., str],
) -> None:
    """for_each over a list param of target names puts each instance on its target; a name that is no target is E211."""
    text = HEAD.replace(
        "params:\n", "params:\n  standbys: {type: list, default: [node2, node3]}\n"
    ) + (
        '  - {id: lag, type: postgres.replication_lag, for_each: "{{ params.standbys }}",\n'
        '     target: "{{ item }}"}\n'
    )
    path = write_runbook(text)
    plan = compile_runbook(path)
    assert [(s.id, s.target) for s in plan.steps] == [
        ("lag[node2]", "node2"),
        ("lag[node3]", "node3"),
    ]
    assert plan.step("lag[node2]").item_from is None  # known at compile time: no run-time list
    assert [s.description for s in plan.steps] == [
        "measure replication lag of node2",
        "measure replication lag of node3",
    ]
    found = errors(path, 'standbys=["node2", "app2"]')
    assert [c for c, _ in found] == ["E211"]
    assert "unknown target 'app2' (its template rendered 'app2')" in found[0][1]


def test_a_stored_plan_keeps_its_run_time_targets_and_hash(
    write_runbook: Callable[..., str],
) -> None:
    """plan_from_dict(to_dict()) gives back target_from, its choices and item_from, and the same hash."""
    plan = compile_runbook(write_runbook(HEAD + CHOOSE + FENCE + PROMOTE + FOLLOW + PROBE))
    again = plan_from_dict(plan.to_dict())
    assert again.step("promote").target_from == plan.step("promote").target_from
    assert again.step("promote").target_choices == ("node2", "node3")
    assert again.step("follow[node3]").item_from == plan.step("follow[node3]").item_from
    assert again.content() == plan.content()


def test_a_target_template_over_params_is_rendered_and_checked_at_compile_time(
    write_runbook: Callable[..., str],
) -> None:
    """target: '{{ params.standby }}' is node2 in the plan; a value naming no target is E211 saying what it rendered."""
    steps = '  - {id: lag, type: postgres.replication_lag, target: "{{ params.standby }}"}\n'
    path = write_runbook(HEAD + steps)
    assert compile_runbook(path).step("lag").target == "node2"
    assert compile_runbook(path, ParamInput(("standby=node3",))).step("lag").target == "node3"
    found = errors(path, "standby=node9")
    assert [c for c, _ in found] == ["E211"]
    assert "unknown target 'node9' (its template rendered 'node9')" in found[0][1]
    wrong = errors(path, "standby=dns")
    assert [c for c, _ in wrong] == ["E211"] and "'dns' is a rfc2136 target" in wrong[0][1]


def test_a_run_time_target_the_compiler_cannot_trace_needs_target_one_of(
    write_runbook: Callable[..., str],
) -> None:
    """A target from a shell step's stdout is E211 at the target's line:col, asking for target_one_of."""
    steps = (
        '  - {id: pick, type: shell, with: {command: "echo node2", mutates: false}}\n'
        '  - {id: lag, type: postgres.replication_lag, target: "{{ steps.pick.outputs.stdout }}"}\n'
    )
    path = write_runbook(HEAD + steps)
    heads = located(path)
    assert len(heads) == 1 and heads[0].startswith(f"{path}:14:") and "E211" in heads[0]
    assert "target is decided at run time from steps.pick.outputs.stdout" in heads[0]
    fixed = steps.replace('outputs.stdout }}"', 'outputs.stdout }}", target_one_of: [node2, node3]')
    assert errors(write_runbook(HEAD + fixed)) == []


def test_a_run_time_fan_out_the_compiler_cannot_trace_needs_target_one_of(
    write_runbook: Callable[..., str],
) -> None:
    """for_each over a shell step's stdout is E211 at for_each's line:col, asking for target_one_of."""
    steps = (
        '  - {id: pick, type: shell, with: {command: "echo node2", mutates: false}}\n'
        '  - {id: lag, type: postgres.replication_lag, target: "{{ item }}",\n'
        '     for_each: "{{ steps.pick.outputs.stdout.split() }}"}\n'
    )
    path = write_runbook(HEAD + steps)
    heads = located(path)
    assert len(heads) == 1 and heads[0].startswith(f"{path}:15:") and "E211" in heads[0], heads
    assert "for_each is decided at run time from steps.pick.outputs.stdout.split()" in heads[0]
    assert "target_one_of" in run_cli("validate", path).stdout


@pytest.mark.parametrize(
    ("one_of", "col_of", "message"),
    [
        ("[node2, node9]", "node9", "unknown target 'node9' (one of the targets"),
        ("[node2, dns]", "dns", "'dns' is a rfc2136 target (one of the targets"),
    ],
)
def test_every_choice_in_target_one_of_is_declared_and_of_the_right_type(
    write_runbook: Callable[..., str], one_of: str, col_of: str, message: str
) -> None:
    """A target_one_of entry that is unknown or of the wrong type is E211 at that entry's line:col."""
    steps = (
        '  - {id: pick, type: shell, with: {command: "echo node2", mutates: false}}\n'
        "  - id: lag\n    type: postgres.replication_lag\n"
        '    target: "{{ steps.pick.outputs.stdout }}"\n'
        f"    target_one_of: {one_of}\n"
    )
    text = HEAD + steps
    path = write_runbook(text)
    line = text.splitlines().index(f"    target_one_of: {one_of}") + 1
    col = text.splitlines()[line - 1].index(col_of) + 1
    heads = located(path)
    assert len(heads) == 1, heads
    assert heads[0].startswith(f"{path}:{line}:{col}: error E211"), heads
    assert message in heads[0]


@pytest.mark.parametrize(
    ("field", "code", "message"),
    [
        ("target: node2, target_one_of: [node2, node3]", "E211", "this step's target is fixed"),
        ("target: node2, target_one_of: []", "E200", "target_one_of"),
        ("target: node2, target_one_of: node2", "E200", "target_one_of"),
        ('target: "{{ params.standby }}", target_one_of: [node3]', "E211", "not in target_one_of"),
    ],
)
def test_bad_target_one_of_is_a_positioned_error(
    write_runbook: Callable[..., str], field: str, code: str, message: str
) -> None:
    """target_one_of on a fixed target, empty, not a list, or excluding the rendered name: error with file:line:col, exit 2."""
    path = write_runbook(HEAD + f"  - {{id: lag, type: postgres.replication_lag, {field}}}\n")
    heads = located(path)
    assert heads and all(h.startswith(f"{path}:13:") for h in heads), heads
    assert any(f"error {code}" in h and message in h for h in heads), heads


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ("verifies: nope", "verifies names 'nope', which is not a step"),
        ("verifies: [fence, 3]", "verifies"),
        ("requires: [choose], verifies: promote", "which does not run before 'probe'"),
    ],
)
def test_bad_verifies_is_a_positioned_error(
    write_runbook: Callable[..., str], probe: str, message: str
) -> None:
    """verifies naming no step, a non-name, or a step not before it: error at its line:col, exit 2."""
    text = HEAD + CHOOSE + FENCE + PROMOTE
    text += f"  - {{id: probe, type: postgres.write_probe, target: app, {probe}}}\n"
    path = write_runbook(text)
    line = len(text.splitlines())
    heads = located(path)
    assert any(h.startswith(f"{path}:{line}:") and message in h for h in heads), heads


def test_verifies_on_a_step_that_verifies_nothing_is_refused(
    write_runbook: Callable[..., str],
) -> None:
    """A fence naming the promote in verifies: is E242: only a verify-role step may."""
    text = (
        HEAD
        + CHOOSE
        + FENCE
        + PROMOTE
        + ("  - {id: fence2, type: postgres.fence, target: node1, verifies: promote}\n")
    )
    found = errors(write_runbook(text))
    assert ("E242", "verifies: step 'fence2' is a postgres.fence step, which verifies nothing "
            "(only a step type with the verify role can)") in found  # fmt: skip


# -- the lints over every target a step can take ---------------------------------------------


def codes(path: str) -> list[str]:
    return sorted({c for c, _ in errors(path) if c.startswith("DR")})


def test_a_safe_three_node_failover_fires_no_lint(write_runbook: Callable[..., str]) -> None:
    """choose → fence node1 → promote the choice → follow → verified write naming the promote: clean."""
    assert codes(write_runbook(HEAD + CHOOSE + FENCE + PROMOTE + FOLLOW + PROBE)) == []


def test_a_fence_of_a_target_the_promote_may_take_is_no_fence(
    write_runbook: Callable[..., str],
) -> None:
    """DR001 fires when the only fence is of node2, which the run-time promote may promote."""
    fence = FENCE.replace("target: node1", "target: node2")
    found = errors(write_runbook(HEAD + CHOOSE + fence + PROMOTE + PROBE))
    dr001 = [m for c, m in found if c == "DR001"]
    assert len(dr001) == 1
    assert "fence step 'fence' may fence node2, which promote may promote" in dr001[0]


def test_a_fence_with_the_promotes_own_run_time_target_is_no_fence(
    write_runbook: Callable[..., str],
) -> None:
    """DR001 fires on a fence whose target is the very template the promote's is."""
    fence = FENCE.replace("target: node1", 'target: "{{ steps.choose.outputs.target }}"')
    found = errors(write_runbook(HEAD + CHOOSE + fence + PROMOTE + PROBE))
    assert any(c == "DR001" and "fences the very target promote promotes" in m for c, m in found)


def test_a_fence_fanned_out_over_run_time_targets_is_conditional(
    write_runbook: Callable[..., str],
) -> None:
    """DR001 fires when the only fences are instances of a run-time fan-out: each runs only if listed."""
    fences = (
        "  - id: fence\n    type: postgres.fence\n"
        '    for_each: "{{ steps.choose.outputs.others }}"\n    target: "{{ item }}"\n'
        "    requires: [choose]\n"
    )
    promote = (
        "  - {id: promote, type: postgres.promote, target: node1, with: {old_primary: node2}}\n"
    )
    probe = "  - {id: probe, type: postgres.write_probe, target: node1}\n"
    found = errors(write_runbook(HEAD + CHOOSE + fences + promote + probe))
    dr001 = [m for c, m in found if c == "DR001"]
    assert (
        len(dr001) == 1
        and "runs only when 'node2 is among steps.choose.outputs.others'" in dr001[0]
    )


def test_a_lag_check_under_a_when_the_promote_does_not_share_is_no_lag_check(
    write_runbook: Callable[..., str],
) -> None:
    """DR002 fires when the only lag check runs under a when: the promote lacks; sharing it clears it."""
    cond = "{{ steps.pick.outputs.exit_code == 0 }}"
    pick = '  - {id: pick, type: shell, with: {command: "true", mutates: false}}\n'
    lag = f'  - {{id: lag, type: postgres.replication_lag, target: node2, when: "{cond}"}}\n'
    promote = "  - {id: promote, type: postgres.promote, target: node2, with: {old_primary: node1}"
    probe = "  - {id: probe, type: postgres.write_probe, target: node2}\n"
    alone = HEAD + pick + lag + FENCE + promote + "}\n" + probe
    assert codes(write_runbook(alone)) == ["DR002"]
    fence = FENCE.replace("}}\n", f'}}, when: "{cond}"}}\n')
    shared = HEAD + pick + lag + fence + promote + f', when: "{cond}"}}\n' + probe
    assert codes(write_runbook(shared)) == []


HTTP = """apiVersion: drctl/v1
kind: Runbook
metadata: {name: verified}
targets:
  api1: {type: http, base_url: "http://127.0.0.1:1"}
  api2: {type: http, base_url: "http://127.0.0.2:1"}
steps:
  - {id: pick, type: shell, with: {command: "echo api1", mutates: false}}
"""

POST = "  - {id: post, type: http, target: api1, with: {method: POST, url: /x}}\n"
POST_CHOSEN = (
    '  - {id: post, type: http, target: "{{ steps.pick.outputs.stdout }}", '
    "target_one_of: [api1, api2], with: {method: POST, url: /x}}\n"
)


def get(target: str, extra: str = "") -> str:
    return f"  - {{id: get, type: http, target: {target}, with: {{url: /x}}{extra}}}\n"


@pytest.mark.parametrize(
    ("post", "check", "fires"),
    [
        (POST, get("api2"), True),
        (POST, get("api1"), False),
        (POST, get("api2", ", verifies: post"), False),
        (POST, get("api1", ', when: "{{ 1 == 2 }}"'), True),
        (
            POST_CHOSEN,
            get('"{{ steps.pick.outputs.stdout }}"', ", target_one_of: [api1, api2]"),
            False,
        ),
        (POST_CHOSEN, get("api1"), True),
    ],
    ids=[
        "other-target",
        "same-target",
        "names-it",
        "other-when",
        "same-template",
        "one-choice-only",
    ],
)
def test_dr004_needs_a_verification_of_the_same_target_or_one_naming_the_step(
    write_runbook: Callable[..., str], post: str, check: str, fires: bool
) -> None:
    """A POST that cannot verify itself is verified only by a later GET of its own target (the same template) or naming it, under no other when."""
    found = codes(write_runbook(HTTP + post + check))
    assert found == (["DR004"] if fires else []), found


def test_the_exit_codes_page_states_each_lints_exact_logic() -> None:
    """docs/exit-codes.md carries every rule's logic, including when: and run-time targets."""
    from drctl.compiler.lints import LOGIC
    from tests.conftest import REPO

    page = (REPO / "docs/exit-codes.md").read_text()
    for code, logic in LOGIC.items():
        assert (f"- **{code}**: {logic}" if code != "terms" else f"- {logic}") in page
    assert "runs whenever the promote does" in LOGIC["DR001"]
    assert "`verifies:`" in LOGIC["DR004"]
