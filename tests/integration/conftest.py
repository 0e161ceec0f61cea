"""Real services for integration tests; under DRCTL_REQUIRE_SERVICES=1 a missing one fails."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = os.environ.get("DRCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def require_or_skip(reason: str) -> None:
    if os.environ.get("DRCTL_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


@pytest.fixture
def pg_state_url() -> Iterator[str]:
    """A fresh schema in the machine's PostgreSQL, as a --state URL; dropped afterwards."""
    import psycopg

    schema = f"drctl_t_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        require_or_skip(f"PostgreSQL at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in PG_ADMIN_URL else "?"
        yield f"{PG_ADMIN_URL}{sep}options=-csearch_path%3D{schema}"
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
