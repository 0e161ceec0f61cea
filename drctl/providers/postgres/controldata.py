"""What ``pg_controldata`` says about a data directory, for a server that is not running."""

from __future__ import annotations

from dataclasses import dataclass

from drctl.errors import StepError
from drctl.providers.postgres.session import ServerNode, pg_tool
from drctl.steps.base import StepContext
from drctl.steps.process import last_line


@dataclass(frozen=True)
class ControlData:
    """The fields of ``pg_controldata`` the steps read."""

    #: "shut down", "in production", "shut down in recovery", …
    state: str
    #: Where the last checkpoint record starts; after a clean shutdown, the last WAL record.
    checkpoint_lsn: str
    timeline: int


def control_data(ctx: StepContext, node: ServerNode) -> ControlData:
    """Read the node's control file where the server lives (locally or over SSH)."""
    # The C locale: pg_controldata translates its labels.
    done = pg_tool(ctx, node, "pg_controldata", "-D", node.data_dir, env={"LC_ALL": "C"})
    if done.exit_code != 0:
        raise StepError(f"pg_controldata failed (exit {done.exit_code}): {last_line(done.output)}")
    fields: dict[str, str] = {}
    for line in done.output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        return ControlData(
            state=fields["Database cluster state"],
            checkpoint_lsn=fields["Latest checkpoint location"],
            timeline=int(fields["Latest checkpoint's TimeLineID"]),
        )
    except (KeyError, ValueError) as exc:
        raise StepError(
            f"pg_controldata said something unexpected: {last_line(done.output)}"
        ) from exc
