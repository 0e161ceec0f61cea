"""What a rewind would discard on a node: its WAL past the fork of the new primary's timeline.

Measured before ``pg_rewind`` runs, on the stopped node, from facts only: the node's
timeline (``pg_controldata``), where the new primary's timeline history says that
timeline ended (the fork), and the node's own WAL from the fork on, read by
``pg_waldump --stats=record`` — which gives the exact end of its WAL (the end of its
last valid record, what pg_rewind throws away up to) and how many transactions
committed in that range (writes the new primary never had).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drctl.errors import StepError
from drctl.providers.postgres.controldata import control_data
from drctl.providers.postgres.promote import TIMELINE, timeline_of
from drctl.providers.postgres.session import (
    Server,
    ServerNode,
    connect,
    lsn,
    lsn_text,
    node_shell,
    pg_tool,
    scalar,
)
from drctl.steps.base import StepContext
from drctl.steps.process import last_line

#: pg_waldump's records from the fork on, summed up where the node lives (its records stay
#: out of the step's log): the transactions that changed a user table (a relfilenode of
#: 16384 or more, where PostgreSQL starts numbering user objects) and then committed or
#: prepared — an autovacuum's ANALYZE commits too, and loses nothing — the last record's
#: position and length, and pg_waldump's own last words, which say where the WAL ends.
_WALDUMP = r"""cd /
"$DRCTL_WALDUMP" -p "$DRCTL_DATA/pg_wal" -t "$DRCTL_TLI" -s "$DRCTL_FROM" 2>&1 | awk '
/^rmgr: / {
    tx = 0
    if (match($0, /tx: +[0-9]+/)) { tx = substr($0, RSTART + 3, RLENGTH - 3) + 0 }
    if (match($0, /lsn: [0-9A-F]+\/[0-9A-F]+/)) { last = substr($0, RSTART + 5, RLENGTH - 5) }
    if (match($0, /\(rec\/tot\): +[0-9]+\/ *[0-9]+/)) {
        split(substr($0, RSTART + 10, RLENGTH - 10), len, "/"); size = len[2] + 0
    }
    if ($0 ~ /desc: (COMMIT|PREPARE)/) { if (tx in wrote) commits++; else others++; next }
    if (tx && match($0, /rel [0-9]+\/[0-9]+\/[0-9]+/)) {
        split(substr($0, RSTART + 4, RLENGTH - 4), rel, "/"); if (rel[3] + 0 >= 16384) wrote[tx] = 1
    }
    next
}
/^pg_waldump: / { print }
END { print "drctl-wal: " commits + 0 " " others + 0 " " (last == "" ? "-" : last) " " size + 0 }'
exit 0
"""

_SUMMARY = re.compile(r"^drctl-wal: (\d+) (\d+) (\S+) (\d+)$")
#: pg_waldump stopping at the end of the WAL: "error in WAL record at 0/3000098: invalid
#: record length at 0/3000110: …" (the last record read, then where the WAL ends).
_ENDS_AT = re.compile(r"\bat ([0-9A-F]+/[0-9A-F]+)\b")
#: Nothing at or after the start: no record there, or no segment file for it.
_NOTHING = ("could not find a valid record after", "could not find file")
#: WAL pages and segments (PostgreSQL's defaults), to find where a record ends.
_PAGE, _SEGMENT = 8192, 16 * 1024 * 1024
#: Control-file states of a primary that stopped without a shutdown checkpoint.
_CRASHED = ("in production", "in crash recovery", "shutting down")


@dataclass(frozen=True)
class DiscardedWal:
    """The node's WAL that is not on the new primary's timeline, which a rewind discards."""

    #: The node's timeline, and the new primary's that forked from it.
    timeline: int
    new_timeline: int
    #: Where the new timeline left the node's (the first byte not shared).
    start: int
    #: The end of the node's WAL: the end of its last valid record.
    end: int
    #: Transactions committed (or prepared) in ``start``–``end``: acknowledged writes lost.
    commits: int

    @property
    def bytes(self) -> int:
        return max(0, self.end - self.start)

    @property
    def holds_writes(self) -> bool:
        return self.commits > 0

    def describe(self) -> str:
        if not self.bytes:
            return (
                f"nothing: its timeline {self.timeline} ends at {lsn_text(self.end)}, where the "
                f"new primary's timeline {self.new_timeline} forked from it"
            )
        return (
            f"{self.bytes} bytes of WAL ({lsn_text(self.start)}–{lsn_text(self.end)}) on "
            f"timeline {self.timeline} that the new primary's timeline {self.new_timeline} "
            f"does not have, holding {self.commits} committed write transaction"
            + ("" if self.commits == 1 else "s")
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes, "from": lsn_text(self.start), "to": lsn_text(self.end),
            "commits": self.commits, "timeline": self.timeline,
            "new_timeline": self.new_timeline,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DiscardedWal:
        return cls(
            timeline=int(data["timeline"]), new_timeline=int(data["new_timeline"]),
            start=lsn(str(data["from"])) or 0, end=lsn(str(data["to"])) or 0,
            commits=int(data["commits"]),
        )  # fmt: skip

    def publish(self, ctx: StepContext[Any, Any]) -> None:
        """Journal the range (durable before the rewind) and publish it as step outputs."""
        ctx.record("discarded", self.as_json())
        ctx.output("discarded_bytes", self.bytes)
        ctx.output("discarded_from", lsn_text(self.start))
        ctx.output("discarded_to", lsn_text(self.end))
        ctx.output("discarded_commits", self.commits)


def fork_point(history: str, timeline: int) -> int | None:
    """Where ``timeline`` ends in a timeline history file (``parent<TAB>switchpoint<TAB>why``)."""
    for line in history.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.lstrip().startswith("#") and int(fields[0]) == timeline:
            return lsn(fields[1])
    return None


def new_timeline_fork(
    ctx: StepContext[Any, Any], new_dsn: Server, timeline: int
) -> tuple[int, int | None]:
    """The new primary's timeline, and where it forked from ``timeline`` (None: the same one).

    Reads the new primary's history file with ``pg_read_file`` (its DSN needs a superuser
    or ``pg_read_server_files``); a StepError if the new primary is still in recovery.
    """
    with connect(new_dsn, ctx, what="new primary", read_only=True) as conn:
        received, walfile = conn.execute(f"SELECT {TIMELINE}").fetchone()
        if not walfile:  # no write position: in recovery
            raise StepError("the new primary is still in recovery: promote it first")
        new_timeline = timeline_of(conn, received, walfile)
        if timeline == new_timeline:
            return new_timeline, None
        if timeline > new_timeline:
            raise StepError(
                f"the node is on timeline {timeline}, newer than the new primary's "
                f"{new_timeline}: it follows another primary already"
            )
        history = str(
            scalar(conn, "SELECT pg_read_file(%s)", (f"pg_wal/{new_timeline:08X}.history",))
        )
    fork = fork_point(history, timeline)
    if fork is None:
        raise StepError(
            f"the node's timeline {timeline} is not in the new primary's history "
            f"(timeline {new_timeline}): they share no WAL drctl can prove"
        )
    return new_timeline, fork


def measure_discard(
    ctx: StepContext[Any, Any], node: ServerNode, new_dsn: str
) -> DiscardedWal | None:
    """What rewinding the stopped ``node`` onto the new primary would discard (None: same timeline)."""
    control = control_data(ctx, node)
    if control.state in _CRASHED:
        # A primary that crashed (killed, lost power): its WAL ends where its crash recovery
        # says. Run that recovery as pg_rewind itself would, in single-user mode — no
        # session can connect, so no application can write meanwhile.
        ctx.log("the node was not shut down cleanly: crash recovery in single-user mode first")
        done = pg_tool(ctx, node, "postgres", "--single", "-F", "-D", node.data_dir, "template1")
        if done.exit_code != 0:
            raise StepError(
                f"crash recovery in single-user mode failed (exit {done.exit_code}): "
                f"{last_line(done.output)}"
            )
        control = control_data(ctx, node)
    if control.state not in ("shut down", "shut down in recovery"):
        raise StepError(
            f"the node's control file says {control.state!r}, not shut down: its end of WAL "
            "cannot be read before a crash recovery; start it once fenced and stop it cleanly"
        )
    new_timeline, fork = new_timeline_fork(ctx, new_dsn, control.timeline)
    if fork is None:
        return None
    end, commits = _wal_from(ctx, node, control.timeline, fork)
    return DiscardedWal(control.timeline, new_timeline, fork, max(end, fork), commits)


def _wal_from(
    ctx: StepContext[Any, Any], node: ServerNode, timeline: int, start: int
) -> tuple[int, int]:
    """The end of the node's WAL on ``timeline`` from ``start`` on, and the commits in it."""
    waldump = str(Path(node.bin_dir) / "pg_waldump") if node.bin_dir else "pg_waldump"
    done = node_shell(ctx, node, _WALDUMP, env={
        "DRCTL_WALDUMP": waldump, "DRCTL_DATA": node.data_dir, "DRCTL_TLI": str(timeline),
        "DRCTL_FROM": lsn_text(start) or "0/0",
    })  # fmt: skip
    return parse_waldump(done.output, start)


