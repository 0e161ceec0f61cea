"""A PostgreSQL server that does not answer, or a DSN that does not parse, through the real CLI.

A fence interrupted by kill -9 and resumed once the old primary stopped answering must
not count as in effect; a lag check against a primary that does not answer must say its
position is unknown; a malformed DSN holding a password fails the step with a message
that quotes none of it. The old primary is made unreachable by pointing its target (a
``${env:…}`` DSN, outside the plan hash) at a port nobody listens on, or by stopping it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drctl.errors import Unreachable
from drctl.providers.postgres.fence import Fence, FenceInputs
from drctl.providers.postgres.lag import LagInputs, ReplicationLag
from tests.integration.pg_sandbox import (
    Pair,
    RealContext,
    answers,
    auto_conf,
    drctl,
    execute,
    explain,
    free_port,
    journal,
    one,
    run_id_of,
    shared_sandbox,  # noqa: F401
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

READ_ONLY_LINE = "default_transaction_read_only = 'on'"

_RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata: {{name: {name}}}
targets:
  old_primary: {{type: postgres, dsn: "${{env:OLD_DSN}}", data_dir: "{data_dir}",
                bin_dir: "{bin_dir}", os_user: "{os_user}"}}
  standby: {{type: postgres, dsn: "${{env:STANDBY_DSN}}"}}
settings: {{step_timeout: 30s}}
steps:
{steps}
"""


def _write(tmp_path: Path, pair: Pair, name: str, steps: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        _RUNBOOK.format(
            name=name,
            data_dir=pair.node1.data_dir,
            bin_dir=pair.bin_dir,
            os_user=pair.os_user,
            steps=steps,
        )
    )
    return str(path)


def _nobody() -> str:
    dsn = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=2"
    assert not answers(dsn)
    return dsn


def _env(pair: Pair, old: str | None = None, **extra: str) -> dict[str, str]:
    return {"OLD_DSN": old or pair.node1.dsn, "STANDBY_DSN": pair.node2.dsn, **extra}


def _events(events: list[dict[str, Any]], step: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["step"] == step and e["kind"] == kind]


@pytest.fixture
def unfenced(shared_sandbox: Pair) -> Iterator[Pair]:  # noqa: F811
    """The shared pair, with node1 writable again afterwards whatever the test left."""
    yield shared_sandbox
    pair = shared_sandbox
    if not pair.pg_ctl_running(pair.node1):
        pair.start(pair.node1)
    execute(
        pair.node1.dsn,
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
    )
    wait_for(
        "node1 to take writes again",
        lambda: one(pair.node1.dsn, "SHOW default_transaction_read_only") == "off",
    )


# -- 1. "does not answer" is not "fenced" ---------------------------------------------------


