"""A postgres target's ``dns_server`` is honoured by every postgres step type, not only the probe.

The sandbox's BIND9 is the only server that knows the nodes' names (``node1.<zone>``…):
the system resolver does not, so a step that ignored ``dns_server`` could not connect.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drctl.errors import Unreachable
from drctl.providers.postgres.lag import LagInputs, ReplicationLag
from drctl.providers.postgres.sql import Sql, SqlInputs
from tests.integration.pg_sandbox import (
    Node,
    Pair,
    RealContext,
    drctl,
    explain,
    journal,
    shared_sandbox,  # noqa: F401
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _named(pair: Pair, node: Node, *, dns: bool = True) -> dict[str, str]:
    """``node``'s target with its DSN's host a name only the sandbox's BIND9 resolves."""
    params = pair.params()
    zone = str(params["dns_zone"]).rstrip(".")
    target = {**pair.target(node), "dsn": f"host={node.name}.{zone} port={node.port} "
              "dbname=postgres user=postgres connect_timeout=3"}  # fmt: skip
    if dns:
        target["dns_server"] = f"127.0.0.1:{params['dns_port']}"
    return target


@pytest.mark.integration
def test_sql_and_lag_resolve_their_targets_through_dns_server(shared_sandbox: Pair) -> None:  # noqa: F811
    """postgres.sql and postgres.replication_lag reach targets named only in the target's dns_server."""
    pair = shared_sandbox
    primary, standby = _named(pair, pair.node1), _named(pair, pair.node2)

    ctx = RealContext(SqlInputs(query="SELECT pg_is_in_recovery()", expect=False), target=primary)
    Sql().apply(ctx)
    assert ctx.outputs["rows"] == [[False]]

    lag = RealContext(
        LagInputs(primary="primary", max_bytes=1 << 30),
        target=standby,
        targets={"primary": primary},
    )
    ReplicationLag().apply(lag)
    assert lag.outputs["primary_position"] == "known"

    # Without dns_server the same name does not resolve: the test proves something.
    with pytest.raises(Unreachable, match="cannot connect"):
        Sql().apply(
            RealContext(SqlInputs(query="SELECT 1"), target=_named(pair, pair.node1, dns=False))
        )


@pytest.mark.integration
def test_a_run_queries_a_target_through_its_dns_server(
    shared_sandbox: Pair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A whole run's postgres.sql step succeeds on a target whose host only the runbook's dns_server knows."""
    pair = shared_sandbox
    target = _named(pair, pair.node2)
    fields = ", ".join(f'{k}: "{v}"' for k, v in target.items())
    runbook = tmp_path / "dns.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: dns-sql}\n"
        f"targets:\n  standby: {{{fields}}}\n"
        "steps:\n"
        "  - {id: is-standby, type: postgres.sql, target: standby,"
        " with: {query: 'SELECT pg_is_in_recovery()', expect: true}}\n"
    )
    state = tmp_path / "state.db"
    done = drctl("run", str(runbook), "--yes", "--state", str(state))
    assert done.returncode == 0, explain(done)
    succeeded = [e for e in journal(state) if e["kind"] == "step_succeeded"]
    assert [e["step"] for e in succeeded] == ["is-standby"], succeeded
