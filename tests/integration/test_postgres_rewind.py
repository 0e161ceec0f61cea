"""Rewinds that say what they discard, on real servers: ``postgres.rejoin`` and ``postgres.follow``.

An old primary that took acknowledged writes after the split is refused without
``accept_discard`` and rewound with it; the range it reports is checked against what
the test reads from the servers itself (the new primary's timeline history file and
the old primary's control file). A sibling standby that stayed a prefix of the new
timeline follows without any pg_rewind; one that diverged is rewound with its range
reported. A drctl killed -9 right after a rewinding follow resumes without a second one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.pg_sandbox import (
    Node,
    Pair,
    ThreeNodes,
    Topology,
    drctl,
    execute,
    explain,
    in_recovery,
    journal,
    lsn_int,
    one,
    query,
    run_id_of,
    sandbox,  # noqa: F401
    three_nodes,  # noqa: F401
    wait_for,
    wait_replayed,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: PostgreSQL's WAL layout, to find where the old primary's last record ends by hand.
_PAGE, _SEGMENT, _SHUTDOWN_CHECKPOINT = 8192, 16 * 1024 * 1024, 114


def _record_end(start: int, length: int) -> int:
    """Where a WAL record of ``length`` bytes starting at ``start`` ends (page headers counted)."""
    room = _PAGE - start % _PAGE
    if length <= room:
        end = start + length
    else:
        page = start + room
        header = 40 if page % _SEGMENT == 0 else 24
        end = page + header + (length - room)
    return (end + 7) // 8 * 8


def _controldata(topo: Topology, node: Node) -> dict[str, str]:
    from drctl.sandbox.pgnode import as_user

    argv = as_user(topo.os_user, [str(Path(topo.bin_dir) / "pg_controldata"), "-D", node.data_dir])
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    )
    return {
        k.strip(): v.strip()
        for k, _, v in (line.partition(":") for line in done.stdout.splitlines())
    }


def _fork(new_primary_dsn: str, timeline: int = 2) -> int:
    """Where the new primary's timeline left timeline 1, from its history file."""
    history = one(new_primary_dsn, f"SELECT pg_read_file('pg_wal/{timeline:08X}.history')")
    return lsn_int(str(history).split()[1])


def _stop_receiving(node: Node) -> None:
    execute(node.dsn, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")
    wait_for(
        f"{node.name} to stop receiving",
        lambda: one(node.dsn, "SELECT count(*) FROM pg_stat_wal_receiver") == 0,
    )


def _promote(node: Node) -> None:
    execute(node.dsn, "SELECT pg_promote(true)")
    wait_for(f"{node.name} to leave recovery", lambda: not in_recovery(node.dsn))


def _rejoin_runbook(pair: Pair, path: Path, accept: bool) -> Path:
    ack = ", accept_discard: true" if accept else ""
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: rejoin-after-split}\n"
        f"targets:\n  old: {pair.target_yaml(pair.node1)}\n  new: {pair.target_yaml(pair.node2)}\n"
        "settings: {step_timeout: 90s}\nsteps:\n"
        f"  - {{id: rejoin, type: postgres.rejoin, target: old, with: {{new_primary: new{ack}}}}}\n"
    )
    return path


