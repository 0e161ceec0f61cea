"""The hard fence's ``pg_hba.conf``: what it keeps of the original, and how it is put in place.

The fenced file keeps, in the original's order, every replication line (its database
field narrowed to ``replication``), so the standbys keep streaming, and every
``local`` line that lets drctl's superuser in over the server's Unix socket, narrowed
to that one user, so drctl can still see and end sessions; then it rejects every
other connection. ``include`` directives are not kept: what they allow is not known
here. The original is saved beside the file (``<hba>.drctl-fence``) and recorded in
the journal, and the first line marks a fenced file, so a retried fence never saves
its own file as "the original".
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drctl.errors import StepError
from drctl.providers.postgres.session import ServerNode, node_shell, scalar
from drctl.steps.base import StepContext
from drctl.steps.process import last_line

MARK = "# drctl hard fence:"
BACKUP_SUFFIX = ".drctl-fence"
_HOST_TYPES = frozenset({"host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc"})

# Runs the given command first, if any (the proof that drctl keeps a way in), and writes
# nothing if it fails; then saves the original (once: not a fenced file), and swaps the
# new content in with a rename, keeping the file's owner and mode. Only builtins but
# cp and mv: each other process is a fork and exec on the failover's way.
_NOT_PROVEN = 97
_WRITE = rf"""set -e
if [ "$#" -gt 0 ] && ! "$@"; then
    exit {_NOT_PROVEN}
fi
first=
IFS= read -r first < "$DRCTL_HBA" || true
case $first in
    *"$DRCTL_MARK"*) ;;
    *) if [ -n "$DRCTL_SAVE" ]; then cp -p "$DRCTL_HBA" "$DRCTL_HBA$DRCTL_SUFFIX"; fi ;;
esac
cp -p "$DRCTL_HBA" "$DRCTL_HBA.drctl-new"
printf '%s' "$DRCTL_CONTENT" > "$DRCTL_HBA.drctl-new"
mv "$DRCTL_HBA.drctl-new" "$DRCTL_HBA"
"""


@dataclass(frozen=True)
class HbaLine:
    """One rule line of pg_hba.conf, split into its fields (comments dropped)."""

    text: str
    fields: tuple[str, ...]

    @property
    def kind(self) -> str:
        return self.fields[0]

    @property
    def databases(self) -> list[str]:
        return self.fields[1].split(",") if len(self.fields) > 1 else []

    @property
    def users(self) -> list[str]:
        return self.fields[2].split(",") if len(self.fields) > 2 else []


def parse(text: str) -> list[HbaLine]:
    """The rule lines of a pg_hba.conf (comments and blank lines skipped)."""
    lines: list[HbaLine] = []
    for raw in text.splitlines():
        try:
            fields = tuple(shlex.split(raw, comments=True))
        except ValueError:  # an unbalanced quote: not a line we keep
            continue
        if fields:
            lines.append(HbaLine(raw, fields))
    return lines


def fenced(original: str, superuser: str, hba_file: str) -> str:
    """The hard fence's pg_hba.conf for ``original``; ``superuser`` is drctl's own role."""
    kept: list[str] = []
    for line in parse(original):
        if line.kind not in _HOST_TYPES | {"local"} or len(line.fields) < 4:
            continue  # include directives and malformed lines
        rest = " ".join(_quote(f) for f in line.fields[3:])
        if "replication" in line.databases:
            kept.append(f"{line.kind} replication {line.fields[2]} {rest}")
        elif line.kind == "local" and ({"all", superuser} & set(line.users)):
            kept.append(f"local {line.fields[1]} {_quote(superuser)} {rest}")
    return (
        f"{MARK} only replication and local sessions of {superuser!r} are let in;\n"
        f"# the original file is {hba_file}{BACKUP_SUFFIX} (and in drctl's journal).\n"
        + "".join(f"{rule}\n" for rule in kept)
        + "local all all reject\nhost all all all reject\n"
    )


def _quote(field: str) -> str:
    return f'"{field}"' if any(c.isspace() or c in ',"#' for c in field) else field


def read_original(conn: Any, hba_file: str) -> str:
    """The pg_hba.conf as it was before any hard fence: the saved original if it is fenced.

    Read by the server (``pg_read_file``, superuser) rather than with a shell command,
    whose output would be the step's log.
    """
    current = str(scalar(conn, "SELECT pg_read_file(%s)", (hba_file,)))
    if current.startswith(MARK):
        return str(scalar(conn, "SELECT pg_read_file(%s)", (hba_file + BACKUP_SUFFIX,)))
    return current


def write(
    ctx: StepContext,
    node: ServerNode,
    hba_file: str,
    content: str,
    *,
    save: bool,
    first: tuple[Sequence[str], Mapping[str, str]] | None = None,
) -> str | None:
    """Put ``content`` in place of the file; ``save`` keeps the unfenced original beside it.

    ``first`` (argv and environment) runs in the same shell before anything is written;
    if it fails, nothing is: then the last line it printed is returned, else None.
    """
    argv, extra = first if first is not None else ((), {})
    env = {**extra, **_env(hba_file), "DRCTL_CONTENT": content, "DRCTL_SAVE": "1" if save else ""}
    done = node_shell(ctx, node, _WRITE, env=env, args=argv)
    if first is not None and done.exit_code == _NOT_PROVEN:
        return last_line(done.output)
    if done.exit_code != 0:
        raise StepError(f"cannot write {hba_file}: {last_line(done.output)}")
    return None


def _env(hba_file: str) -> dict[str, str]:
    return {"DRCTL_HBA": hba_file, "DRCTL_MARK": MARK, "DRCTL_SUFFIX": BACKUP_SUFFIX}
