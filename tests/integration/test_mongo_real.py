"""The MongoDB steps against a real replica set: three ``mongod`` on loopback.

These tests run wherever ``mongod`` is on PATH. They are the one allowed exception to
the rule that a missing service fails under DRCTL_REQUIRE_SERVICES=1: no ``mongod``
can be installed from this project's package registries, so without one on PATH they
skip, in CI too. The same steps are covered over the wire by the mockupdb tests
(test_mongo_steps.py, test_mongo_runbooks.py), which never skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drctl.providers.mongo.elect import Elect, ElectInputs
from drctl.providers.mongo.freeze import Freeze, FreezeInputs
from drctl.providers.mongo.probe import ProbeInputs, WriteProbe
from drctl.providers.mongo.reconfig import MemberChange, Reconfig, ReconfigInputs
from drctl.providers.mongo.status import ReplicaSetStatus, StatusInputs
from drctl.providers.mongo.step_down import StepDown, StepDownInputs
from drctl.steps.base import StepInputs
from tests.integration.mongo_fixtures import RealContext

MONGOD = shutil.which("mongod")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        MONGOD is None,
        reason="mongod is not on PATH (none can be installed from this machine's package "
        "registries); the mockupdb tests cover these steps",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # a server still starting answers with errors
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _client(host: str) -> Any:
    from pymongo import MongoClient

    return MongoClient(
        f"mongodb://{host}/?directConnection=true",
        serverSelectionTimeoutMS=1000,
        connectTimeoutMS=1000,
    )


def _hello(host: str) -> dict[str, Any]:
    with _client(host) as client:
        return dict(client.admin.command("hello"))


def _answers(host: str) -> Callable[[], bool]:
    return lambda: bool(_hello(host))


@dataclass
class RealSet:
    """Three mongod processes forming replica set rs0 on 127.0.0.1."""

    hosts: list[str]
    procs: list[subprocess.Popen[bytes]]

    @property
    def uri(self) -> str:
        return self.uri_of(self.hosts)

    @staticmethod
    def uri_of(hosts: list[str]) -> str:
        return f"mongodb://{','.join(hosts)}/?replicaSet=rs0&serverSelectionTimeoutMS=2000"

    def primary(self) -> str | None:
        for host in self.hosts:
            try:
                if _hello(host).get("isWritablePrimary"):
                    return host
            except Exception:  # a stopped member
                continue
        return None

    def stop(self, index: int) -> None:
        proc = self.procs[index]
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def real_rs(tmp_path: Path) -> Iterator[RealSet]:
    """Three mongod on free loopback ports, initiated with member 0 preferred as primary."""
    assert MONGOD is not None
    ports = [_free_port() for _ in range(3)]
    hosts = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    for i, port in enumerate(ports):
        data = tmp_path / f"m{i}"
        data.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    MONGOD, "--replSet", "rs0", "--port", str(port), "--bind_ip", "127.0.0.1",
                    "--dbpath", str(data), "--logpath", str(tmp_path / f"m{i}.log"),
                    "--oplogSize", "64", "--wiredTigerCacheSizeGB", "0.25",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    rs = RealSet(hosts, procs)
    try:
        for host in hosts:
            _wait(f"{host} to start", _answers(host))
        with _client(hosts[0]) as client:
            client.admin.command(
                "replSetInitiate",
                {
                    "_id": "rs0",
                    "members": [
                        {"_id": i, "host": h, "priority": 2 if i == 0 else 1}
                        for i, h in enumerate(hosts)
                    ],
                    "settings": {"electionTimeoutMillis": 2000},
                },
            )
        _wait("member 0 to be primary", lambda: rs.primary() == hosts[0])
        _wait(
            "both secondaries",
            lambda: all(_hello(h).get("secondary") for h in hosts[1:]),
        )
        yield rs
    finally:
        for i in range(len(procs)):
            if procs[i].poll() is None:
                rs.stop(i)


def _ctx(inputs: StepInputs, uri: str, **kw: Any) -> RealContext:
    return RealContext(inputs, target={"type": "mongo", "uri": uri}, timeout=90.0, **kw)


@pytest.mark.integration
def test_planned_failover_on_real_mongod(real_rs: RealSet) -> None:
    """On real mongod: status, freeze, step-down, elect, write probe and a reconfig with undo all do what they say."""
    a, b, c = real_rs.hosts
    status = _ctx(StatusInputs(member=c, max_lag_seconds=30), real_rs.uri)
    ReplicaSetStatus().apply(status)
    assert status.outputs["primary"] == a
    assert status.outputs["majority_reachable"] is True

    freeze = _ctx(FreezeInputs(members=[b], seconds=60), real_rs.uri)
    Freeze().apply(freeze)
    assert Freeze().verify(freeze)

    down = _ctx(StepDownInputs(step_down_seconds=60, catch_up_seconds=10), real_rs.uri)
    StepDown().check(down)
    StepDown().apply(down)
    assert StepDown().verify(down)

    elect = _ctx(ElectInputs(member=c, step_down_seconds=60, catch_up_seconds=10), real_rs.uri)
    Elect().apply(elect)
    assert Elect().verify(elect)
    assert real_rs.primary() == c

    probe = _ctx(ProbeInputs(deadline=30.0), real_rs.uri)
    WriteProbe().apply(probe)
    assert probe.outputs["primary"] == c

    change = _ctx(ReconfigInputs(members=[MemberChange(host=a, priority=0.5)]), real_rs.uri)
    Reconfig().apply(change)
    assert Reconfig().verify(change)
    Reconfig().undo(change)
    assert not Reconfig().verify(change)

    Freeze().undo(freeze)
    Elect().undo(elect)


@pytest.mark.integration
def test_regional_disaster_on_real_mongod(real_rs: RealSet) -> None:
    """On real mongod: with two of three members gone, a forced reconfig lets the survivor become primary and take majority writes."""
    a, b, c = real_rs.hosts
    real_rs.stop(0)
    real_rs.stop(1)
    survivors = RealSet.uri_of([c])
    _wait(f"{c} to see no primary", lambda: not _hello(c).get("primary"), timeout=30)
    status = _ctx(StatusInputs(require_majority=False), survivors)
    ReplicaSetStatus().apply(status)
    assert status.outputs["majority_reachable"] is False

    forced = _ctx(
        ReconfigInputs(remove=[a, b], force=True, accept_data_loss=True, via=c), survivors
    )
    Reconfig().apply(forced)
    assert Reconfig().verify(forced)
    probe = _ctx(ProbeInputs(deadline=60.0), survivors)
    WriteProbe().apply(probe)
    assert probe.outputs["primary"] == c


@pytest.mark.integration
def test_planned_failover_drill_on_real_mongod(real_rs: RealSet, tmp_path: Path) -> None:
    """On real mongod: a drill of the planned failover with the MongoDB canary loses no majority write."""
    import json

    from tests.conftest import run_cli

    _a, b, c = real_rs.hosts
    report = tmp_path / "drill.json"
    done = run_cli(
        "drill", "runbooks/mongo-planned-failover.yaml", "-p", f"new_primary={c}",
        "-p", f"hold={b}", "--yes", "--state", str(tmp_path / "state.db"),
        "--canary", "mongo", "--canary-dsn", real_rs.uri, "--report", str(report),
        env={"MONGO_URI": real_rs.uri}, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    data = json.loads(report.read_text())
    m = data["measurement"]
    assert data["passed"] and m["missing"] == 0, data
    # The canary followed the election: the new primary acknowledged writes after the first
    # mutating step (how many writes there were is the machine's speed).
    assert m["new_primary_address"] == c and m["first_new_primary_ack_at"] is not None, m
    with _client(c) as client:
        held = client["drctl"]["drctl_canary"].count_documents({"drill_id": data["drill_id"]})
    assert held >= m["acknowledged"]
