"""A pgbench load beside a drill's canary: N clients of TPC-B through the canary's DSN.

pgbench runs from this machine, its tables (scale 1) initialised in a schema of its own
(``drctl_pgbench``, through ``search_path``) so nothing of the application's is touched.
pgbench's clients end when their server goes away (a fence ends their sessions), so a
supervisor starts it again, resolving the DSN's host again through the canary's DNS
server, as a pooled application reconnects; until the new primary answers, each start
fails at once and is retried after a short pause. At the end the supervisor ends its
sessions on the server (they carry their own application_name), so pgbench prints its
summary and exits; one that does not exit within a few seconds is killed. Every run is
bounded by ``-T`` (the drill's own bound) and every wait here has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from drctl.drill.canary import CanaryError

SCHEMA = "drctl_pgbench"

_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_ABORTED = re.compile(r"^pgbench: error: client \d+ (script \d+ )?aborted", re.M)


@dataclass(frozen=True)
class LoadSpec:
    """How much load, and where: pgbench clients through the canary's DSN (and DNS server)."""

    clients: int
    dsn: str
    dns_server: str | None = None
    #: The bound on the whole load (pgbench's -T for each run).
    max_seconds: float = 3600.0
    #: How long a failed start waits before the next.
    retry_every: float = 0.2