@contextlib.contextmanager
def _black_hole() -> Iterator[str]:
    """A DSN whose port completes TCP handshakes and then never says a word (a partition
    that drops replies): libpq waits until its connect timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # never accepted: the kernel queues the connection, nobody answers
        port = listener.getsockname()[1]
        yield f"host=127.0.0.1 port={port} dbname=postgres user=postgres connect_timeout=2"


@contextlib.contextmanager
def _closed_port() -> Iterator[str]:
    yield _nobody()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("fault", "silence"),
    [("event:2", _closed_port), ("after-apply:fence", _closed_port), ("event:2", _black_hole)],
    ids=["at-fence-started", "after-fence-apply", "at-fence-started-black-hole"],
)
def test_fence_resumed_while_the_old_primary_does_not_answer_is_not_verified(
    unfenced: Pair, tmp_path: Path, fault: str, silence: Any
) -> None:
    """A fence killed -9 and resumed with the old primary unreachable fails saying it did not answer, never 'verified on resume'."""
    pair = unfenced
    state = str(tmp_path / "state.db")
    fence = _write(
        tmp_path,
        pair,
        "fence-unreachable",
        "  - {id: fence, type: postgres.fence, target: old_primary, with: {mode: read_only}}\n",
    )
    killed = drctl("run", fence, "--yes", "--state", state, env=_env(pair, DRCTL_FAULT=fault))
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    before = journal(tmp_path / "state.db")
    assert before[-1]["step"] == "fence", before[-1]
    assert not _events(before, "fence", "step_succeeded")
    if fault.startswith("event:"):
        # Killed at the fence's intent: nothing was fenced, the old primary still writes.
        assert before[-1]["kind"] == "step_started", before[-1]
        assert READ_ONLY_LINE not in auto_conf(pair.node1.data_dir)

    # The old primary's address stops answering (a partition, from drctl's side).
    with silence() as unreachable:
        resumed = drctl("resume", "--last", "--yes", "--state", state, env=_env(pair, unreachable))
    assert resumed.returncode == 1, explain(resumed)
    out = resumed.stdout + resumed.stderr
    assert "verified on resume" not in out, explain(resumed)
    assert "the server did not answer" in out, explain(resumed)
    assert "internal error" not in out and "Traceback" not in out

    events = journal(tmp_path / "state.db")
    assert not _events(events, "fence", "step_succeeded"), "an unreachable server counted as fenced"
    failed = _events(events, "fence", "step_failed")
    assert failed and "the server did not answer" in failed[-1]["data"]["error"], failed
    assert events[-1]["kind"] == "run_finished"
    assert events[-1]["data"]["status"] != "succeeded"

    status = drctl("status", "--output", "json", "--state", state)
    assert status.returncode == 0, explain(status)
    steps = {s["id"]: s for s in json.loads(status.stdout)["steps"]}
    assert steps["fence"]["status"] == "failed", steps["fence"]
    assert "did not answer" in steps["fence"]["error"]


@pytest.mark.integration
def test_stop_fence_resumed_while_its_dsn_does_not_answer_stops_the_server(
    unfenced: Pair, tmp_path: Path
) -> None:
    """A stop fence killed at its start, resumed with its DSN unreachable, is not verified but applied: pg_ctl stops the server."""
    pair = unfenced
    state = str(tmp_path / "state.db")
    fence = _write(
        tmp_path,
        pair,
        "fence-stop",
        "  - {id: fence, type: postgres.fence, target: old_primary, with: {mode: stop}}\n",
    )
    killed = drctl("run", fence, "--yes", "--state", state, env=_env(pair, DRCTL_FAULT="event:2"))
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    assert pair.pg_ctl_running(pair.node1)

    resumed = drctl("resume", "--last", "--yes", "--state", state, env=_env(pair, _nobody()))
    assert resumed.returncode == 0, explain(resumed)
    assert "verified on resume" not in resumed.stdout, explain(resumed)
    assert "not in effect; applying again" in resumed.stdout, explain(resumed)
    # Only pg_ctl status saying "stopped" proved the fence, and it is true.
    assert not pair.pg_ctl_running(pair.node1)
    done = _events(journal(tmp_path / "state.db"), "fence", "step_succeeded")
    assert len(done) == 1 and not done[0]["data"].get("verified_on_resume"), done


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["read_only", "hard"])
def test_fence_verify_of_a_server_that_does_not_answer_raises(mode: str, tmp_path: Path) -> None:
    """verify of a read_only or hard fence whose server does not answer raises Unreachable saying so, never True or a silent False."""
    target = {"type": "postgres", "dsn": _nobody(), "data_dir": str(tmp_path / "data")}
    socket = {"directory": str(tmp_path), "port": 5432, "user": "postgres", "database": "postgres"}
    ctx = RealContext(
        FenceInputs(mode=mode), target=target, recorded={"socket": socket}, timeout=30.0
    )
    with pytest.raises(Unreachable, match="the server did not answer"):
        Fence().verify(ctx)


@pytest.mark.integration
def test_dry_run_of_a_fence_on_a_server_that_does_not_answer_says_it_cannot_be_fenced(
    unfenced: Pair, tmp_path: Path
) -> None:
    """A dry run's check of a read_only fence whose server does not answer says it cannot be fenced, not that there is nothing to fence."""
    pair = unfenced
    fence = _write(
        tmp_path,
        pair,
        "fence-dry",
        "  - {id: fence, type: postgres.fence, target: old_primary, with: {mode: read_only}}\n",
    )
    dry = drctl(
        "run", fence, "--dry-run", "--state", str(tmp_path / "state.db"),
        env=_env(pair, _nobody()),
    )  # fmt: skip
    out = dry.stdout + dry.stderr
    assert "cannot be fenced or shown to be fenced" in out, explain(dry)
    assert "nothing to fence" not in out


# -- 2. a lag check with the primary unreachable ------------------------------------------

_LAG = (
    "  - id: lag\n    type: postgres.replication_lag\n    target: standby\n"
    "    with: {{primary: old_primary, max_bytes: 16777216{extra}}}\n"
)


