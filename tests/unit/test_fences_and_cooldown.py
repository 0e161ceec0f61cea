"""Runbook fields of a region failover: ``fences:`` on fence steps, ``settings.cooldown``.

The compiler checks them at their places and keeps them in the plan (and its hash only
when set).
"""

from __future__ import annotations

from collections.abc import Callable

from drctl.compiler.compile import compile_runbook
from drctl.compiler.plan import plan_from_dict
from tests.conftest import run_cli

_HEAD = """
apiVersion: drctl/v1
kind: Runbook
metadata: {name: t}
targets:
  old_primary: {type: postgres, dsn: "host=127.0.0.1 port=1 dbname=postgres"}
  standby: {type: postgres, dsn: "host=127.0.0.1 port=2 dbname=postgres"}
steps:
  - id: lag
    type: postgres.replication_lag
    target: standby
  - id: cut
    type: shell
    with: {command: "true", verify: "true", roles: %s}
    fences: %s
  - id: promote
    type: postgres.promote
    target: standby
    with: {old_primary: old_primary}
"""


def test_a_shell_fence_names_what_it_fences_in_the_plan(
    write_runbook: Callable[..., str],
) -> None:
    """A fence step's fences: is kept in the plan (and its stored form) and shown with the promote's proof."""
    path = write_runbook(_HEAD % ("[fence]", "old_primary"))
    plan = compile_runbook(path)
    cut = plan.step("cut")
    assert cut.fences == "old_primary" and cut.fenced_target == "old_primary"
    assert plan_from_dict(plan.to_dict()).step("cut").fenced_target == "old_primary"
    shown = run_cli("plan", path)
    assert shown.returncode == 0, shown.stderr
    assert "fences: old_primary" in shown.stdout
    assert (
        "fence proof: a live probe of old_primary, or a verified fence step on its path "
        "fencing it; fence steps on its path: cut (fences old_primary)" in shown.stdout
    ), shown.stdout


def test_no_fences_and_no_cooldown_keep_the_plan_hash(write_runbook: Callable[..., str]) -> None:
    """Without fences: or a cooldown the plan has neither key, so old runbooks keep their hash."""
    path = write_runbook(_HEAD.replace("    fences: %s\n", "") % "[fence]")
    plan = compile_runbook(path)
    assert "fences" not in plan.step("cut").to_json()
    assert "cooldown" not in plan.settings.to_json()
    assert plan.step("cut").fenced_target is None


def test_fences_on_a_step_that_does_not_fence_is_an_error(
    write_runbook: Callable[..., str],
) -> None:
    """fences: on a step without the fence role fails validation at its line:col, exit 2."""
    path = write_runbook(_HEAD % ("[]", "old_primary"))
    out = run_cli("validate", path)
    assert out.returncode == 2, out.stderr
    text = out.stdout + out.stderr
    assert f"{path}:14:13:" in text and "is not a fence step" in text, text
    assert "Traceback" not in text


def test_fences_naming_an_unknown_target_is_an_error(write_runbook: Callable[..., str]) -> None:
    """fences: naming no declared target fails at its line:col with a did-you-mean, exit 2."""
    path = write_runbook(_HEAD % ("[fence]", "old_primry"))
    out = run_cli("validate", path)
    assert out.returncode == 2, out.stderr
    text = out.stdout + out.stderr
    assert f"{path}:14:13:" in text and "unknown target 'old_primry'" in text, text
    assert "did you mean" in text.lower() or "old_primary" in text.split("old_primry")[-1]


def test_a_cooldown_that_does_not_parse_is_an_error_at_its_place(
    write_runbook: Callable[..., str],
) -> None:
    """settings.cooldown that is no duration fails at its line:col with exit 2, before any run."""
    path = write_runbook(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: t}\n"
        "settings:\n  cooldown: an hour\n"
        "steps:\n  - {id: a, type: shell, with: {command: 'true', verify: 'true'}}\n"
    )
    out = run_cli("run", path, "--yes", "--state", path + ".db")
    assert out.returncode == 2, out.stderr
    text = out.stdout + out.stderr
    assert f"{path}:5:13:" in text and "settings.cooldown" in text, text
    assert "Traceback" not in text
    listed = run_cli("runs", "--output", "json", "--state", path + ".db")
    assert listed.returncode != 0 or listed.stdout.strip() in ("", "[]"), listed.stdout
