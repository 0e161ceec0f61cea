"""Real PostgreSQL sandboxes for the integration tests: pairs and three-node topologies.

Import the fixtures explicitly from a test module::

    from tests.integration.pg_sandbox import sandbox  # noqa: F401

``sandbox``/``shared_sandbox`` give a primary and one standby (``Pair``);
``three_nodes``/``shared_three_nodes`` a primary and two standbys (``ThreeNodes``), with
helpers that make one standby stop replaying and another stop receiving.
Each sandbox lives under a fresh directory in /tmp that the ``postgres`` OS user can
traverse (pytest's own tmp_path is under a 0700 directory it cannot enter), on loopback
addresses (127.0.0.2, .3, …) at a high port checked to be free first, and is always
torn down (``down()``).
Every wait here has a deadline; every connection has a connect timeout.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from drctl.testing import FakeContext
from tests.conftest import run_cli
from tests.integration.conftest import require_or_skip

if TYPE_CHECKING:
    from drctl.sandbox.pair import Sandbox
    from drctl.sandbox.status import NodeStatus

#: Bound on one drctl process in these tests; a whole failover takes a few seconds.
CLI_TIMEOUT = 120.0
#: Bound on any wait for replication to catch up or a server to change state.
WAIT = 30.0

#: Below the kernel's ephemeral range (32768-60999 by default): a port found free here is
#: never taken meanwhile as the source port of some client connection, which would hold
#: it for as long as that connection lives.
_PORTS_FROM = 20000
_PORTS_TO = 22000
_taken: set[int] = set()
_order = itertools.count()


# -- finding PostgreSQL and free ports --------------------------------------------------


def _skip_without_postgres() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require_or_skip("psycopg is not installed")
    from drctl.sandbox.pgnode import SandboxError, find_bin_dir

    try:
        bin_dir = find_bin_dir()
    except SandboxError as exc:
        require_or_skip(f"PostgreSQL server binaries: {exc.message}")
    if not (bin_dir / "initdb").exists():
        require_or_skip(f"no initdb in {bin_dir}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            require_or_skip("running as root and there is no 'postgres' user to run servers as")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """One free loopback port in the sandbox range (for a target nobody listens on)."""
    return free_base_port(width=1)


def free_base_port(width: int = 2) -> int:
    """A base port with ``width`` consecutive free ports, not handed out before here.

    Starts from a per-process offset (parallel pytest processes spread out) plus a
    counter, so the first candidate is nearly always free.
    """
    span = _PORTS_TO - _PORTS_FROM
    start = (os.getpid() % 97) * 20 + 10 * next(_order)
    for i in range(0, span, 10):
        base = _PORTS_FROM + (start + i) % span
        ports = range(base, base + width)
        if any(p in _taken for p in ports):
            continue
        if all(_free(p) for p in ports):
            _taken.update(ports)
            return base
    raise RuntimeError(f"no {width} free ports in {_PORTS_FROM}-{_PORTS_TO}")


def shared_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that the postgres user can reach (mode 0755)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


# -- talking to the servers --------------------------------------------------------------


def connect(dsn: str, **kw: Any) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=5, **kw)


def query(dsn: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with connect(dsn) as conn:
        cur = conn.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


def one(dsn: str, sql: str, args: tuple[Any, ...] = ()) -> Any:
    rows = query(dsn, sql, args)
    return rows[0][0] if rows else None


def execute(dsn: str, *statements: str) -> None:
    with connect(dsn) as conn:
        for statement in statements:
            conn.execute(statement)


def answers(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def in_recovery(dsn: str) -> bool:
    return bool(one(dsn, "SELECT pg_is_in_recovery()"))


def timeline(dsn: str) -> int:
    """A primary's timeline, twice over: its WAL file name and its control file after CHECKPOINT."""
    with connect(dsn) as conn:
        assert not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        walfile = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("CHECKPOINT")
        control = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
    assert int(walfile[:8], 16) == control, f"WAL file {walfile} vs control file TL {control}"
    return int(control)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds, or fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
            last = None
        except Exception as exc:  # a server restarting: keep polling until the deadline
            last = exc
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}" + (f" ({last})" if last else ""))