@pytest.mark.integration
def test_lag_check_with_the_primary_stopped_fails_unless_told_to_warn(
    unfenced: Pair, tmp_path: Path
) -> None:
    """With the primary stopped the lag check fails saying its position is unknown; with warn it passes, lag_bytes null, never 0."""
    pair = unfenced
    state = str(tmp_path / "state.db")
    subprocess.run(_pg_ctl_stop(pair), check=True, capture_output=True, timeout=60)
    assert not answers(pair.node1.dsn)

    blind = _write(tmp_path, pair, "lag-fail", _LAG.format(extra=""))
    failed = drctl("run", blind, "--yes", "--state", state, env=_env(pair))
    assert failed.returncode == 1, explain(failed)
    assert "primary's WAL position is unknown" in failed.stderr, explain(failed)
    assert "may lose writes" in failed.stderr
    assert "primary_unreachable: warn" in failed.stderr
    assert "measured on standby only" not in failed.stdout + failed.stderr

    warn = _write(tmp_path, pair, "lag-warn", _LAG.format(extra=", primary_unreachable: warn"))
    warned = drctl("run", warn, "--yes", "--state", state, env=_env(pair))
    assert warned.returncode == 0, explain(warned)
    assert "warning: the primary's WAL position is unknown" in warned.stdout, explain(warned)
    assert "0 bytes (measured on standby only)" not in warned.stdout
    done = _events(journal(tmp_path / "state.db"), "lag", "step_succeeded")
    outputs = done[0]["data"]["outputs"]
    assert outputs["primary_position"] == "unknown"
    assert outputs["lag_bytes"] is None, outputs
    assert outputs["primary_reachable"] is False
    assert outputs["primary_lsn"] is None
    assert isinstance(outputs["standby_lag_bytes"], int)


@pytest.mark.integration
def test_lag_against_a_primary_that_is_in_recovery_is_unknown(unfenced: Pair) -> None:
    """A server named as the primary that is itself in recovery gives no primary position: unknown, not measured on the standby alone."""
    pair = unfenced
    targets = {"not_primary": pair.target(pair.node2)}
    inputs = LagInputs(primary="not_primary", primary_unreachable="warn")
    ctx = RealContext(inputs, target=pair.target(pair.node2), targets=targets, timeout=30.0)
    ReplicationLag().apply(ctx)
    assert ctx.outputs["primary_position"] == "unknown"
    assert ctx.outputs["lag_bytes"] is None
    assert "the server named as primary is in recovery" in ctx.lines[-1]


def _pg_ctl_stop(pair: Pair) -> list[str]:
    from drctl.sandbox.pgnode import as_user

    pg_ctl = str(Path(pair.bin_dir) / "pg_ctl")
    return as_user(pair.os_user, [pg_ctl, "stop", "-w", "-m", "fast", "-D", pair.node1.data_dir])


# -- 3. a DSN that does not parse ------------------------------------------------------------

#: Each half of the password, as libpq's parse error would quote the second.
_HALVES = ("Kv3firsthalf", "Wq9secondhalf")


@pytest.mark.integration
def test_malformed_dsn_fails_the_step_without_quoting_its_password(
    unfenced: Pair, tmp_path: Path
) -> None:
    """A target DSN libpq cannot parse fails its step (exit 1) with a clear error, and no piece of its password is in any output or the journal."""
    pair = unfenced
    state = tmp_path / "state.db"
    port = pair.node1.port
    broken = (
        f"host=127.0.0.1 port={port} user=postgres password={' '.join(_HALVES)} dbname=postgres"
    )
    probe = _write(
        tmp_path,
        pair,
        "bad-dsn",
        "  - {id: probe, type: postgres.write_probe, target: old_primary}\n",
    )
    result = drctl("run", probe, "--yes", "--state", str(state), env=_env(pair, broken))
    assert result.returncode == 1, explain(result)
    out = result.stdout + result.stderr
    assert "not a valid libpq connection string" in out, explain(result)
    assert "internal error" not in out and "Traceback" not in out, explain(result)

    log = drctl("log", run_id_of(result), "--state", str(state))
    status = drctl("status", "--output", "json", "--state", str(state))
    failed = _events(journal(state), "probe", "step_failed")
    assert failed and "not a valid libpq connection string" in failed[-1]["data"]["error"]
    assert not failed[-1]["data"].get("traceback")
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    for half in _HALVES:
        for where, text in (("run", out), ("log", log.stdout + log.stderr),
                            ("status", status.stdout + status.stderr)):  # fmt: skip
            assert half not in text, f"{half} in {where} output"
        assert half.encode() not in stored, f"{half} in the state store"
