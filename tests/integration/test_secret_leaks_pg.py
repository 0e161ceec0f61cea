"""The four secret leaks of issue 19, checked in the PostgreSQL state store's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_secret_leaks import PIECES, RUNBOOK, TWO_LINES, _drctl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_no_piece_of_a_secret_is_in_the_postgresql_store(
    tmp_path: Path,
    pg_state_url: str,
) -> None:
    """After a run whose steps quote, cut and split secrets, no table row holds a piece of one."""
    import psycopg

    (tmp_path / "rb.yaml").write_text(RUNBOOK, encoding="utf-8")
    (tmp_path / "two.txt").write_text(TWO_LINES, encoding="utf-8")
    proc = _drctl("run", "rb.yaml", "--yes", "--state", pg_state_url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with psycopg.connect(pg_state_url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )
        ]
        assert tables
        dump = "\n".join(
            str(row[0])
            for table in tables
            for row in conn.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
        )
    assert "step_failed" in dump
    leaked = [p for p in PIECES if p in dump]
    assert not leaked, leaked
