"""Roles a runbook gives a check step (``with.roles``) and postgres.exec's verify, as the safety lints read them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drctl.compiler.compile import compile_runbook
from drctl.errors import RunbookInvalid

HEAD = """
apiVersion: drctl/v1
kind: Runbook
metadata: {name: roles}
targets:
  old: {type: postgres, dsn: "host=a"}
  new: {type: postgres, dsn: "host=b"}
  api: {type: http, base_url: "https://lb.example"}
steps:
  - {id: fence, type: postgres.fence, target: old, with: {mode: read_only}}
"""
PROMOTE = "  - {id: promote, type: postgres.promote, target: new}\n"


def _codes(write_runbook: Callable[..., str], steps: str) -> list[str]:
    try:
        compile_runbook(write_runbook(HEAD + steps))
    except RunbookInvalid as exc:
        return sorted(d.code for d in exc.diagnostics if d.severity.value == "error")
    return []


def test_a_custom_lag_query_with_lag_check_satisfies_dr002(
    write_runbook: Callable[..., str],
) -> None:
    """postgres.sql with roles: [lag_check] before a promote satisfies DR002; without it DR002 fires."""
    lag = (
        "  - {id: lag, type: postgres.sql, target: new, with: {query: 'SELECT lag_ok FROM mon',"
        " expect: true, roles: [lag_check]}}\n"
    )
    assert _codes(write_runbook, lag + PROMOTE) == []
    plain = lag.replace(", roles: [lag_check]", "")
    assert _codes(write_runbook, plain + PROMOTE) == ["DR002"]


def test_an_http_check_can_carry_lag_check(write_runbook: Callable[..., str]) -> None:
    """A GET to a lag endpoint with roles: [lag_check] satisfies DR002; a POST cannot claim it (E212)."""
    get = (
        "  - {id: lag, type: http, target: api, with: {url: /lag, json_path: ok, equals: true,"
        " roles: [lag_check]}}\n"
    )
    assert _codes(write_runbook, get + PROMOTE) == []
    post = get.replace("url: /lag", "method: POST, url: /lag")
    assert "E212" in _codes(write_runbook, post + PROMOTE)


def test_an_http_call_can_repoint_traffic(write_runbook: Callable[..., str]) -> None:
    """A PUT with roles: [traffic] that does not depend on the promote trips DR003, like any traffic step."""
    lag = "  - {id: lag, type: postgres.replication_lag, target: new, requires: [fence]}\n"
    put = (
        "  - {id: lb, type: http, target: api, requires: [fence], with: {method: PUT, url: /pool,"
        " json_path: pool, equals: new, roles: [traffic]}}\n"
    )
    assert _codes(write_runbook, lag + PROMOTE + put) == ["DR003"]


@pytest.mark.parametrize(
    ("verify", "codes"), [("", ["DR004"]), (", verify: 'SHOW work_mem', expect: 7MB", [])]
)
def test_exec_is_verified_only_with_a_verify_query(
    write_runbook: Callable[..., str], verify: str, codes: list[str]
) -> None:
    """A postgres.exec with no verify query trips DR004; one with a verify query does not."""
    step = (
        f"  - {{id: tune, type: postgres.exec, target: new, with: {{sql: 'CHECKPOINT'{verify}}}}}\n"
    )
    assert _codes(write_runbook, step) == codes
