"""What a rewind discards and what a drill's load did, read from tool output (no server).

pg_waldump's real output (captured from PostgreSQL 15) runs through drctl's own awk
summary with ``sh`` and ``awk``; pgbench's real summaries are parsed; the drill counts
only the discarded ranges of steps that went on to succeed and held committed writes.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from drctl.drill.canary import Ack
from drctl.drill.load import parse_summary
from drctl.drill.measure import judge, measure
from drctl.drill.run import _discarded
from drctl.engine import events as ev
from drctl.errors import StepError
from drctl.providers.postgres.discard import (
    _WALDUMP,
    DiscardedWal,
    _record_end,
    fork_point,
    parse_waldump,
)
from drctl.providers.postgres.session import lsn
from drctl.state.base import Event

#: Records after a fork: a user-table insert and its commit (tx 724), an ANALYZE's
#: catalog-only commit (tx 725), then the shutdown checkpoint and the end of the WAL.
_RECORDS = """\
rmgr: Heap        len (rec/tot):     59/    59, tx:        724, lsn: 0/01527938, prev 0/01527900, desc: INSERT+INIT off 1 flags 0x00, blkref #0: rel 1663/5/16384 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        724, lsn: 0/01527978, prev 0/01527938, desc: COMMIT 2026-12-02 15:55:11.782615 UTC
rmgr: Heap        len (rec/tot):     80/    80, tx:        725, lsn: 0/015279A0, prev 0/01527978, desc: HOT_UPDATE off 3 xmax 725, blkref #0: rel 1663/5/2619 blk 2
rmgr: Transaction len (rec/tot):     34/    34, tx:        725, lsn: 0/015279F0, prev 0/015279A0, desc: COMMIT 2026-12-02 15:55:12.000000 UTC
rmgr: XLOG        len (rec/tot):    114/   114, tx:          0, lsn: 0/01527B10, prev 0/015279F0, desc: CHECKPOINT_SHUTDOWN redo 0/1527B10; tli 1; shutdown
pg_waldump: error: error in WAL record at 0/1527B10: invalid record length at 0/1527B88: wanted 24, got 0
"""


def _summarised(tmp_path: Path, output: str) -> str:
    """``output`` as pg_waldump's, through the script drctl runs where the node lives."""
    fake = tmp_path / "pg_waldump"
    (tmp_path / "out.txt").write_text(output)
    fake.write_text(f"#!/bin/sh\ncat {tmp_path / 'out.txt'}\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "DRCTL_WALDUMP": str(fake), "DRCTL_DATA": str(tmp_path),
           "DRCTL_TLI": "1", "DRCTL_FROM": "0/1527900"}  # fmt: skip
    done = subprocess.run(
        ["sh", "-c", _WALDUMP], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def test_waldump_summary_counts_user_table_commits_and_finds_the_end(tmp_path: Path) -> None:
    """Only the commit of a transaction that changed a user table counts; the end is where pg_waldump stopped."""
    out = _summarised(tmp_path, _RECORDS)
    assert "drctl-wal: 1 1 0/01527B10 114" in out
    assert "rmgr:" not in out  # the records stay out of the step's log
    end, commits = parse_waldump(out, lsn("0/1527900") or 0)
    assert (end, commits) == (lsn("0/1527B88"), 1)


def test_waldump_with_nothing_after_the_fork_discards_nothing(tmp_path: Path) -> None:
    """No record at or after the fork, or no segment file for it: the WAL ends at the fork."""
    start = lsn("0/1527B88") or 0
    for said in (
        "pg_waldump: error: could not find a valid record after 0/1527B88\n",
        'pg_waldump: error: could not find file "000000010000000000000002": No such file\n',
    ):
        assert parse_waldump(_summarised(tmp_path, said), start) == (start, 0)


def test_waldump_end_without_a_position_is_after_the_last_record(tmp_path: Path) -> None:
    """A stop that names no position (a recycled page) ends the WAL after the last record read, page header counted."""
    last = "rmgr: XLOG        len (rec/tot):    114/   114, tx:          0, lsn: 0/01527FD0, prev 0/01527F00, desc: CHECKPOINT_SHUTDOWN\n"
    said = "pg_waldump: error: error in WAL record at 0/1527FD0: unexpected pageaddr 0/527E000 in log segment 000000010000000000000001, offset 5406720\n"
    end, _ = parse_waldump(_summarised(tmp_path, last + said), lsn("0/1527F00") or 0)
    # 48 bytes fit on the page; 66 go on the next one after its 24-byte header.
    assert end == _record_end(lsn("0/1527FD0") or 0, 114) == 0x1528000 + 24 + 66 + 6
    with pytest.raises(StepError, match="cannot read the node's WAL with pg_waldump"):
        parse_waldump("sh: 1: pg_waldump: not found\n", 0)


def test_fork_point_and_the_range_round_trip() -> None:
    """The fork is the switchpoint of the node's timeline in the history file; a range survives the journal."""
    history = "1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tbefore 2\n"
    assert fork_point(history, 1) == 0x3000148
    assert fork_point(history, 2) == 0x5000000
    assert fork_point(history, 3) is None
    wal = DiscardedWal(1, 2, 0x3025850, 0x302F448, 311)
    assert wal.bytes == 39928
    assert wal.describe().startswith("39928 bytes of WAL (0/3025850–0/302F448) on timeline 1")
    assert DiscardedWal.from_json(wal.as_json()) == wal
    assert DiscardedWal(1, 2, 10, 10, 0).describe().startswith("nothing")


_PGBENCH_CUT = """\
pgbench: error: client 2 script 0 aborted in command 8 query 0: FATAL:  terminating connection due to administrator command
pgbench: error: client 0 aborted in command 7 (SQL) of script 0; perhaps the backend died while processing
number of clients: 4
number of transactions actually processed: 579
number of failed transactions: 0 (0.000%)
tps = 278.326178 (without initial connection time)
pgbench: error: Run was aborted; the above results are incomplete.
"""


def test_pgbench_summary_parse() -> None:
    """A cut-off run gives its transactions and aborted clients; a refused start gives none."""
    assert parse_summary(_PGBENCH_CUT) == (579, 0, 2)
    refused = 'pgbench: error: connection to server at "127.0.0.2", port 5 failed: FATAL:  pg_hba.conf rejects connection\n'
    assert parse_summary(refused) == (None, 0, 0)


def _recorded(step: str, size: int, commits: int) -> Event:
    value = {"bytes": size, "from": "0/1", "to": "0/2", "commits": commits,
             "timeline": 1, "new_timeline": 2}  # fmt: skip
    return Event(ev.STEP_RECORDED, 1.0, step=step, data={"key": "discarded", "value": value})


def test_drill_counts_discards_of_steps_that_succeeded_and_held_writes() -> None:
    """A refused rewind and a range of checkpoints only are not counted; a succeeded one with commits is, and misses rpo 0."""
    events = [
        _recorded("rejoin", 500, 3),
        Event(ev.STEP_FAILED, 2.0, step="rejoin", data={"error": "refusing to rewind"}),
        _recorded("follow", 120, 0),
        Event(ev.STEP_SUCCEEDED, 3.0, step="follow", data={}),
        _recorded("rejoin", 600, 4),
        Event(ev.STEP_SUCCEEDED, 4.0, step="rejoin", data={}),
    ]
    assert _discarded(events) == (600, 4)
    assert _discarded(events[:2]) == (0, 0)
    kept = measure(
        [Ack(1, 1.0, "a")], {1}, windows=[(0.9, 1.1)], first_mutation_at=None,
        new_primary_address="a", discarded=(600, 4),
    )  # fmt: skip
    assert kept.missing == 0 and kept.discarded_bytes == 600
    assert judge(kept, {"rto": 60.0, "rpo": 0.0}).rpo_met is False
    assert judge(kept, {"rto": 60.0, "rpo": 30.0}).rpo_met is True