@pytest.mark.parametrize("crashed", [False, True], ids=["running", "killed-9"])
def test_rejoin_refuses_to_discard_acknowledged_writes_then_rewinds_with_the_ack(
    sandbox: Pair,  # noqa: F811
    tmp_path: Path,
    crashed: bool,
) -> None:
    """An old primary (running, or killed -9) that committed writes after the split is refused without accept_discard (left stopped), rewound with it, the range matching the servers'."""
    pair = sandbox
    execute(pair.node1.dsn, "CREATE TABLE after_split (id int)")
    wait_replayed(pair.node1.dsn, pair.node2.dsn)
    _stop_receiving(pair.node2)
    _promote(pair.node2)
    writes = 40
    for i in range(writes):  # acknowledged one by one, as an application's would be
        execute(pair.node1.dsn, f"INSERT INTO after_split VALUES ({i})")
    written_to = lsn_int(one(pair.node1.dsn, "SELECT pg_current_wal_lsn()::text"))
    fork = _fork(pair.node2.dsn)
    assert fork < written_to

    state = tmp_path / "state.db"
    # The dry run previews it from the running node; the exact range comes once it is stopped.
    dry = drctl(
        "run", str(_rejoin_runbook(pair, tmp_path / "plain.yaml", False)), "--dry-run",
        "--state", str(state),
    )  # fmt: skip
    assert dry.returncode == 0, explain(dry)
    preview = re.search(r"it holds about (\d+) bytes of WAL past the fork at (\S+) ", dry.stdout)
    assert preview, explain(dry)
    assert int(preview[1]) >= written_to - fork and lsn_int(preview[2]) == fork
    assert "refused if they hold writes (accept_discard)" in dry.stdout
    assert pair.pg_ctl_running(pair.node1)  # a dry run stops nothing
    if crashed:  # no shutdown checkpoint: its WAL ends where crash recovery says
        postmaster = int((Path(pair.node1.data_dir) / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        wait_for("the old primary to die", lambda: not pair.pg_ctl_running(pair.node1))
        assert _controldata(pair, pair.node1)["Database cluster state"] == "in production"
    refused = drctl(
        "run", str(_rejoin_runbook(pair, tmp_path / "plain.yaml", False)), "--yes",
        "--state", str(state),
    )  # fmt: skip
    assert refused.returncode == 1, explain(refused)
    assert "refusing to rewind: it would discard" in refused.stdout + refused.stderr, explain(
        refused
    )
    assert "Set accept_discard: true" in refused.stdout + refused.stderr
    assert ("crash recovery in single-user mode first" in refused.stdout) is crashed
    # Left stopped, its WAL intact: still on timeline 1, the shutdown checkpoint its last record.
    assert not pair.pg_ctl_running(pair.node1)
    control = _controldata(pair, pair.node1)
    assert control["Database cluster state"] == "shut down"
    assert control["Latest checkpoint's TimeLineID"] == "1"
    checkpoint = lsn_int(control["Latest checkpoint location"])
    assert checkpoint >= written_to
    end = _record_end(checkpoint, _SHUTDOWN_CHECKPOINT)

    recorded = [
        e
        for e in journal(state)
        if e["kind"] == "step_recorded" and e["data"]["key"] == "discarded"
    ]
    assert len(recorded) == 1, recorded
    first = recorded[0]["data"]["value"]
    assert (lsn_int(first["from"]), lsn_int(first["to"]), first["bytes"]) == (
        fork, end, end - fork,
    )  # fmt: skip
    assert first["commits"] >= writes
    assert f"{end - fork} bytes of WAL" in refused.stdout + refused.stderr

    aborted = drctl(
        "abort", run_id_of(refused), "--reason", "rewind it, the writes are known lost",
        "--state", str(state),
    )  # fmt: skip
    assert aborted.returncode == 0, explain(aborted)
    done = drctl(
        "run", str(_rejoin_runbook(pair, tmp_path / "ack.yaml", True)), "--yes",
        "--state", str(state),
    )  # fmt: skip
    assert done.returncode == 0, explain(done)
    succeeded = [e for e in journal(state) if e["kind"] == "step_succeeded"]
    outputs = succeeded[-1]["data"]["outputs"]
    assert outputs["discarded_bytes"] == end - fork
    assert lsn_int(outputs["discarded_from"]) == fork
    assert lsn_int(outputs["discarded_to"]) == end
    assert outputs["discarded_commits"] == first["commits"]
    line = f"discarded {end - fork} bytes of WAL ({outputs['discarded_from']}–{outputs['discarded_to']}"
    assert line in done.stdout, explain(done)
    # Rewound: a standby of the new primary on its timeline, without the writes it discarded.
    assert query(pair.node1.dsn, "SELECT status, received_tli FROM pg_stat_wal_receiver") == [
        ("streaming", 2)
    ]
    assert one(pair.node1.dsn, "SELECT count(*) FROM after_split") == 0


def _postmaster_started(node: Node) -> str:
    return str(one(node.dsn, "SELECT pg_postmaster_start_time()::text"))


# -- postgres.follow: in place, or rewound with what it discards --------------------------


def _pg_ctl(topo: Topology, node: Node, action: str) -> None:
    from drctl.sandbox.pgnode import as_user

    pg_ctl = str(Path(topo.bin_dir) / "pg_ctl")
    argv = as_user(topo.os_user, [pg_ctl, action, "-w", "-m", "fast", "-D", node.data_dir])
    subprocess.run(argv, capture_output=True, timeout=60, check=True)


def _follow_runbook(topo: ThreeNodes, path: Path, accept: bool) -> Path:
    ack = ", accept_discard: true" if accept else ""
    node2, node3 = topo.standbys
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: sibling-follows}\n"
        f"targets:\n  node2: {topo.target_yaml(node2)}\n  node3: {topo.target_yaml(node3)}\n"
        "settings: {step_timeout: 90s}\nsteps:\n"
        "  - {id: follow, type: postgres.follow, target: node3,"
        f" with: {{new_primary: node2, wait_seconds: 60{ack}}}}}\n"
    )
    return path


