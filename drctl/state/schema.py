"""The state schema, written once for every backend (SQLite and PostgreSQL).

Each entry migrates the schema from version i to i + 1; never edit a shipped entry,
and only add tables (see READABLE_FROM).
Column types are spelled per dialect through the placeholders below.
"""

from __future__ import annotations

_MIGRATIONS = (
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        runbook TEXT NOT NULL,
        name TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        plan_json TEXT NOT NULL,
        params_json TEXT NOT NULL,
        {user} TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        version TEXT NOT NULL,
        started_at {real} NOT NULL,
        finished_at {real},
        status TEXT NOT NULL,
        dry_run {bool} NOT NULL,
        lock_key TEXT NOT NULL,
        cwd TEXT NOT NULL
    );
    CREATE INDEX runs_started ON runs (started_at);
    CREATE TABLE events (
        run_id TEXT NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL,
        ts {real} NOT NULL,
        kind TEXT NOT NULL,
        step TEXT,
        attempt INTEGER,
        token INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE locks (
        key TEXT PRIMARY KEY,
        lease_id TEXT,
        run_id TEXT,
        {user} TEXT,
        host TEXT,
        pid INTEGER,
        acquired_at {real},
        expires_at {real},
        token INTEGER NOT NULL
    )
    """,
    # 2: the brake (drctl freeze / thaw).
    """
    CREATE TABLE freezes (
        prefix TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        {user} TEXT NOT NULL,
        host TEXT NOT NULL,
        frozen_at {real} NOT NULL
    )
    """,
)

#: The oldest schema a read-only open can read: every migration since only adds tables,
#: which a reader of an older store treats as empty (a status command must not need a
#: migration, which is a write).
READABLE_FROM = 1

_DIALECTS = {
    "sqlite": {"real": "REAL", "bool": "INTEGER", "user": "user"},
    # "user" is a reserved word in PostgreSQL.
    "postgres": {"real": "DOUBLE PRECISION", "bool": "BOOLEAN", "user": '"user"'},
}

SCHEMA_VERSION = len(_MIGRATIONS)


def statements(dialect: str, from_version: int) -> list[str]:
    """The SQL statements that bring a store at ``from_version`` up to SCHEMA_VERSION."""
    words = _DIALECTS[dialect]
    out: list[str] = []
    for script in _MIGRATIONS[from_version:]:
        out.extend(s.strip() for s in script.format(**words).split(";") if s.strip())
    return out
