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
from drctl.providers.postgres.promote import current_timeline
from drctl.providers.postgres.session import (
    ServerNode,
    connect,
    lsn,
    lsn_text,
    node_shell,
    scalar,
)
from drctl.steps.base import StepContext
from drctl.steps.process import last_line

#: The lines of ``pg_waldump --stats=record`` the measurement reads (the rest stays out of the log).
_WALDUMP = r"""cd /
"$DRCTL_WALDUMP" -p "$DRCTL_DATA/pg_wal" -t "$DRCTL_TLI" -s "$DRCTL_FROM" --stats=record 2>&1 \
    | grep -E '^(WAL statistics between|Transaction/(COMMIT|PREPARE)|pg_waldump: (error|fatal))'
exit 0
"""

_RANGE = re.compile(r"^WAL statistics between (\S+) and (\S+):")
_COMMITS = re.compile(r"^Transaction/(COMMIT|COMMIT_PREPARED|PREPARE)\s+(\d+)\b")
#: pg_waldump stopping at the end of the WAL: "… invalid record length at 0/3000110: …".
_ENDS_AT = re.compile(r"\bat ([0-9A-F]+/[0-9A-F]+)\b")
#: Nothing at or after the start: no record there, or no segment file for it.
_NOTHING = ("could not find a valid record after", "could not find file")


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
            f"does not have, holding {self.commits} committed transaction"
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
    ctx: StepContext[Any, Any], new_dsn: str, timeline: int
) -> tuple[int, int | None]:
    """The new primary's timeline, and where it forked from ``timeline`` (None: the same one).

    Reads the new primary's history file with ``pg_read_file`` (its DSN needs a superuser
    or ``pg_read_server_files``).
    """
    with connect(new_dsn, ctx, what="new primary", read_only=True) as conn:
        new_timeline = current_timeline(conn)
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
    end: int | None = None
    commits = 0
    for line in done.output.splitlines():
        if found := _RANGE.match(line):
            end = lsn(found[2])
        elif found := _COMMITS.match(line):
            commits += int(found[2])
        elif line.startswith("pg_waldump:") and end is None:
            if any(words in line for words in _NOTHING):
                end = start
            elif at := _ENDS_AT.findall(line):
                end = lsn(at[-1])
    if end is None:
        raise StepError(
            f"cannot tell where the node's WAL ends from pg_waldump: {last_line(done.output)}"
        )
    return end, commits
