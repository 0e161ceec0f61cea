"""The handoff proof and the promote's preflight, against real three-node topologies.

``postgres.promote`` called directly (a real-clock context given this run's journaled
fence and step facts), and whole runs through the real CLI: a fence's ``final_lsn``
held or the bytes not received named; WAL received and not replayed not counted as
lost; a candidate behind another needing ``accept_data_loss``; the lower bound when the
old primary is gone; a lagging standby refused before the fence; kill -9 mid-choose and
mid-promote resumed to one promotion, with no stale ``primary_conninfo`` left.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from drctl.errors import StepError
from drctl.providers.postgres.choose import CandidateInputs, ChooseInputs, ChoosePrimary
from drctl.providers.postgres.promote import Promote, PromoteInputs
from drctl.providers.postgres.session import lsn_text
from drctl.steps.base import FenceRecord, FenceStatus, StepFacts
from tests.integration.pg_sandbox import (
    RealContext,
    ThreeNodes,
    auto_conf,
    drctl,
    execute,
    explain,
    free_port,
    in_recovery,
    journal,
    lsn_int,
    one,
    query,
    shared_three_nodes,  # noqa: F401
    three_nodes,  # noqa: F401
    wait_for,
)
from tests.integration.pg_sandbox import timeline as timeline_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: The old primary as the promote sees it once fenced: a target where nothing answers.
GONE = "gone"


def _targets(topo: ThreeNodes) -> dict[str, dict[str, Any]]:
    dsn = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=2"
    return {n.name: topo.target(n) for n in topo.nodes} | {GONE: {"type": "postgres", "dsn": dsn}}


def _promote(
    targets: dict[str, dict[str, Any]], name: str, facts: tuple[StepFacts, ...] = (), **kw: Any
) -> RealContext:
    fences = tuple(kw.pop("fences", ()))
    inputs = PromoteInputs(catchup_seconds=1, force=True, **kw)
    return RealContext(
        inputs, target=targets[name], targets=targets, timeout=60.0, target_name=name,
        facts=facts, fences=fences,
    )  # fmt: skip


def _fenced_at(position: int) -> dict[str, Any]:
    """A fence of GONE that took effect at ``position``: its record and what it published."""
    published = {"final_lsn": lsn_text(position), "final_lsn_from": "pg_current_wal_lsn"}
    return {
        "fences": (FenceRecord("fence", GONE, FenceStatus.SUCCEEDED),),
        "facts": (StepFacts("fence", "postgres.fence", GONE, published),),
    }


def test_handoff_names_the_bytes_not_received_and_the_most_advanced(
    shared_three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """Against a fence's final_lsn a standby that stopped receiving is refused naming exactly the bytes it lacks; one behind another candidate (read live or from a choice's table) needs accept_data_loss, which journals the gap; a caught-up one holds the mark."""
    topo = shared_three_nodes
    node2, node3 = topo.standbys
    targets = _targets(topo)
    topo.stop_receiving(node3)
    try:
        final = topo.write_wal(2000)
        topo.wait_caught_up(node2)
        behind = topo.received_lsn(node3)
        missing = final - behind
        assert missing > 100_000

        fenced = _fenced_at(final)
        with pytest.raises(StepError) as refused:
            Promote().check(_promote(targets, "node3", old_primary=GONE, **fenced))
        text = str(refused.value)
        assert f"node3 has not received {missing} bytes of the old primary's WAL" in text, text
        assert f"ended at {lsn_text(final)}, fence step fence's final_lsn" in text, text
        assert "received and not yet replayed (not lost" in text and "accept_data_loss" in text

        held = _promote(targets, "node2", old_primary=GONE, **fenced)
        said = Promote().check(held) or ""
        assert "node2 holds the old primary's WAL to fence step fence's final_lsn" in said, said
        assert held.outputs["not_received_bytes"] == 0
        assert held.outputs["handoff_lsn"] == lsn_text(final)
        assert held.recorded["handoff"]["handoff_exact"] is True

        lossy = _promote(targets, "node3", old_primary=GONE, accept_data_loss=True, **fenced)
        Promote().check(lossy)
        assert lossy.recorded["handoff"]["not_received_bytes"] == missing
        assert lossy.recorded["handoff"]["gap_bytes"] == missing

        # No old primary known at all: only another candidate shows what node3 lacks.
        with pytest.raises(StepError, match=r"node2 received (\d+) bytes more than node3") as ahead:
            Promote().check(_promote(targets, "node3", candidates=["node2"]))
        gap = int(re.search(r"node2 received (\d+) bytes more", str(ahead.value)).group(1))  # type: ignore[union-attr]
        assert gap >= missing and "read now" in str(ahead.value)
        accepted = _promote(targets, "node3", candidates=["node2"], accept_data_loss=True)
        Promote().check(accepted)
        assert accepted.recorded["handoff"]["ahead"] == "node2"
        assert accepted.recorded["handoff"]["gap_bytes"] >= missing

        choice = RealContext(
            ChooseInputs(
                candidates=[CandidateInputs(target="node2"), CandidateInputs(target="node3")],
                old_primary="node1",
            ),
            targets=targets,
            timeout=60.0,
        )
        ChoosePrimary().apply(choice)
        table = (StepFacts("choose", "postgres.choose_primary", None, choice.outputs),)
        with pytest.raises(
            StepError, match=r"node2 received \d+ bytes more than node3 .*step choose's table"
        ):
            Promote().check(_promote(targets, "node3", facts=table))
    finally:
        topo.resume_receiving(node3)


def test_paused_replay_is_not_lost_and_a_lower_bound_when_the_primary_is_gone(
    shared_three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """A replay-paused standby that received the fence's final_lsn passes with its unreplayed bytes said apart; with only a position a step saw, the promote journals "RPO at least N bytes"."""
    topo = shared_three_nodes
    node2, node3 = topo.standbys
    targets = _targets(topo)
    topo.wait_caught_up(node2)
    topo.pause_replay(node2)
    try:
        final = topo.write_wal(3000)
        wait_for("node2 to receive the WAL", lambda: topo.received_lsn(node2) >= final)
        ctx = _promote(targets, "node2", old_primary=GONE, **_fenced_at(final))
        Promote().check(ctx)
        assert ctx.outputs["not_received_bytes"] == 0
        assert ctx.outputs["unreplayed_bytes"] >= final - topo.replayed_lsn(node2) > 100_000
    finally:
        topo.resume_replay(node2)

    topo.stop_receiving(node3)
    try:
        seen = topo.write_wal(1000)
        behind = topo.received_lsn(node3)
        lag = (
            StepFacts(
                "lag", "postgres.replication_lag", "node3", {"wal_seen": {GONE: lsn_text(seen)}}
            ),
        )
        with pytest.raises(StepError, match=rf"has not received at least {seen - behind} bytes"):
            Promote().check(_promote(targets, "node3", facts=lag, old_primary=GONE))
        lower = _promote(targets, "node3", facts=lag, old_primary=GONE, accept_data_loss=True)
        said = Promote().check(lower) or ""
        assert said.startswith(f"promote (RPO at least {seen - behind} bytes"), said
        assert lower.outputs["rpo_at_least_bytes"] == seen - behind
        assert any(f"RPO at least {seen - behind} bytes" in line for line in lower.lines)
    finally:
        topo.resume_receiving(node3)