def _recorded(state: Path, key: str) -> list[object]:
    return [
        e["data"]["value"]
        for e in journal(state)
        if e["kind"] == "step_recorded" and e["data"]["key"] == key
    ]


def _split_after_stop(topo: ThreeNodes, *, node3_ahead: int) -> int:
    """Stop the primary cleanly and promote node2; node3 received ``node3_ahead`` more commits first.

    Returns where the old primary's WAL ends (the end of its shutdown checkpoint), which
    node3 has received too: the stop's last record streams to a standby still connected.
    """
    node2, node3 = topo.standbys
    execute(topo.primary.dsn, "CREATE TABLE IF NOT EXISTS only_node3 (id int)")
    topo.wait_caught_up(node2)
    topo.wait_caught_up(node3)
    if node3_ahead:
        topo.stop_receiving(node2)
        for i in range(node3_ahead):
            execute(topo.primary.dsn, f"INSERT INTO only_node3 VALUES ({i})")
    _pg_ctl(topo, topo.primary, "stop")
    end = _record_end(
        lsn_int(_controldata(topo, topo.primary)["Latest checkpoint location"]),
        _SHUTDOWN_CHECKPOINT,
    )
    wait_for(
        "node3 to receive the old primary's last record", lambda: topo.received_lsn(node3) >= end
    )
    assert topo.received_lsn(node3) == end
    if not node3_ahead:
        wait_for("node2 to receive it too", lambda: topo.received_lsn(node2) >= end)
    _promote(node2)
    return end