def lsn_int(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def wait_replayed(primary_dsn: str, standby_dsn: str, timeout: float = WAIT) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    target = lsn_int(one(primary_dsn, "SELECT pg_current_wal_lsn()::text"))
    wait_for(
        "the standby to replay the primary's WAL",
        lambda: (
            lsn_int(one(standby_dsn, "SELECT pg_last_wal_replay_lsn()::text") or "0/0") >= target
        ),
        timeout,
    )


def auto_conf(data_dir: str | Path) -> str:
    return (Path(data_dir) / "postgresql.auto.conf").read_text()


def history_files(data_dir: str | Path) -> list[str]:
    """Timeline history files in a node's pg_wal: one per timeline switch it knows of."""
    return sorted(p.name for p in (Path(data_dir) / "pg_wal").glob("*.history"))


# -- the topologies ----------------------------------------------------------------------


@dataclass
class Node:
    name: str
    dsn: str
    port: int
    data_dir: str
    start_options: str
    host: str

    @classmethod
    def from_status(cls, status: NodeStatus) -> Node:
        return cls(
            status.name, status.dsn, status.port, str(status.data_dir), status.start_options,
            status.host,
        )  # fmt: skip

    def target(self, bin_dir: str, os_user: str) -> dict[str, str]:
        """This node as a postgres target mapping (for step types called directly)."""
        return {
            "type": "postgres", "dsn": self.dsn, "data_dir": self.data_dir,
            "start_options": self.start_options, "bin_dir": bin_dir, "os_user": os_user,
        }  # fmt: skip


@dataclass
class Topology:
    """A live sandbox: node1 starts as the primary, node2, node3, … as its streaming standbys."""

    root: Path
    sandbox: Sandbox
    nodes: tuple[Node, ...]
    bin_dir: str
    os_user: str

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    def params(self) -> dict[str, Any]:
        lines = self.params_file.read_text().splitlines()
        return {k: json.loads(v) for k, _, v in (line.partition(": ") for line in lines)}

    def target(self, node: Node) -> dict[str, str]:
        return node.target(self.bin_dir, self.os_user)

    def target_yaml(self, node: Node, **override: Any) -> str:
        """``node``'s target as an inline YAML mapping for a runbook (None drops a field)."""
        fields = {**self.target(node), **override}
        return (
            "{"
            + ", ".join(f"{k}: {_yaml_str(v)}" for k, v in fields.items() if v is not None)
            + "}"
        )

    def pg_ctl_running(self, node: Node) -> bool:
        from drctl.sandbox.pgnode import as_user

        argv = as_user(
            self.os_user, [str(Path(self.bin_dir) / "pg_ctl"), "status", "-D", node.data_dir]
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return done.returncode == 0

    def start(self, node: Node) -> None:
        """Start a node the test stopped (through the sandbox's own node object)."""
        for n in self.sandbox.nodes:
            if n.name == node.name:
                n.start()


@dataclass
class Pair(Topology):
    """A primary (node1) and one streaming standby (node2)."""

    @property
    def node1(self) -> Node:
        return self.nodes[0]

    @property
    def node2(self) -> Node:
        return self.nodes[1]

    def write_failback_params(self, path: Path) -> Path:
        """The params file with primary_* and standby_* swapped (the runbook's fail-back)."""
        swap = {"primary": "standby", "standby": "primary"}
        out = {}
        for key, value in self.params().items():
            role, sep, rest = key.partition("_")
            out[f"{swap[role]}_{rest}" if sep and role in swap else key] = value
        path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in out.items()))
        return path