def parse_waldump(output: str, start: int) -> tuple[int, int]:
    """The end of the WAL and the write commits, from ``_WALDUMP``'s output for ``start``."""
    summary = next((m for m in map(_SUMMARY.match, output.splitlines()) if m is not None), None)
    if summary is None:
        raise StepError(f"cannot read the node's WAL with pg_waldump: {last_line(output)}")
    commits, last, size = (
        int(summary[1]),
        lsn(summary[3]) if summary[3] != "-" else None,
        int(summary[4]),
    )
    said = [line for line in output.splitlines() if line.startswith("pg_waldump:")]
    end: int | None = None
    if last is None and any(words in line for line in said for words in _NOTHING):
        end = start
    elif said and len(at := _ENDS_AT.findall(said[-1])) > 1:
        end = lsn(at[-1])  # "error in WAL record at LAST: invalid record length at END: …"
    elif last is not None:  # stopped by something that names no position: after the last record
        end = _record_end(last, size)
    if end is None:
        raise StepError(
            f"cannot tell where the node's WAL ends from pg_waldump: {last_line(output)}"
        )
    return end, commits


def _record_end(start: int, length: int) -> int:
    """Where a WAL record of ``length`` bytes at ``start`` ends (a page header counted if it crosses one)."""
    room = _PAGE - start % _PAGE
    if length <= room:
        end = start + length
    else:
        page = start + room
        end = page + (40 if page % _SEGMENT == 0 else 24) + (length - room)
    return (end + 7) // 8 * 8