def test_sibling_that_is_a_prefix_follows_without_pg_rewind(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A sibling with every byte of the old primary and nothing more is repointed in place: no restart, no pg_rewind, journaled as not rewound."""
    topo = three_nodes
    node2, node3 = topo.standbys
    end = _split_after_stop(topo, node3_ahead=0)
    assert _fork(node2.dsn) == end  # the new timeline starts where the old WAL ended
    started = _postmaster_started(node3)
    state = tmp_path / "state.db"
    done = drctl("run", str(_follow_runbook(topo, tmp_path / "f.yaml", False)), "--yes",
                 "--state", str(state))  # fmt: skip
    assert done.returncode == 0, explain(done)
    assert "pg_rewind" not in done.stdout + done.stderr, explain(done)
    assert _postmaster_started(node3) == started  # reloaded, never stopped
    (rewound,) = _recorded(state, "rewound")
    assert isinstance(rewound, dict) and rewound["rewound"] is False
    assert "on the new primary's timeline" in rewound["why"] or "a prefix" in rewound["why"]
    assert _recorded(state, "discarded") == []
    outputs = next(e for e in journal(state) if e["kind"] == "step_succeeded")["data"]["outputs"]
    assert (outputs["rewound"], outputs["discarded_bytes"]) == (False, 0)
    assert query(node3.dsn, "SELECT status, received_tli FROM pg_stat_wal_receiver") == [
        ("streaming", 2)
    ]


def test_diverged_sibling_is_refused_then_rewound_with_its_range(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A sibling holding commits the new primary lacks is refused untouched, then rewound with accept_discard, the range being fork–end of the old WAL."""
    topo = three_nodes
    node2, node3 = topo.standbys
    writes = 25
    end = _split_after_stop(topo, node3_ahead=writes)
    fork = _fork(node2.dsn)
    assert fork < end
    started = _postmaster_started(node3)
    state = tmp_path / "state.db"
    refused = drctl("run", str(_follow_runbook(topo, tmp_path / "f.yaml", False)), "--yes",
                    "--state", str(state))  # fmt: skip
    assert refused.returncode == 1, explain(refused)
    assert f"so {end - fork} bytes" in refused.stdout + refused.stderr, explain(refused)
    assert "set accept_discard: true" in refused.stdout + refused.stderr
    assert _postmaster_started(node3) == started and in_recovery(node3.dsn)
    assert (
        drctl("abort", run_id_of(refused), "--reason", "test", "--state", str(state)).returncode
        == 0
    )

    done = drctl("run", str(_follow_runbook(topo, tmp_path / "ack.yaml", True)), "--yes",
                 "--state", str(state))  # fmt: skip
    assert done.returncode == 0, explain(done)
    assert "pg_rewind: Done!" in done.stdout, explain(done)
    (rewound,) = _recorded(state, "rewound")
    assert isinstance(rewound, dict) and rewound["rewound"] is True
    assert rewound["why"].startswith("diverged:")
    (discarded,) = _recorded(state, "discarded")
    assert isinstance(discarded, dict)
    assert (lsn_int(discarded["from"]), lsn_int(discarded["to"])) == (fork, end)
    assert discarded["bytes"] == end - fork and discarded["commits"] >= writes
    outputs = [e for e in journal(state) if e["kind"] == "step_succeeded"][-1]["data"]["outputs"]
    assert outputs["rewound"] is True and outputs["discarded_bytes"] == end - fork
    assert f"discarded {end - fork} bytes of WAL" in done.stdout
    assert query(node3.dsn, "SELECT status, received_tli FROM pg_stat_wal_receiver") == [
        ("streaming", 2)
    ]
    assert one(node3.dsn, "SELECT count(*) FROM only_node3") == 0


@pytest.mark.parametrize("fault", ["event:4", "after-apply:follow"])
def test_kill_9_during_a_rewinding_follow_then_resume_rewinds_once(
    three_nodes: ThreeNodes,  # noqa: F811
    tmp_path: Path,
    fault: str,
) -> None:
    """drctl killed -9 once follow journaled its decision to rewind (before pg_rewind), or after its apply: resume's verify decides, and pg_rewind runs once in all."""
    topo = three_nodes
    node2, node3 = topo.standbys
    end = _split_after_stop(topo, node3_ahead=10)
    fork = _fork(node2.dsn)
    state = tmp_path / "state.db"
    runbook = _follow_runbook(topo, tmp_path / "ack.yaml", True)
    killed = drctl("run", str(runbook), "--yes", "--state", str(state),
                   env={"DRCTL_FAULT": fault})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    before = journal(state)
    started = _postmaster_started(node3)
    resumed = drctl("resume", "--last", "--yes", "--state", str(state))
    assert resumed.returncode == 0, explain(resumed)
    rewinds = [text.count("pg_rewind: Done!") for text in (killed.stdout, resumed.stdout)]
    if fault.startswith("event:"):
        # Killed right after the decision was durable: nothing was rewound yet.
        last = before[-1]
        assert (last["kind"], last["data"]["key"]) == ("step_recorded", "rewound"), before
        assert last["data"]["value"]["rewound"] is True
        assert rewinds == [0, 1], explain(resumed)
    else:
        assert rewinds == [1, 0], explain(resumed)
        assert "already in effect (verified on resume)" in resumed.stdout, explain(resumed)
        assert _postmaster_started(node3) == started
    events = journal(state)
    assert events[-1]["kind"] == "run_finished" and events[-1]["data"]["status"] == "succeeded"
    ranges = _recorded(state, "discarded")
    assert ranges and all(isinstance(r, dict) for r in ranges)
    last_range = ranges[-1]
    assert isinstance(last_range, dict)
    assert (lsn_int(last_range["from"]), lsn_int(last_range["to"])) == (fork, end)
    assert query(node3.dsn, "SELECT status, received_tli FROM pg_stat_wal_receiver") == [
        ("streaming", 2)
    ]
