"""Client tools (psql, sh) run as the server's OS user, exec'd by drctl itself.

Against a real primary, as root: a shell and psql run for a postgres target get the
server user's uid, gid and supplementary groups, its HOME/USER/LOGNAME/SHELL and "/" as
their directory — what ``runuser`` gave them — but are drctl's own children, with no
``runuser`` process (and its PAM session) in between.
"""

from __future__ import annotations

import os
import pwd

import pytest

from drctl.providers.postgres.session import local_node, node_shell, pg_tool
from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import StepInputs
from tests.integration.pg_sandbox import (
    Pair,
    RealContext,
    one,
    shared_dir,
    shared_sandbox,  # noqa: F401
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="drctl switches users only when run as root"),
]

_WHO = r"""
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "env=$HOME:$USER:$LOGNAME:$SHELL"
echo "cwd=$(pwd)"
echo "parent=$PPID"
touch "$DRCTL_FILE"
"""


def _ctx(pair: Pair) -> RealContext:
    target = PostgresTarget.model_validate(pair.target(pair.node1))
    return RealContext(StepInputs(), target=target, timeout=60.0)


def _fields(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def test_a_node_shell_runs_as_the_server_user_as_drctls_child(shared_sandbox: Pair) -> None:  # noqa: F811
    """The shell has the user's ids, groups, login variables and "/", and drctl as its parent."""
    pair = shared_sandbox
    ctx = _ctx(pair)
    user = pwd.getpwnam(pair.os_user)
    where = shared_dir("drctl-user-")
    where.chmod(0o777)
    made = where / "made-by-the-shell"
    try:
        done = node_shell(
            ctx, local_node(ctx.target, "test", ctx), _WHO, env={"DRCTL_FILE": str(made)}
        )
        assert done.exit_code == 0, done.output
        seen = _fields(done.output)
        groups = sorted(os.getgrouplist(pair.os_user, user.pw_gid))
        assert seen["uid"] == str(user.pw_uid)
        assert seen["gid"] == str(user.pw_gid)
        assert sorted(int(g) for g in seen["groups"].split()) == groups
        assert seen["env"] == f"{user.pw_dir}:{pair.os_user}:{pair.os_user}:{user.pw_shell}"
        assert seen["cwd"] == "/"
        # Exec'd by drctl (here, this test's process), not forked by a runuser in between.
        assert seen["parent"] == str(os.getpid())
        assert made.stat().st_uid == user.pw_uid
        assert made.stat().st_gid == user.pw_gid
    finally:
        for path in (made, where):
            if path.is_dir():
                path.rmdir()
            elif path.exists():
                path.unlink()


def test_psql_reaches_the_server_over_its_socket_as_the_server_user(shared_sandbox: Pair) -> None:  # noqa: F811
    """psql connects over the Unix socket, and what it runs runs as the server's user."""
    pair = shared_sandbox
    ctx = _ctx(pair)
    user = pwd.getpwnam(pair.os_user)
    sockets = str(one(pair.node1.dsn, "SELECT current_setting('unix_socket_directories')"))
    env = {
        "PGHOST": sockets.split(",", maxsplit=1)[0].strip(), "PGPORT": str(pair.node1.port),
        "PGUSER": "postgres", "PGDATABASE": "postgres",
    }  # fmt: skip
    done = pg_tool(
        ctx, local_node(ctx.target, "test", ctx), "psql", "-X", "-A", "-t",
        "-c", "SELECT 'server says: ' || current_setting('port')",
        # psql's \! shell: its parent is psql, whose parent (field 4 of its stat) is drctl.
        "-c", r"\! echo psql-uid=$(id -u) psql-parent=$(cut -d' ' -f4 /proc/$PPID/stat)",
        env=env,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert f"server says: {pair.node1.port}" in done.output
    assert f"psql-uid={user.pw_uid}" in done.output
    assert f"psql-parent={os.getpid()}" in done.output
