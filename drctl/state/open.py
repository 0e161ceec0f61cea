"""Choosing the state store: ``--state``, then ``DRCTL_STATE``, then the runbook's
``settings.state``, then the user's own store, ``$XDG_STATE_HOME/drctl/state.db``
(``~/.local/state/drctl/state.db`` when that is unset), the same from any directory.
A ``postgresql://`` URL selects the shared store, an ``etcd://`` URL the quorum store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from drctl.errors import RunNotFound, UsageError
from drctl.state.base import StateStore

#: Where drctl before 0.2 kept runs by default: under the current directory.
LEGACY_PATH = Path(".drctl") / "state.db"


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user's own store, per the XDG base directory spec (a relative value is ignored)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "drctl" / "state.db"


def state_spec(flag: str | None, settings_state: str | None = None) -> str:
    return flag or os.environ.get("DRCTL_STATE") or settings_state or str(default_path())


def legacy_note(spec: str) -> str | None:
    """A warning when ``./.drctl/state.db`` (the old default) exists and is not the store used.

    Runs started before the default moved are kept there; saying so once per command
    keeps an operator from thinking them lost.
    """
    if not LEGACY_PATH.is_file():
        return None
    is_sqlite = "://" not in spec or spec.startswith("sqlite://")
    if is_sqlite and Path(spec.removeprefix("sqlite://")).resolve() == LEGACY_PATH.resolve():
        return None
    return (
        f"note: {LEGACY_PATH} exists here but is not the state store in use ({spec}); runs "
        f"kept there are seen with --state {LEGACY_PATH}"
    )


def open_store(spec: str, *, read_only: bool = False, create: bool = True) -> StateStore:
    """The store named by ``spec``: a PostgreSQL URL, or a SQLite path (or ``sqlite:///path``).

    ``read_only`` for commands that only read (``status``, ``runs``, ``log``): such a
    store writes nothing, so it opens on a full disk and on a read-only file system.
    ``create=False`` for commands about runs that must exist already (``resume``,
    ``abort``, ``unlock``): a SQLite file that is not there is an error, not created.
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
    if not create and not Path(path).is_file():
        raise RunNotFound(
            f"no runs: there is no state store at {path}",
            hint="give the store with --state (or DRCTL_STATE) as the run did",
        )
    return SqliteStore(path, read_only=read_only)
