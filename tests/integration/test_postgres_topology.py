"""The three-node PostgreSQL step types against a real primary and two standbys.

``postgres.fence`` with ``mode: hard``, ``postgres.choose_primary`` and
``postgres.follow`` are called directly with a real-clock context (RealContext) or
driven through ``drctl run``. Tests on the module's shared topology put back what they
change; those that promote get a topology of their own.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drctl.errors import StepError
from drctl.providers.postgres.choose import CandidateInputs, ChooseInputs, ChoosePrimary
from drctl.providers.postgres.fence import Fence, FenceInputs
from drctl.providers.postgres.follow import Follow, FollowInputs
from drctl.providers.postgres.hba import BACKUP_SUFFIX, MARK
from drctl.steps.base import StepInputs
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
from tests.integration.pg_sandbox import (
    timeline as timeline_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _ctx(
    inputs: StepInputs,
    target: dict[str, Any] | None = None,
    targets: dict[str, dict[str, Any]] | None = None,
    **kw: Any,
) -> RealContext:
    return RealContext(inputs, target=target, targets=targets or {}, timeout=60.0, **kw)


def _targets(topology: ThreeNodes) -> dict[str, dict[str, Any]]:
    """Every node as a target under its node name (node1 the primary, node2, node3)."""
    return {n.name: topology.target(n) for n in topology.nodes}


def _silent() -> dict[str, Any]:
    """A postgres target on a free port: nothing answers there."""
    dsn = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=2"
    return {"type": "postgres", "dsn": dsn}


def _session_writes(dsn: str, *, override: bool) -> bool:
    """Whether a fresh application session (optionally turning read-only off) can commit."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            if override:
                conn.execute("SET default_transaction_read_only = off")
            conn.execute("CREATE TABLE IF NOT EXISTS fence_writes (x int)")
            conn.execute("INSERT INTO fence_writes VALUES (1)")
        return True
    except psycopg.errors.ReadOnlySqlTransaction:
        return False


def _hba(topology: ThreeNodes) -> Path:
    return Path(topology.primary.data_dir) / "pg_hba.conf"


def _restore_hba(topology: ThreeNodes, original: str) -> None:
    """Put the primary's pg_hba.conf back and reload, whatever a failed test left."""
    from drctl.sandbox.pgnode import as_user

    _hba(topology).write_text(original)
    pg_ctl = str(Path(topology.bin_dir) / "pg_ctl")
    argv = as_user(topology.os_user, [pg_ctl, "reload", "-D", topology.primary.data_dir])
    subprocess.run(argv, capture_output=True, timeout=30, check=True)
    wait_for(
        "sessions to get in again", lambda: _session_writes(topology.primary.dsn, override=False)
    )


# -- postgres.fence, mode: hard -------------------------------------------------------------


