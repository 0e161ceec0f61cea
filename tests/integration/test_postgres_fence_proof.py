"""A fence that failed is no fence: ``postgres.promote`` reads this run's fences at run time.

Against a real primary + streaming standby, through the real CLI: whatever the lints
were told, a promote whose fence failed (ignored under ``on_failure: continue``), or a
promote that names no old primary and has no fence before it, refuses, and nothing is
promoted beside the primary that still takes writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.pg_sandbox import (
    Pair,
    answers,
    drctl,
    execute,
    explain,
    free_port,
    in_recovery,
    one,
    sandbox,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: {name}}}
targets:
  old_primary: {old}
  standby: {standby}
settings: {{step_timeout: 30s}}
steps:
{steps}
"""

#: A promote that names no old primary; the lints it trips are acknowledged on purpose.
_PROMOTE = (
    "  - id: promote\n    type: postgres.promote\n    target: standby\n"
    "    with: {catchup_seconds: 1}\n    acknowledge: [DR001, DR002]\n"
)


def _run(tmp_path: Path, name: str, steps: str, old: str, standby: str) -> Any:
    path = tmp_path / f"{name}.yaml"
    path.write_text(_RUNBOOK.format(name=name, old=old, standby=standby, steps=steps))
    return drctl("run", str(path), "--yes", "--state", str(tmp_path / "state.db"))


def _still_two_roles(pair: Pair, table: str) -> None:
    """The standby is still a standby, and the old primary (never fenced) still takes writes."""
    assert in_recovery(pair.node2.dsn), "promoted beside a primary that was never fenced"
    execute(pair.node1.dsn, f"CREATE TABLE {table} (id int)", f"INSERT INTO {table} VALUES (1)")
    assert one(pair.node1.dsn, f"SELECT count(*) FROM {table}") == 1


@pytest.mark.integration
def test_promote_refuses_after_a_fence_that_failed_under_continue(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A fence that failed under on_failure: continue, or was skipped, makes the promote refuse, naming it."""
    pair = sandbox
    nobody = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=2"
    assert not answers(nobody)
    # The fence's target points at a closed port: it fails, and the real primary is untouched.
    wrong = pair.target_yaml(pair.node1, dsn=nobody, data_dir=None)
    steps = (
        "  - id: fence\n    type: postgres.fence\n    target: old_primary\n"
        "    with: {mode: read_only}\n    on_failure: continue\n" + _PROMOTE
    )
    refused = _run(tmp_path, "fence-ignored", steps, wrong, pair.target_yaml(pair.node2))
    assert refused.returncode == 1, explain(refused)
    assert "refusing to promote: fence step fence (fencing old_primary) failed" in refused.stderr
    assert "on_failure: continue" in refused.stderr
    assert "drctl abort" in refused.stderr and "force: true" in refused.stderr, explain(refused)
    assert "Traceback" not in refused.stderr
    _still_two_roles(pair, "after_ignored_fence")

    # A fence skipped by its ``when:`` proves nothing either.
    skipped = _run(
        tmp_path,
        "fence-skipped",
        "  - {id: fence, type: postgres.fence, target: old_primary, when: false,"
        " with: {mode: read_only}}\n" + _PROMOTE,
        pair.target_yaml(pair.node1),
        pair.target_yaml(pair.node2),
    )
    assert skipped.returncode == 1, explain(skipped)
    assert "fence step fence (fencing old_primary) was skipped" in skipped.stderr
    _still_two_roles(pair, "after_skipped_fence")


@pytest.mark.integration
def test_promote_naming_no_old_primary_refuses_without_a_fence(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A promote with no old_primary and no fence before it cannot know what it replaces: it refuses."""
    pair = sandbox
    refused = _run(
        tmp_path, "no-fence", _PROMOTE, pair.target_yaml(pair.node1), pair.target_yaml(pair.node2)
    )
    assert refused.returncode == 1, explain(refused)
    assert "no old_primary is named and no fence step" in refused.stderr, explain(refused)
    _still_two_roles(pair, "after_unfenced_promote")
