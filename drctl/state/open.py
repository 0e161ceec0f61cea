"""Choosing the state store: ``--state``, then ``DRCTL_STATE``, then ``.drctl/state.db``
under the current directory. A ``postgresql://`` URL selects the shared store, an
``etcd://`` URL the quorum store."""

from __future__ import annotations

import os
from pathlib import Path

from drctl.errors import UsageError
from drctl.state.base import StateStore

DEFAULT_PATH = Path(".drctl") / "state.db"


def state_spec(flag: str | None, settings_state: str | None = None) -> str:
    return flag or os.environ.get("DRCTL_STATE") or settings_state or str(DEFAULT_PATH)


def open_store(spec: str, *, read_only: bool = False) -> StateStore:
    """The store named by ``spec``: a PostgreSQL URL, or a SQLite path (or ``sqlite:///path``).

    ``read_only`` for commands that only read (``status``, ``runs``, ``log``): such a
    store writes nothing, so it opens on a full disk and on a read-only file system.
    """
    if spec.startswith(("postgresql://", "postgres://")):
        from drctl.state.postgres import PostgresStore

        return PostgresStore(spec, read_only=read_only)
    if spec.startswith("etcd://"):
        from drctl.state.etcd import EtcdStore

        return EtcdStore(spec, read_only=read_only)
    if "://" in spec and not spec.startswith("sqlite://"):
        raise UsageError(f"--state: unsupported state store URL {spec!r}")
    from drctl.state.sqlite import SqliteStore

    path = spec.removeprefix("sqlite://")
    if Path(path).is_dir():
        raise UsageError(f"--state: {path} is a directory; give the database file path")
    return SqliteStore(path, read_only=read_only)