def test_hard_fence_refuses_the_session_read_only_lets_write(
    shared_three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """A session that turns read-only off writes after read_only, is refused after hard; standbys keep streaming."""
    topo = shared_three_nodes
    primary = topo.target(topo.primary)
    original = _hba(topo).read_text()

    advisory = _ctx(FenceInputs(mode="read_only"), primary)
    Fence().apply(advisory)
    assert lsn_int(advisory.outputs["final_lsn"]) > 0
    assert advisory.outputs["final_lsn_from"] == "pg_current_wal_lsn"
    assert _session_writes(topo.primary.dsn, override=False) is False
    assert _session_writes(topo.primary.dsn, override=True) is True  # advisory: overridden
    Fence().undo(_ctx(FenceInputs(mode="read_only"), primary, recorded=advisory.recorded))
    wait_for(
        "the read-only fence to lift", lambda: _session_writes(topo.primary.dsn, override=False)
    )

    # No psql where the server lives: the fence would lock drctl out, so it does not start
    # (a dry run says so; a run's apply proves the socket before it writes anything).
    no_psql = primary | {"bin_dir": "/nonexistent"}
    for step, dry_run in ((Fence().check, True), (Fence().apply, False)):
        with pytest.raises(StepError, match="a hard fence would lock drctl out"):
            step(_ctx(FenceInputs(mode="hard"), no_psql, dry_run=dry_run))
    assert _hba(topo).read_text() == original

    writer = psycopg.connect(topo.primary.dsn, autocommit=True, connect_timeout=5)
    writer.execute("SET default_transaction_read_only = off")
    inputs = FenceInputs(mode="hard")
    try:
        assert (
            Fence().check(_ctx(inputs, primary, dry_run=True)) is None
        )  # the plan's description is shown
        assert "pg_hba.conf rejects" in Fence().describe(inputs, "node1")
        assert Fence().verify(_ctx(inputs, primary)) is False
        ctx = _ctx(inputs, primary)
        Fence().apply(ctx)
        assert ctx.recorded["hba_original"] == original
        assert ctx.outputs["sessions_ended"] >= 1
        assert ctx.outputs["final_lsn_from"] == "pg_current_wal_lsn"
        final = lsn_int(ctx.outputs["final_lsn"])
        assert ctx.recorded["final_lsn"] == ctx.outputs["final_lsn"]

        with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
            _session_writes(topo.primary.dsn, override=True)
        with pytest.raises(psycopg.OperationalError):
            writer.execute("INSERT INTO fence_writes VALUES (2)")  # its backend was ended
        assert Fence().check(_ctx(inputs, primary, dry_run=True)) == (
            "do nothing: pg_hba.conf turns sessions away already (hard-fenced)"
        )
        fenced = _hba(topo).read_text()
        assert fenced.startswith(MARK)
        assert "host replication all 127.0.0.0/8 trust" in fenced
        assert Path(str(_hba(topo)) + BACKUP_SUFFIX).read_text() == original
        assert Fence().verify(_ctx(inputs, primary, recorded=ctx.recorded)) is True
        # The server is up and its WAL, to the last byte, reaches both standbys.
        assert topo.pg_ctl_running(topo.primary)
        for node in topo.standbys:
            wait_for(
                f"{node.name} to receive the final WAL",
                lambda n=node: topo.received_lsn(n) >= final,
            )
            assert one(node.dsn, "SELECT status FROM pg_stat_wal_receiver") == "streaming"

        # A retried attempt (the file is fenced already) finishes over the local socket
        # and keeps the first original, never its own fenced file.
        again = _ctx(inputs, primary, recorded=ctx.recorded)
        Fence().apply(again)
        assert "pg_hba.conf is fenced already; finishing over the local socket" in again.lines
        assert again.outputs["final_lsn"] == ctx.outputs["final_lsn"]
        assert Path(str(_hba(topo)) + BACKUP_SUFFIX).read_text() == original

        Fence().undo(_ctx(inputs, primary, recorded=ctx.recorded))
        assert _hba(topo).read_text() == original
        wait_for(
            "the hard fence to lift", lambda: _session_writes(topo.primary.dsn, override=False)
        )
        assert Fence().verify(_ctx(inputs, primary, recorded=ctx.recorded)) is False
    finally:
        writer.close()
        _restore_hba(topo, original)


def test_hard_fence_over_ssh_and_its_undo_through_a_rollback(
    shared_three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """drctl run: the hard fence rewrites pg_hba.conf over SSH, publishes final_lsn, and a rollback puts the file back."""
    topo = shared_three_nodes
    params = topo.params()
    original = _hba(topo).read_text()
    node = topo.primary
    runbook = tmp_path / "hard-over-ssh.yaml"
    runbook.write_text(
        f"""apiVersion: drctl/v1
kind: Runbook
metadata: {{name: hard-over-ssh}}
targets:
  host: {{type: ssh, host: 127.0.0.1, port: {params["ssh_port"]}, user: {params["ssh_user"]},
          key_file: {params["ssh_key"]}, known_hosts: {params["ssh_known_hosts"]}}}
  old: {{type: postgres, dsn: "{node.dsn}", data_dir: {node.data_dir},
         bin_dir: {topo.bin_dir}, os_user: {topo.os_user}, ssh: host}}
settings: {{step_timeout: 60s}}
steps:
  - {{id: fence, type: postgres.fence, target: old, with: {{mode: hard}}}}
  - id: fail
    type: shell
    with: {{command: 'false'}}
    on_failure: rollback
    acknowledge: [DR004]
"""
    )
    state = tmp_path / "state.db"
    try:
        done = drctl("run", str(runbook), "--yes", "--state", str(state))
        assert done.returncode == 1, explain(done)
        assert "rolled back" in done.stderr, explain(done)
        events = journal(state)
        kinds = [(e["kind"], e["step"]) for e in events]
        assert ("step_succeeded", "fence") in kinds
        assert ("undo_succeeded", "fence") in kinds
        fenced = next(e for e in events if e["kind"] == "step_succeeded" and e["step"] == "fence")
        assert lsn_int(fenced["data"]["outputs"]["final_lsn"]) > 0
        assert "Accepted publickey" in (topo.root / "ssh" / "sshd.log").read_text()
        assert _hba(topo).read_text() == original
        wait_for("the fence to lift", lambda: _session_writes(topo.primary.dsn, override=False))
    finally:
        _restore_hba(topo, original)


# -- postgres.choose_primary ----------------------------------------------------------------


def _choose(
    topo: ThreeNodes, targets: dict[str, dict[str, Any]] | None = None, **kw: Any
) -> RealContext:
    """Run choose_primary over node2 and node3 (and extra targets) against node1; the context."""
    names = kw.pop("candidates", ["node2", "node3"])
    tags = kw.pop("tags", {})
    inputs = ChooseInputs(
        candidates=[CandidateInputs(target=n, **tags.get(n, {})) for n in names],
        old_primary="node1",
        **kw,
    )
    ctx = _ctx(inputs, None, _targets(topo) | (targets or {}))
    ChoosePrimary().apply(ctx)
    return ctx


def _row(ctx: RealContext, name: str) -> dict[str, Any]:
    return next(r for r in ctx.outputs["table"] if r["name"] == name)


def test_choose_most_advanced_and_why_each_other_lost(shared_three_nodes: ThreeNodes) -> None:  # noqa: F811
    """A standby that stopped receiving loses to the one that has every byte; its gap and reason say so."""
    topo = shared_three_nodes
    lagging, ahead = topo.standbys[1], topo.standbys[0]
    topo.stop_receiving(lagging)
    try:
        end = topo.write_wal(2000)
        wait_for("node2 to receive it all", lambda: topo.received_lsn(ahead) >= end)
        ctx = _choose(topo, tags={"node3": {"priority": 9}})
        assert ctx.outputs["target"] == "node2"
        assert ctx.outputs["gap_bytes"] == 0
        gap = ctx.outputs["gaps"]["node3"]
        assert gap == end - topo.received_lsn(lagging) > 0
        assert _row(ctx, "node2")["verdict"] == "chosen"
        loser = _row(ctx, "node3")
        assert loser["verdict"] == "behind"
        assert (
            loser["reason"] == f"received {gap} bytes less than node2"
        )  # priority 9 does not help
        assert any(line.startswith("node3: behind — received") for line in ctx.lines)
        assert ctx.outputs["preferred"] is False

        # prefer: the lagging one is chosen, and the log says what that gives up.
        preferred = _choose(topo, prefer="node3")
        assert preferred.outputs["target"] == "node3"
        assert preferred.outputs["gives_up_bytes"] == gap
        assert any(f"giving up {gap} bytes" in line for line in preferred.lines)

        # nofailover removes the best one; the other is chosen.
        tagged = _choose(topo, tags={"node2": {"nofailover": True}})
        assert tagged.outputs["target"] == "node3"
        assert _row(tagged, "node2")["reason"] == "tagged nofailover"
        with pytest.raises(StepError, match="prefer: node2 cannot be chosen: tagged nofailover"):
            _choose(topo, prefer="node2", tags={"node2": {"nofailover": True}})
    finally:
        topo.resume_receiving(lagging)


def test_choose_paused_replay_is_not_counted_as_lost(shared_three_nodes: ThreeNodes) -> None:  # noqa: F811
    """A standby that received all WAL but replayed none of the last writes has a gap of 0 and beats one that stopped receiving."""
    topo = shared_three_nodes
    paused, stopped = topo.standbys
    topo.pause_replay(paused)
    receiving_stopped = False
    try:
        # node3 replays these writes, node2 only receives them: node3 has replayed more…
        topo.write_wal(2000)
        topo.wait_caught_up(stopped)
        topo.stop_receiving(stopped)
        receiving_stopped = True
        # …but only node2 receives these: node2 holds more WAL, so it is the one to promote.
        end = topo.write_wal(2000)
        wait_for("node2 to receive it all", lambda: topo.received_lsn(paused) >= end)
        assert topo.replayed_lsn(paused) < topo.replayed_lsn(stopped)
        ctx = _choose(topo)
        assert ctx.outputs["target"] == "node2"
        assert ctx.outputs["gaps"]["node2"] == 0
        row = _row(ctx, "node2")
        assert row["replay_paused"] is True
        assert lsn_int(row["replayed_lsn"]) < lsn_int(row["received_lsn"])
        assert ctx.outputs["gaps"]["node3"] > 0
    finally:
        topo.resume_replay(paused)
        if receiving_stopped:
            topo.resume_receiving(stopped)
    # Both caught up again: equal position, the tie goes to the one that replayed more or by name.
    topo.wait_caught_up(paused)
    topo.wait_caught_up(stopped)
    even = _choose(topo)
    assert even.outputs["gaps"] == {"node2": 0, "node3": 0}
    assert "received as much as" in _row(even, "node3")["reason"]


def test_choose_refuses_when_a_silent_candidate_may_be_ahead(
    shared_three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """An unreachable candidate the old primary does not list refuses the choice unless accept_unreachable."""
    topo = shared_three_nodes
    gone = {"gone": _silent()}
    names = ["node2", "node3", "gone"]
    with pytest.raises(StepError, match=r"gone does not answer and may be the most advanced"):
        _choose(topo, gone, candidates=names)
    ctx = _choose(topo, gone, candidates=names, accept_unreachable=True)
    assert ctx.outputs["target"] in {"node2", "node3"}
    row = _row(ctx, "gone")
    assert row["verdict"] == "rejected"
    assert row["reason"].startswith("unreachable: gone: cannot connect")
    assert ctx.outputs["gaps"]["gone"] is None
    # The old primary silent too: still judged, on the candidates' own positions.
    alone = _choose(topo, {"node1": _silent()})
    assert alone.outputs["target"] in {"node2", "node3"}
    assert any("node1 does not answer" in line for line in alone.lines)


def test_choose_prefers_the_synchronous_standby_at_equal_position(
    shared_three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """With synchronous_standby_names naming node3, node3 wins a tie node2 would win by name."""
    topo = shared_three_nodes
    for node in topo.standbys:
        topo.wait_caught_up(node)
    assert _choose(topo).outputs["target"] == "node2"
    execute(
        topo.primary.dsn,
        "ALTER SYSTEM SET synchronous_standby_names = 'node3'",
        "SELECT pg_reload_conf()",
    )
    try:
        wait_for(
            "node3 to be synchronous",
            lambda: (
                one(
                    topo.primary.dsn,
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'node3'",
                )
                == "sync"
            ),
        )
        ctx = _choose(topo)
        assert ctx.outputs["target"] == "node3"
        assert _row(ctx, "node3")["sync_state"] == "sync"
        assert _row(ctx, "node3")["reason"] == "received as much as node2; synchronous standby"
    finally:
        execute(
            topo.primary.dsn,
            "ALTER SYSTEM RESET synchronous_standby_names",
            "SELECT pg_reload_conf()",
        )


# -- postgres.follow ------------------------------------------------------------------------


def _runbook(topo: ThreeNodes, path: Path, steps: str) -> Path:
    """A runbook over the topology's nodes as targets (named node1, node2, node3)."""
    targets = "".join(
        f"  {name}: {{{', '.join(f'{k}: {json.dumps(v)}' for k, v in target.items())}}}\n"
        for name, target in _targets(topo).items()
    )
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: three-node-failover}\n"
        f"targets:\n{targets}settings: {{step_timeout: 90s}}\nsteps:\n{steps}"
    )
    return path


FAILOVER_STEPS = (
    "  - {id: fence, type: postgres.fence, target: node1, with: {mode: hard}}\n"
    "  - id: choose\n    type: postgres.choose_primary\n"
    "    with: {old_primary: node1, candidates: [{target: node2}, {target: node3}]}\n"
    "  - {id: promote, type: postgres.promote, target: node2, with: {old_primary: node1}}\n"
    "  - {id: follow, type: postgres.follow, target: node3, with: {new_primary: node2}}\n"
)


def _primary_conninfo_lines(data_dir: str) -> list[str]:
    return [
        line for line in auto_conf(data_dir).splitlines() if line.startswith("primary_conninfo")
    ]


def test_failover_run_sibling_follows_without_rewind(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """drctl run: hard fence, choose, promote node2, and node3 follows it in place, streaming on timeline 2."""
    topo = three_nodes
    topo.write_wal(500)
    for node in topo.standbys:
        topo.wait_caught_up(node)
    runbook = _runbook(topo, tmp_path / "failover.yaml", FAILOVER_STEPS)
    state = tmp_path / "state.db"
    dry = drctl("run", str(runbook), "--dry-run", "--state", str(state))
    assert dry.returncode == 0, explain(dry)
    # The dry run shows the table, a line per candidate with its reason, and the choice.
    for name in ("node2", "node3"):
        assert re.search(rf"choose \| {name}: (chosen|behind) — \S", dry.stdout), explain(dry)
    # The dry run runs the read-only choice for real and shows whom it chose.
    assert re.search(r"choose \| node[23]: chosen", dry.stdout), explain(dry)
    assert "choose: ran (read-only)" in dry.stdout, explain(dry)
    done = drctl("run", str(runbook), "--yes", "--state", str(state))
    assert done.returncode == 0, explain(done)

    succeeded = {e["step"]: e for e in journal(state) if e["kind"] == "step_succeeded"}
    assert set(succeeded) == {"fence", "choose", "promote", "follow"}, explain(done)
    text = json.dumps(succeeded)
    assert '"target": "node2"' in text  # the choice, published
    assert '"rewound": false' in text
    assert not in_recovery(topo.nodes[1].dsn)
    assert query(
        topo.nodes[2].dsn, "SELECT status, received_tli, sender_port FROM pg_stat_wal_receiver"
    ) == [("streaming", 2, topo.nodes[1].port)]
    assert "node3" in {
        str(r[0])
        for r in query(topo.nodes[1].dsn, "SELECT application_name FROM pg_stat_replication")
    }
    lines = _primary_conninfo_lines(topo.nodes[2].data_dir)
    assert len(lines) == 1, lines
    assert f"port={topo.nodes[1].port}" in lines[0]
    assert "application_name=node3" in lines[0]
    execute(topo.nodes[1].dsn, "CREATE TABLE after_follow AS SELECT 42 AS x")
    wait_for("node3 to replay the new primary's write", lambda: _has_row(topo.nodes[2].dsn))


@pytest.mark.parametrize("killed_step", ["choose", "follow"])
def test_kill_9_after_choose_or_follow_then_resume(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
    killed_step: str,
) -> None:
    """drctl killed -9 right after choose's or follow's apply resumes to one promotion, node3 streaming from node2, the choice published."""
    topo = three_nodes
    runbook = _runbook(topo, tmp_path / "failover.yaml", FAILOVER_STEPS)
    state = tmp_path / "state.db"
    killed = drctl(
        "run", str(runbook), "--yes", "--state", str(state),
        env={"DRCTL_FAULT": f"after-apply:{killed_step}"},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    resumed = drctl("resume", "--last", "--yes", "--state", str(state))
    assert resumed.returncode == 0, explain(resumed)

    events = journal(state)
    assert events[-1]["kind"] == "run_finished"
    assert events[-1]["data"]["status"] == "succeeded"
    done = {e["step"]: e for e in events if e["kind"] == "step_succeeded"}
    assert set(done) == {"fence", "choose", "promote", "follow"}
    assert done["choose"]["data"]["outputs"]["target"] == "node2"  # run again on resume
    assert len([e for e in events if e["kind"] == "step_succeeded" and e["step"] == "promote"]) == 1
    assert timeline_of(topo.nodes[1].dsn) == 2
    assert query(topo.nodes[2].dsn, "SELECT status, received_tli FROM pg_stat_wal_receiver") == [
        ("streaming", 2)
    ]
    assert len(_primary_conninfo_lines(topo.nodes[2].data_dir)) == 1


def _has_row(dsn: str) -> bool:
    try:
        return one(dsn, "SELECT x FROM after_follow") == 42
    except psycopg.errors.UndefinedTable:
        return False


def test_follow_refuses_a_diverged_standby_and_rewinds_it_on_request(
    three_nodes: ThreeNodes,  # noqa: F811
) -> None:
    """A sibling that received WAL past the new timeline's fork is refused with the range, then rewound with accept_discard: true."""
    topo = three_nodes
    node2, node3 = topo.standbys
    targets = _targets(topo)
    topo.stop_receiving(node2)
    end = topo.write_wal(2000)
    wait_for("node3 to receive the writes node2 lacks", lambda: topo.received_lsn(node3) >= end)
    execute(node2.dsn, "SELECT pg_promote(true)")
    history = one(node2.dsn, "SELECT pg_read_file('pg_wal/00000002.history')")
    fork = lsn_int(history.split()[1])
    assert fork < end

    plain = FollowInputs(new_primary="node2", wait_seconds=30)
    with pytest.raises(
        StepError,
        match=r"refusing to follow without a rewind: diverged: timeline 1 up to .* (\d+) bytes \(",
    ) as refused:
        Follow().check(_ctx(plain, targets["node3"], targets, dry_run=True))
    gap = topo.received_lsn(node3) - fork
    assert f"so {gap} bytes" in str(refused.value)
    with pytest.raises(StepError, match="refusing to follow without a rewind"):
        Follow().apply(_ctx(plain, targets["node3"], targets))
    assert in_recovery(node3.dsn)  # untouched

    rewind = FollowInputs(new_primary="node2", accept_discard=True, wait_seconds=30)
    assert (Follow().check(_ctx(rewind, targets["node3"], targets, dry_run=True)) or "").startswith(
        "rewind, diverged"
    )
    ctx = _ctx(rewind, targets["node3"], targets)
    Follow().apply(ctx)
    assert ctx.outputs["rewound"] is True
    assert ctx.outputs["discarded_bytes"] == gap
    assert lsn_int(ctx.outputs["discarded_from"]) == fork
    assert ctx.recorded["discarded"]["bytes"] == gap
    assert Follow().verify(_ctx(rewind, targets["node3"], targets, recorded=ctx.recorded)) is True
    assert query(node3.dsn, "SELECT status, received_tli FROM pg_stat_wal_receiver") == [
        ("streaming", 2)
    ]
    lines = _primary_conninfo_lines(node3.data_dir)
    assert (
        len(lines) == 1
        and f"port={node2.port}" in lines[0]
        and "application_name=node3" in lines[0]
    )
