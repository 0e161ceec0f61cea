"""One local PostgreSQL server: init, start, stop, status, run as the right OS user.

``initdb`` and ``pg_ctl`` refuse to run as root, so when drctl runs as root they run
as the ``postgres`` user (``runuser``), which must be able to reach the data
directory. Per-node settings (port, listen address, socket directory) are passed on
the start command line, never written into the data directory, because ``pg_rewind``
copies the configuration files from the source server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from drctl.errors import DrctlError


class SandboxError(DrctlError):
    """Raised when a sandbox server cannot be created, started or stopped (exit 1)."""


def find_bin_dir() -> Path:
    """Where initdb/pg_ctl/pg_rewind live (see server_bin_dir), or a SandboxError."""
    from drctl.providers.postgres.session import server_bin_dir

    found = server_bin_dir()
    if not found:
        raise SandboxError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found",
            hint="install the postgresql package, or set DRCTL_PG_BIN to their directory",
        )
    return Path(found)


def os_user() -> str:
    """The unprivileged user that owns and runs the servers."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise SandboxError(
            "running as root, and there is no 'postgres' user to run the servers as"
        ) from None
    return "postgres"


def as_user(user: str, argv: list[str]) -> list[str]:
    if os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--", *argv]
    return argv


@dataclass(frozen=True)
class Recovery:
    """What a running server says about its replication."""

    in_recovery: bool
    #: The host its primary_conninfo names (what it follows, streaming or not).
    upstream_host: str | None
    #: Its walreceiver streams now.
    streaming: bool


@dataclass(frozen=True)
class PgNode:
    """A data directory and how to start it."""

    name: str
    data_dir: Path
    port: int
    host: str
    socket_dir: Path
    log_file: Path
    bin_dir: Path
    user: str

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} dbname=postgres user=postgres connect_timeout=5"

    @property
    def start_options(self) -> str:
        return f"-p {self.port} -c listen_addresses={self.host} -k {self.socket_dir}"

    def _run(self, argv: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                as_user(self.user, argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(
                f"{self.name}: {Path(argv[0]).name} took longer than {timeout:.0f}s"
            ) from exc

    def _ok(self, argv: list[str], what: str, timeout: float = 120.0) -> str:
        done = self._run(argv, timeout)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise SandboxError(
                f"{self.name}: {what} failed: {detail[-1] if detail else done.returncode}"
            )
        return done.stdout

    def initdb(self) -> None:
        self._ok(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "--username=postgres",
             "--auth=trust", "--data-checksums", "--encoding=UTF8", "--no-instructions"],
            "initdb",
        )  # fmt: skip

    def running(self) -> bool:
        return (
            self._run(
                [str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data_dir)], 30
            ).returncode
            == 0
        )

    def start(self) -> None:
        if self.running():
            return
        self._ok(
            [str(self.bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data_dir),
             "-l", str(self.log_file), "-o", self.start_options],
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        if not self.data_dir.exists() or not self.running():
            return
        self._ok(
            [
                str(self.bin_dir / "pg_ctl"),
                "stop",
                "-w",
                "-t",
                "60",
                "-m",
                mode,
                "-D",
                str(self.data_dir),
            ],
            "stop",
        )

    def clone_from(self, source: PgNode) -> None:
        """Make this node a streaming standby of ``source`` from a cold copy of its data.

        ``source`` must be stopped cleanly (just initialised): a copy of a shut-down
        cluster is a consistent base backup, with no checkpoint to wait for and no WAL
        to stream first, so several standbys are made in the time of one ``cp``.
        """
        self._ok(["cp", "-a", str(source.data_dir), str(self.data_dir)], "copying the data")
        # application_name = the node's name, so the primary's pg_stat_replication says who.
        conninfo = (
            f"host={source.host} port={source.port} user=postgres application_name={self.name}"
        )
        with (self.data_dir / "postgresql.auto.conf").open("a") as auto:
            auto.write(f"primary_conninfo = '{conninfo}'\n")
        signal = self.data_dir / "standby.signal"
        signal.touch()
        if os.geteuid() == 0:
            shutil.chown(signal, self.user)

    def recovery(self) -> Recovery | None:
        """Whether the server is in recovery and from where it streams; None: it does not answer."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), current_setting('primary_conninfo'),"
                    " EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')"
                ).fetchone()
            if row is None:
                return None
            host = conninfo_to_dict(row[1]).get("host") if row[1] else None
        except psycopg.Error:
            return None
        return Recovery(bool(row[0]), str(host) if host else None, bool(row[2]))