def _runbook(topo: ThreeNodes, path: Path, steps: str, names: tuple[str, ...] = ()) -> Path:
    """A runbook over the nodes as targets, named ``names`` (default: their node names)."""
    names = names or tuple(n.name for n in topo.nodes)
    targets = "".join(
        f"  {name}: {topo.target_yaml(n)}\n" for name, n in zip(names, topo.nodes, strict=True)
    )
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: handoff}\n"
        f"targets:\n{targets}settings: {{step_timeout: 90s}}\nsteps:\n{steps}"
    )
    return path


def test_a_lagging_standby_is_refused_before_the_fence_runs(
    shared_three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The promote's preflight refuses a standby that stopped receiving before the hard fence starts: the old primary still takes writes."""
    topo = shared_three_nodes
    node3 = topo.standbys[1]
    steps = (
        "  - id: choose\n    type: postgres.choose_primary\n"
        "    with: {old_primary: node1, candidates: [{target: node3}]}\n"
        "  - {id: fence, type: postgres.fence, target: node1, with: {mode: hard}}\n"
        "  - id: promote\n    type: postgres.promote\n    target: node3\n"
        "    with: {old_primary: node1, catchup_seconds: 1}\n"
    )
    runbook = _runbook(topo, tmp_path / "lagging.yaml", steps)
    topo.stop_receiving(node3)
    try:
        missing = topo.write_wal(2000) - topo.received_lsn(node3)
        state = tmp_path / "state.db"
        done = drctl("run", str(runbook), "--yes", "--state", str(state))
        assert done.returncode == 1, explain(done)
        assert "refusing before any fence ran" in done.stdout + done.stderr, explain(done)
        events = journal(state)
        refused = [e for e in events if e["kind"] == "step_preflighted"]
        assert [(e["step"], e["data"]["ok"]) for e in refused] == [("promote", False)]
        found = re.search(r"has not received (\d+) bytes", refused[0]["data"]["error"])
        assert found and int(found.group(1)) >= missing, refused
        assert not [e for e in events if e["kind"] == "step_started" and e["step"] != "choose"]
        execute(topo.primary.dsn, "CREATE TABLE IF NOT EXISTS after_preflight (x int)")
        execute(topo.primary.dsn, "INSERT INTO after_preflight VALUES (1)")
        assert in_recovery(node3.dsn)
    finally:
        topo.resume_receiving(node3)


#: node3's target is named replica3 (its sandbox application_name is node3): follow and
#: rejoin must name each node after its target, not its step or what it was called.
FAILOVER = (
    "  - id: choose\n    type: postgres.choose_primary\n    with:\n      old_primary: node1\n"
    "      candidates: [{target: node2}, {target: replica3, application_name: node3}]\n"
    "  - {id: fence, type: postgres.fence, target: node1, with: {mode: hard}}\n"
    "  - id: promote\n    type: postgres.promote\n    target: node2\n"
    "    with: {old_primary: node1, candidates: [replica3]}\n"
    "  - {id: follow, type: postgres.follow, target: replica3, with: {new_primary: node2}}\n"
    "  - {id: rejoin, type: postgres.rejoin, target: node1, with: {new_primary: node2}}\n"
)


@pytest.mark.crash
@pytest.mark.parametrize(
    "fault", ["started:choose", "record:promote:handoff", "record:promote:promote_signalled"]
)
def test_kill_9_mid_choose_or_mid_promote_then_resume(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
    fault: str,
) -> None:
    """drctl killed -9 mid-choose, mid-promote (its handoff journaled, nothing promoted) or right after pg_promote was signalled resumes to one promotion that held the fence's final_lsn, the sibling and the old primary streaming under their target names, no primary_conninfo left on the new primary."""
    topo = three_nodes
    topo.write_wal(500)
    for node in topo.standbys:
        topo.wait_caught_up(node)
    runbook = _runbook(topo, tmp_path / "failover.yaml", FAILOVER, ("node1", "node2", "replica3"))
    state = tmp_path / "state.db"
    killed = drctl("run", str(runbook), "--yes", "--state", str(state), env={"DRCTL_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    resumed = drctl("resume", "--last", "--yes", "--state", str(state))
    assert resumed.returncode == 0, explain(resumed)

    events = journal(state)
    assert events[-1]["data"]["status"] == "succeeded"
    succeeded = [e["step"] for e in events if e["kind"] == "step_succeeded"]
    assert sorted(succeeded) == ["choose", "fence", "follow", "promote", "rejoin"], succeeded
    kinds = [(e["kind"], e["step"]) for e in events]
    # The preflight ran, and passed, before the fence's first start.
    assert kinds.index(("step_preflighted", "promote")) < kinds.index(("step_started", "fence"))
    assert len([k for k in kinds if k == ("step_started", "fence")]) == 1
    signalled = [
        e
        for e in events
        if e["kind"] == "step_recorded" and e["data"]["key"] == "promote_signalled"
    ]
    assert len(signalled) == 1  # pg_promote signalled once, never again on resume
    final = next(
        e["data"]["outputs"]["final_lsn"] for e in events
        if e["kind"] == "step_succeeded" and e["step"] == "fence"
    )  # fmt: skip
    handoff = [
        e["data"]["value"] for e in events
        if e["kind"] == "step_recorded" and e["data"]["key"] == "handoff"
    ]  # fmt: skip
    assert handoff and handoff[-1]["handoff_exact"] is True
    assert lsn_int(handoff[-1]["handoff_lsn"]) >= lsn_int(final)
    assert handoff[-1]["not_received_bytes"] == 0

    node2, node3 = topo.standbys
    assert timeline_of(node2.dsn) == 2
    assert not [
        line for line in auto_conf(node2.data_dir).splitlines()
        if line.startswith(("primary_conninfo", "primary_slot_name"))
    ]  # fmt: skip
    assert one(node2.dsn, "SHOW primary_conninfo") == ""
    assert query(node3.dsn, "SELECT status, received_tli FROM pg_stat_wal_receiver") == [
        ("streaming", 2)
    ]
    # Named after their targets: replica3 (was node3 before), node1 (never a step id).
    wait_for(
        "node2 to stream to replica3 and node1",
        lambda: {"replica3", "node1"} <= {
            str(r[0]) for r in query(
                node2.dsn, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
            )
        },
    )  # fmt: skip
    assert "application_name=replica3" in auto_conf(node3.data_dir)