@dataclass
class ThreeNodes(Topology):
    """A primary (node1) and two standbys (node2, node3) streaming from it, each under
    its node name as application_name; helpers make a standby lag in one way each."""

    #: primary_conninfo of each standby whose receiving was stopped, to put back.
    _conninfo: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    @property
    def primary(self) -> Node:
        return self.nodes[0]

    @property
    def standbys(self) -> tuple[Node, Node]:
        return self.nodes[1], self.nodes[2]

    def write_wal(self, rows: int = 1000) -> int:
        """Commit ``rows`` rows on the primary; the primary's WAL position after them."""
        execute(
            self.primary.dsn,
            "CREATE TABLE IF NOT EXISTS drctl_wal_filler (id bigserial, pad text)",
            f"INSERT INTO drctl_wal_filler (pad) SELECT repeat('x', 100) FROM generate_series(1, {rows})",
        )
        return self.current_lsn()

    def current_lsn(self) -> int:
        return lsn_int(one(self.primary.dsn, "SELECT pg_current_wal_lsn()::text"))

    def received_lsn(self, node: Node) -> int:
        """How far the standby has received WAL (what a promotion would keep)."""
        return lsn_int(one(node.dsn, "SELECT pg_last_wal_receive_lsn()::text") or "0/0")

    def replayed_lsn(self, node: Node) -> int:
        return lsn_int(one(node.dsn, "SELECT pg_last_wal_replay_lsn()::text") or "0/0")

    def streaming_to(self) -> set[str]:
        """The application_names the primary streams to now (pg_stat_replication)."""
        rows = query(
            self.primary.dsn,
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
        )
        return {str(r[0]) for r in rows}

    def wait_caught_up(self, node: Node) -> None:
        """Until ``node`` has received and replayed everything the primary wrote so far."""
        wait_replayed(self.primary.dsn, node.dsn)

    def pause_replay(self, node: Node) -> None:
        """Stop ``node`` replaying: it keeps receiving WAL but applies none of it."""
        execute(node.dsn, "SELECT pg_wal_replay_pause()")
        wait_for(
            f"{node.name} to pause replay",
            lambda: one(node.dsn, "SELECT pg_get_wal_replay_pause_state()") == "paused",
        )

    def resume_replay(self, node: Node) -> None:
        execute(node.dsn, "SELECT pg_wal_replay_resume()")
        wait_for(
            f"{node.name} to resume replay",
            lambda: one(node.dsn, "SELECT pg_get_wal_replay_pause_state()") == "not paused",
        )

    def stop_receiving(self, node: Node) -> None:
        """End ``node``'s walreceiver (primary_conninfo cleared, reloaded): it receives nothing more."""
        self._conninfo[node.name] = str(one(node.dsn, "SHOW primary_conninfo"))
        execute(node.dsn, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")
        wait_for(
            f"{node.name} to stop receiving",
            lambda: (
                one(node.dsn, "SELECT count(*) FROM pg_stat_wal_receiver") == 0
                and node.name not in self.streaming_to()
            ),
        )

    def resume_receiving(self, node: Node) -> None:
        """Put back the primary_conninfo ``stop_receiving`` cleared; wait until it streams."""
        conninfo = self._conninfo.pop(node.name).replace("'", "''")
        execute(
            node.dsn, f"ALTER SYSTEM SET primary_conninfo = '{conninfo}'", "SELECT pg_reload_conf()"
        )
        wait_for(f"{node.name} to stream again", lambda: node.name in self.streaming_to())


_T = TypeVar("_T", bound=Topology)


@contextlib.contextmanager
def running_sandbox(kind: type[_T], prefix: str, standbys: int) -> Iterator[_T]:
    """A fresh sandbox of ``standbys`` standbys as ``kind``, torn down whatever happens."""
    _skip_without_postgres()
    from drctl.sandbox.pair import Sandbox

    parent = shared_dir(prefix)
    box = Sandbox.at(parent / "sb", free_base_port(width=3), standbys)  # PostgreSQL, DNS, sshd
    try:
        status = box.up()
        nodes = tuple(Node.from_status(n) for n in status.nodes)
        roles = [str(n.role) for n in status.nodes]
        assert roles == ["primary"] + ["standby"] * standbys, roles
        yield kind(box.root, box, nodes, str(status.bin_dir), status.os_user)
    finally:
        try:
            box.down()
        finally:
            shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def sandbox() -> Iterator[Pair]:
    """A fresh primary + standby for one test that changes the topology."""
    with running_sandbox(Pair, "drctl-pg-", 1) as pair:
        yield pair


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[Pair]:
    """One primary + standby for a module whose tests put back whatever they change."""
    with running_sandbox(Pair, "drctl-pgm-", 1) as pair:
        yield pair


@pytest.fixture
def three_nodes() -> Iterator[ThreeNodes]:
    """A fresh primary + two streaming standbys for one test that changes the topology."""
    with running_sandbox(ThreeNodes, "drctl-pg3-", 2) as topology:
        yield topology


@pytest.fixture(scope="module")
def shared_three_nodes() -> Iterator[ThreeNodes]:
    """One primary + two standbys for a module whose tests put back whatever they change."""
    with running_sandbox(ThreeNodes, "drctl-pg3m-", 2) as topology:
        yield topology


# -- the CLI and its journal -----------------------------------------------------------------


def drctl(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh interpreter, bounded by CLI_TIMEOUT."""
    return run_cli(*args, env=dict(env or {}), timeout=CLI_TIMEOUT)


def journal(state: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """A run's events (the most recent run by default), from ``drctl log --output json``."""
    if run_id is None:
        listed = drctl("runs", "--output", "json", "--state", str(state))
        assert listed.returncode == 0, listed.stderr
        run_id = _first_run_id(listed.stdout)
    done = drctl("log", run_id, "--output", "json", "--state", str(state))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _first_run_id(text: str) -> str:
    """The newest run's id from ``drctl runs --output json`` (a JSON list, newest first)."""
    return str(json.loads(text)[0]["id"])


def run_id_of(result: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"run (\d{8}-\d{6}-[0-9a-f]+) started", result.stdout)
    assert found, f"no run id in output:\n{result.stdout}\n{result.stderr}"
    return found.group(1)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# -- calling step types directly ---------------------------------------------------------------


class RealContext(FakeContext):
    """FakeContext with a real clock: sleeps sleep, and the deadline is wall time.

    The provider's steps poll real servers (a reload taking effect, a node starting
    to stream), so a fake clock that only adds numbers would make them give up at once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = time.monotonic() + self.timeout

    def remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        time.sleep(max(0.0, min(seconds, self.remaining())))


def _yaml_str(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