@dataclass(frozen=True)
class LoadFigures:
    """What the load did: pgbench's own counts, summed over its runs."""

    clients: int
    transactions: int
    failed: int
    #: Clients that pgbench reports aborted, cut off by the failover (drctl's own end not counted).
    aborted: int
    #: pgbench runs that connected, and starts that did not (the primary not answering yet).
    runs: int
    failed_starts: int
    seconds: float

    @property
    def tps(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tps": round(self.tps, 1)}


def pgbench_binary() -> str:
    """pgbench on this machine: on PATH, else beside the server binaries; CanaryError if none."""
    from drctl.providers.postgres.session import server_bin_dir

    found = shutil.which("pgbench")
    if found:
        return found
    beside = os.path.join(server_bin_dir(), "pgbench") if server_bin_dir() else ""
    if beside and os.access(beside, os.X_OK):
        return beside
    raise CanaryError(
        "--pgbench-clients: pgbench is not on PATH nor beside the PostgreSQL binaries",
        hint="install the PostgreSQL client tools (pgbench), or set DRCTL_PG_BIN",
    )


class PgbenchLoad:
    """Runs and restarts pgbench until stopped; sums what it reports."""

    def __init__(self, spec: LoadSpec, drill_id: str) -> None:
        self.spec = spec
        self.app_name = f"drctl_pgbench_{drill_id}".replace("-", "_")
        self._binary = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._address_dsn = ""
        self._stopping = False
        self._transactions = self._failed = self._aborted = self._runs = self._failed_starts = 0
        self._started_at = self._stopped_at = 0.0

    # -- before the drill ----------------------------------------------------------------

    def prepare(self) -> None:
        """Create the schema and initialise pgbench's tables in it; CanaryError (exit 2) if not."""
        import psycopg

        from drctl.drill.pg_canary import connect, resolve_dsn

        self._binary = pgbench_binary()
        dsn, _ = resolve_dsn(self.spec.dsn, self.spec.dns_server, 3.0)
        try:
            with connect(dsn, 5.0) as conn:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        except psycopg.Error as exc:
            raise CanaryError(f"pgbench: cannot create schema {SCHEMA}: {_first(exc)}") from exc
        done = self._pgbench(dsn, ["-i", "-q", "-s", "1", "-I", "dtGvp"], timeout=300.0)
        if done.returncode != 0:
            raise CanaryError(
                f"pgbench -i failed (exit {done.returncode}): {_last(done.stdout)}",
                hint="the canary's DSN must allow creating tables in a schema of its own",
            )

    # -- during the drill ----------------------------------------------------------------

    def start(self) -> None:
        self._started_at = time.time()
        self._thread = threading.Thread(target=self._loop, name="drctl-pgbench", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 5.0) -> LoadFigures:
        """End the load (its sessions first, so pgbench reports), within about ``grace`` seconds."""
        with self._lock:
            self._stopping = True
            self._stop.set()
            address_dsn = self._address_dsn
        if address_dsn:
            self._end_sessions(address_dsn)
        if self._thread is not None:
            self._thread.join(grace)
            if self._thread.is_alive():
                with self._lock, contextlib.suppress(OSError):
                    if self._proc is not None:
                        self._proc.kill()
                self._thread.join(grace)
        self._stopped_at = time.time()
        return self.figures()

    def figures(self) -> LoadFigures:
        with self._lock:
            return LoadFigures(
                clients=self.spec.clients, transactions=self._transactions, failed=self._failed,
                aborted=self._aborted, runs=self._runs, failed_starts=self._failed_starts,
                seconds=round(max(0.0, (self._stopped_at or time.time()) - self._started_at), 3),
            )  # fmt: skip

    def _loop(self) -> None:
        from drctl.drill.pg_canary import resolve_dsn

        deadline = time.monotonic() + self.spec.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                dsn, _ = resolve_dsn(self.spec.dsn, self.spec.dns_server, 1.0)
            except CanaryError:
                self._failed_starts += 1
                self._stop.wait(self.spec.retry_every)
                continue
            left = max(1, int(deadline - time.monotonic()))
            threads = min(self.spec.clients, 4)
            args = ["-n", "-c", str(self.spec.clients), "-j", str(threads), "-T", str(left)]
            out = self._run(dsn, args)
            if out is None:
                return
            self._count(out)

    def _run(self, dsn: str, args: list[str]) -> str | None:
        env, conninfo = _split_password(dsn)
        with self._lock:
            if self._stopping:
                return None
            self._proc = subprocess.Popen(
                [self._binary, *args, conninfo],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env=self._env(env), start_new_session=True,
            )  # fmt: skip
            self._address_dsn = dsn
            proc = self._proc
        out, _ = proc.communicate()
        with self._lock:
            self._proc = None
        return out

    def _count(self, out: str) -> None:
        processed, failed, aborted = parse_summary(out)
        with self._lock:
            stopping = self._stopping
            if processed is None:  # it never connected: the primary is not answering yet
                self._failed_starts += 1
            else:
                self._runs += 1
                self._transactions += processed
                self._failed += failed
                if not stopping:  # at the end, drctl itself cut them off
                    self._aborted += aborted
        if processed is None and not stopping:
            self._stop.wait(self.spec.retry_every)

    def _end_sessions(self, dsn: str) -> None:
        import psycopg

        from drctl.drill.pg_canary import connect

        with contextlib.suppress(psycopg.Error, OSError), connect(dsn, 3.0) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (self.app_name,),
            )

    def _pgbench(
        self, dsn: str, args: list[str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        env, conninfo = _split_password(dsn)
        try:
            return subprocess.run(
                [self._binary, *args, conninfo], stdin=subprocess.DEVNULL, capture_output=False,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self._env(env),
                timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise CanaryError(f"pgbench -i did not finish within {timeout:g}s") from exc

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        return {
            **os.environ, **extra, "PGAPPNAME": self.app_name,
            "PGOPTIONS": f"-c search_path={SCHEMA}", "PGCONNECT_TIMEOUT": "2",
        }  # fmt: skip


def parse_summary(out: str) -> tuple[int | None, int, int]:
    """From one pgbench run's output: transactions processed (None: it never ran), failed, aborted clients."""
    processed = _PROCESSED.search(out)
    if processed is None:
        return None, 0, 0
    failed = _FAILED.search(out)
    return int(processed[1]), int(failed[1]) if failed else 0, len(_ABORTED.findall(out))


def _split_password(dsn: str) -> tuple[dict[str, str], str]:
    """A password-free conninfo and PGPASSWORD: nothing secret on pgbench's command line."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    password = params.pop("password", None)
    params.pop("options", None)  # PGOPTIONS carries the search_path
    params.pop("application_name", None)
    return ({"PGPASSWORD": password} if password else {}), make_conninfo(**params)


def _first(exc: BaseException) -> str:
    from drctl.errors import first_line

    return first_line(exc)


def _last(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
