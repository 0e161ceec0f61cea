"""Bad input in the new PostgreSQL topology fields: exit 2 naming file:line:col, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

#: A valid runbook over a three-node topology; each case breaks one field of it.
VALID = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {name: topo}
targets:
  node1: {type: postgres, dsn: "host=a"}
  node2: {type: postgres, dsn: "host=b"}
  node3: {type: postgres, dsn: "host=c"}
steps:
  - id: fence
    type: postgres.fence
    target: node1
    with: {mode: hard}
  - id: choose
    type: postgres.choose_primary
    with:
      old_primary: node1
      candidates:
        - {target: node2, priority: 5}
        - {target: node3, nofailover: true}
      prefer: node2
  - id: promote
    type: postgres.promote
    target: node2
    with: {old_primary: node1}
  - id: follow
    type: postgres.follow
    target: node3
    with: {new_primary: node2, application_name: node3}
"""

CASES = [
    ("mode: hard", "mode: harder", "12:18", "with.mode: input should be 'read_only', 'hard'"),
    ("priority: 5", "priority: -1", "18:37", "priority: input should be greater than or equal to 0"),
    ("nofailover: true", "nofailover: maybe", "19:39", "nofailover: input should be a valid boolean"),
    ("{target: node3, nofailover: true}", "{target: node2}", "18:9", "candidate listed more than once: node2"),
    ("prefer: node2", "prefer: node9", "16:7", "prefer names 'node9', which is not a candidate"),
    ("old_primary: node1", "old_primary: node2", "16:7", "old_primary 'node2' is also a candidate"),
    ("priority: 5}", "weight: 5}", "18:27", "candidates[0].weight: unknown field"),
    ("application_name: node3", "application_name: 'no spaces'", "28:50", "application_name: 'no spaces' is not a valid name"),
    ("new_primary: node2, ", "rewind: yes please, new_primary: node2, ", "28:20", "rewind: input should be a valid boolean"),
    ("prefer: node2\n", "prefer: node2\n      accept_patroni_refusal: maybe\n", "21:31", "accept_patroni_refusal: input should be a valid boolean"),
    ("prefer: node2\n", "prefer: node2\n      accept_patroni_refusals: true\n", "21:7", "with.accept_patroni_refusals: unknown field"),
]  # fmt: skip


def test_the_valid_runbook_validates(tmp_path: Path) -> None:
    """The runbook the cases break is valid as it stands (so each case breaks one thing)."""
    path = tmp_path / "topo.yaml"
    path.write_text(VALID)
    done = run_cli("validate", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_plan_says_the_choice_rule_and_the_new_fence(tmp_path: Path) -> None:
    """The plan shows choose_primary's ranking rule and what the hard fence keeps, offline."""
    path = tmp_path / "topo.yaml"
    path.write_text(VALID)
    done = run_cli("plan", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the most WAL received wins (received but not replayed is not lost)" in done.stdout
    assert "pg_hba.conf rejects all but replication and drctl's local superuser" in done.stdout
    assert "repoint node3 to stream from node2 (refusing if it diverged)" in done.stdout


@pytest.mark.parametrize(("old", "new", "where", "said"), CASES, ids=[c[1] for c in CASES])
def test_bad_topology_field_exits_2_with_its_position(
    tmp_path: Path, old: str, new: str, where: str, said: str
) -> None:
    """A bad value in a new field is a positioned E2xx error and exit 2, never a traceback."""
    assert old in VALID
    path = tmp_path / "topo.yaml"
    path.write_text(VALID.replace(old, new, 1))
    done = run_cli("validate", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{path}:{where}: error E2" in done.stdout + done.stderr
    assert said in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


#: A lag check looser than the promote it guards (DR007), and the same made consistent.
LOOSE = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {name: loose}
targets:
  node1: {type: postgres, dsn: "host=a"}
  node2: {type: postgres, dsn: "host=b"}
steps:
  - id: check-lag
    type: postgres.replication_lag
    target: node2
    with: {primary: node1, max_bytes: 16777216}
  - {id: fence, type: postgres.fence, target: node1}
  - id: promote
    type: postgres.promote
    target: node2
    with: {old_primary: node1, max_lag_bytes: 0}
"""


def test_a_lag_check_looser_than_the_promote_is_dr007(tmp_path: Path) -> None:
    """A lag check allowing more than the promote's max_lag_bytes is DR007 at the check, exit 2; equal limits, an acknowledgement or accept_data_loss pass."""
    path = tmp_path / "loose.yaml"
    path.write_text(LOOSE)
    done = run_cli("validate", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert f"{path}:8:5: error DR007:" in out, out
    assert "check-lag: allows 16777216 bytes of lag but promote allows 0" in out
    assert "Traceback" not in done.stderr
    for fixed in (
        LOOSE.replace("max_bytes: 16777216", "max_bytes: 0"),
        LOOSE.replace("max_bytes: 16777216}", "max_bytes: 16777216}\n    acknowledge: [DR007]"),
        LOOSE.replace("max_lag_bytes: 0}", "max_lag_bytes: 0, accept_data_loss: true}\n"
                      "    acknowledge: [DR002]"),
    ):  # fmt: skip
        path.write_text(fixed)
        ok = run_cli("validate", str(path))
        assert ok.returncode == 0, ok.stdout + ok.stderr


NEW_FIELDS = VALID.replace(
    "    with: {old_primary: node1}\n", "    with: {old_primary: node1, candidates: [node3]}\n"
) + (
    "  - id: rejoin\n    type: postgres.rejoin\n    target: node1\n"
    "    with: {new_primary: node2, application_name: node1}\n"
)

NEW_CASES = [
    ("candidates: [node3]", "candidates: [node3, node3]", "24:11", "candidate listed more than once: node3"),
    ("candidates: [node3]", "candidates: [node3, node1]", "24:11", "old_primary 'node1' is also a candidate"),
    ("candidates: [node3]", "candidates: node3", "24:44", "with.candidates: expected a list"),
    ("candidates: [node3]", "candidates: ['no spaces']", "24:45", "candidates[0]: 'no spaces' is not a valid name"),
    ("application_name: node1}", "application_name: 'two words'}", "32:50", "application_name: 'two words' is not a valid name"),
]  # fmt: skip


def test_the_runbook_with_the_new_fields_validates(tmp_path: Path) -> None:
    """The promote's candidates and rejoin's application_name, well given, validate."""
    path = tmp_path / "topo.yaml"
    path.write_text(NEW_FIELDS)
    done = run_cli("validate", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("old", "new", "where", "said"), NEW_CASES, ids=[c[1] for c in NEW_CASES])
def test_bad_handoff_field_exits_2_with_its_position(
    tmp_path: Path, old: str, new: str, where: str, said: str
) -> None:
    """A bad promote candidates list or rejoin application_name is a positioned E2xx error, exit 2."""
    assert old in NEW_FIELDS
    path = tmp_path / "topo.yaml"
    path.write_text(NEW_FIELDS.replace(old, new, 1))
    done = run_cli("validate", str(path))
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert f"{path}:{where}: error E2" in out, out
    assert said in out, out
    assert "Traceback" not in done.stderr
