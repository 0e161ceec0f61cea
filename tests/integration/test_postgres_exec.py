"""postgres.exec against a real server: ALTER SYSTEM + reload proven by its verify query, CHECKPOINT, failures named."""

from __future__ import annotations

import pytest

from drctl.errors import StepError
from drctl.providers.postgres.exec import Exec, ExecInputs
from tests.integration.pg_sandbox import (
    Pair,
    RealContext,
    auto_conf,
    execute,
    one,
    shared_sandbox,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.integration
def test_exec_alters_the_system_reloads_and_verifies(shared_sandbox: Pair) -> None:  # noqa: F811
    """ALTER SYSTEM then pg_reload_conf() takes effect, verify proves it, and a dry-run check changes nothing."""
    pair = shared_sandbox
    target = pair.target(pair.node1)
    inputs = ExecInputs(
        sql=["ALTER SYSTEM SET work_mem = '7MB'", "SELECT pg_reload_conf()"],
        verify="SELECT current_setting('work_mem')",
        expect="7MB",
    )
    try:
        checked = Exec().check(RealContext(inputs, target=target, dry_run=True))
        assert checked is not None and "would run 2 statement(s)" in checked
        assert "work_mem" not in auto_conf(pair.node1.data_dir)
        assert (
            Exec().verify(RealContext(inputs.model_copy(update={"within": 0.2}), target=target))
            is False
        )

        ctx = RealContext(inputs, target=target)
        Exec().apply(ctx)
        assert ctx.outputs == {"statements": 2, "value": "7MB"}
        assert "work_mem = '7MB'" in auto_conf(pair.node1.data_dir)
        assert Exec().verify(RealContext(inputs, target=target)) is True
    finally:
        execute(pair.node1.dsn, "ALTER SYSTEM RESET work_mem", "SELECT pg_reload_conf()")


@pytest.mark.integration
def test_exec_checkpoints_and_names_the_statement_that_fails(shared_sandbox: Pair) -> None:  # noqa: F811
    """CHECKPOINT (refused in a transaction block) runs; a failing statement is named; a verify that never holds fails the step."""
    pair = shared_sandbox
    target = pair.target(pair.node1)
    before = one(pair.node1.dsn, "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()")
    execute(
        pair.node1.dsn,
        "CREATE TABLE IF NOT EXISTS exec_wal (x int)",
        "INSERT INTO exec_wal VALUES (1)",
    )
    Exec().apply(RealContext(ExecInputs(sql="CHECKPOINT"), target=target))
    after = one(pair.node1.dsn, "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()")
    assert after != before

    with pytest.raises(
        StepError, match=r"statement 2 \(ALTER SYSTEM SET no_such_setting = 1\) failed"
    ):
        Exec().apply(
            RealContext(
                ExecInputs(sql=["SELECT 1", "ALTER SYSTEM SET no_such_setting = 1"]), target=target
            )
        )
    with pytest.raises(StepError, match=r"returned '4MB', expected '1GB'"):
        Exec().apply(
            RealContext(
                ExecInputs(
                    sql="SELECT 1",
                    verify="SHOW work_mem",
                    expect="1GB",
                    within=0.5,
                ),
                target=target,
            )
        )
