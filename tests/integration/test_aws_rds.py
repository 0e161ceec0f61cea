"""aws.rds_failover against moto's RDS server, and through the CLI.

What moto does, and so what is tested where: ``FailoverDBCluster`` moves the Aurora
writer at once (the cluster never shows ``failing-over``), so the Aurora path —
check, apply, verify, undo, dry run, refusal by moto's IAM simulation, kill -9 and
resume — runs against moto's server. ``RebootDBInstance`` with ``ForceFailover`` is
accepted but changes nothing (the primary stays in its AZ, and moto reports no
``SecondaryAvailabilityZone``), so against moto the Multi-AZ step must fail at its
deadline, which is tested; the Multi-AZ failover itself (rebooting → available in the
other AZ) and the in-progress states are tested with botocore's ``Stubber``.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from drctl.errors import StepError
from drctl.providers.aws.rds import AZ_BEFORE, WRITER_BEFORE, RdsFailover, RdsFailoverInputs
from drctl.providers.aws.session import Aws, NotFound
from drctl.testing import FakeContext
from tests.integration.moto_server import (  # noqa: F401
    DUMMY_SECRET,
    MotoServer,
    aws_env_fixture,
    moto_fixture,
    moto_server_fixture,
)
from tests.integration.pg_sandbox import RealContext, drctl, explain, journal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REGION = "us-west-2"


def _rds(moto: MotoServer) -> Any:
    return boto3.client("rds", endpoint_url=moto.endpoint, region_name=REGION)


def _aurora(moto: MotoServer, name: str = "pay", size: int = 2) -> None:
    """An Aurora PostgreSQL cluster with ``size`` instances; ``<name>-1`` is the writer."""
    rds = _rds(moto)
    rds.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql",
                          MasterUsername="app", MasterUserPassword="not-a-real-password")  # fmt: skip
    for i in range(1, size + 1):
        rds.create_db_instance(DBInstanceIdentifier=f"{name}-{i}", DBClusterIdentifier=name,
                               Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")  # fmt: skip
    moto.forget_requests()


def _writer(moto: MotoServer, name: str = "pay") -> str:
    cluster = _rds(moto).describe_db_clusters(DBClusterIdentifier=name)["DBClusters"][0]
    (writer,) = [
        m["DBInstanceIdentifier"] for m in cluster["DBClusterMembers"] if m["IsClusterWriter"]
    ]
    return str(writer)


def _target(moto: MotoServer) -> dict[str, Any]:
    return {"type": "aws", "region": REGION, "endpoint_url": moto.endpoint}


def _ctx(inputs: RdsFailoverInputs, moto: MotoServer, **kw: Any) -> RealContext:
    return RealContext(inputs, target=_target(moto), timeout=30.0, **kw)


def _failover(**kw: Any) -> RdsFailoverInputs:
    return RdsFailoverInputs.model_validate({"cluster": "pay", "target_instance": "pay-2", **kw})


# -- Aurora, against moto -------------------------------------------------------------------


def test_aurora_check_apply_verify_undo(moto: MotoServer) -> None:
    """check shows writer a → b, apply records the old writer and moves it, verify reads it back, undo moves it back."""
    _aurora(moto)
    ctx = _ctx(_failover(poll_interval=0.1), moto)
    assert RdsFailover().check(ctx) == "fail Aurora cluster pay over: writer pay-1 → pay-2"
    assert moto.count("FailoverDBCluster") == 0
    assert RdsFailover().verify(ctx) is False

    RdsFailover().apply(ctx)
    assert ctx.recorded == {WRITER_BEFORE: "pay-1"}
    assert ctx.outputs == {"previous_writer": "pay-1", "writer": "pay-2"}
    assert _writer(moto) == "pay-2"
    assert RdsFailover().verify(ctx) is True

    RdsFailover().undo(ctx)
    assert _writer(moto) == "pay-1"
    assert RdsFailover().verify(ctx) is False
    assert moto.count("FailoverDBCluster") == 2


def test_aurora_sends_nothing_when_the_target_is_the_writer(moto: MotoServer) -> None:
    """A target that is the writer already is reported by check, not failed over again, and not undone."""
    _aurora(moto)
    ctx = _ctx(_failover(target_instance="pay-1"), moto)
    assert (
        RdsFailover().check(ctx) == "do nothing: pay-1 is the writer of Aurora cluster pay already"
    )
    RdsFailover().apply(ctx)
    assert ctx.recorded == {}
    assert RdsFailover().verify(ctx) is True
    RdsFailover().undo(ctx)
    assert "nothing to undo" in ctx.lines[-1]
    assert moto.count("FailoverDBCluster") == 0


def test_aurora_check_refuses_what_cannot_fail_over(moto: MotoServer) -> None:
    """check fails on a missing cluster, a target outside it, and an unavailable cluster, sending nothing."""
    _aurora(moto)
    _aurora(moto, "solo", size=1)
    with pytest.raises(NotFound, match="rds DescribeDBClusters: DBClusterNotFoundFault"):
        RdsFailover().check(_ctx(_failover(cluster="nope"), moto))
    with pytest.raises(
        StepError, match=r"pay-9 is not an instance of cluster pay \(members: pay-1, pay-2\)"
    ):
        RdsFailover().check(_ctx(_failover(target_instance="pay-9"), moto))
    _rds(moto).stop_db_cluster(DBClusterIdentifier="pay")
    with pytest.raises(
        StepError, match="cluster pay is stopped: fail over only from an available state"
    ):
        RdsFailover().check(_ctx(_failover(), moto))
    assert moto.count("FailoverDBCluster") == 0


def test_inputs_say_which_failover_and_to_where() -> None:
    """cluster needs target_instance, instance needs to_az; the two exclude each other; ids are not empty."""
    for bad, message in (
        ({"cluster": "pay"}, "cluster needs target_instance"),
        ({"cluster": "pay", "target_instance": "b", "instance": "db"}, "not both or neither"),
        ({}, "not both or neither"),
        ({"instance": "db"}, "instance needs to_az"),
        ({"instance": "db", "to_az": "b", "target_instance": "b"}, "target_instance goes with"),
        ({"cluster": "pay", "target_instance": "b", "to_az": "a"}, "to_az goes with instance"),
        ({"cluster": "", "target_instance": "b"}, "at least 1 character"),
    ):
        with pytest.raises(ValueError, match=message):
            RdsFailoverInputs.model_validate(bad)


# -- Multi-AZ: what moto does, and the real path with a Stubber -------------------------------


def test_multi_az_reboot_is_accepted_by_moto_but_moves_nothing(moto: MotoServer) -> None:
    """moto accepts a reboot with failover but the primary stays put, so apply fails at its deadline, saying where it stands."""
    rds = _rds(moto)
    rds.create_db_instance(DBInstanceIdentifier="orders", Engine="postgres", MultiAZ=True,
                           DBInstanceClass="db.m6g.large", AllocatedStorage=20,
                           MasterUsername="app", MasterUserPassword="not-a-real-password")  # fmt: skip
    rds.create_db_instance(DBInstanceIdentifier="single", Engine="postgres",
                           DBInstanceClass="db.m6g.large", AllocatedStorage=20,
                           MasterUsername="app", MasterUserPassword="not-a-real-password")  # fmt: skip
    moto.forget_requests()
    inputs = RdsFailoverInputs(instance="orders", to_az="us-west-2b", wait=0.6, poll_interval=0.2)
    ctx = _ctx(inputs, moto)
    assert (
        RdsFailover().check(ctx)
        == "move the primary of orders us-west-2a → us-west-2b (reboot with failover)"
    )
    with pytest.raises(
        StepError,
        match=r"orders reboot with failover not done in time: orders available, primary in us-west-2a",
    ):
        RdsFailover().apply(ctx)
    assert ctx.recorded == {AZ_BEFORE: "us-west-2a"}
    assert ctx.slept == pytest.approx([0.2, 0.2])
    assert moto.count("RebootDBInstance") == 1
    with pytest.raises(StepError, match="single is not Multi-AZ"):
        RdsFailover().check(_ctx(RdsFailoverInputs(instance="single", to_az="us-west-2b"), moto))


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    """A real rds client with a Stubber attached (no network)."""
    client = boto3.client("rds", region_name=REGION, aws_access_key_id="AKIDSTUB",
                          aws_secret_access_key="stub-secret")  # fmt: skip
    with Stubber(client) as stub:
        yield client, stub


class _Stubbed(RdsFailover):
    """aws.rds_failover on a stubbed client."""

    def __init__(self, client: Any) -> None:
        self.stubbed = client

    def client(self, ctx: Any) -> Aws:
        return Aws(self.stubbed, "rds")


def _db(status: str, az: str) -> dict[str, Any]:
    return {"DBInstances": [{"DBInstanceIdentifier": "orders", "DBInstanceStatus": status,
                             "AvailabilityZone": az, "SecondaryAvailabilityZone": "us-west-2b",
                             "MultiAZ": True}]}  # fmt: skip


def test_multi_az_failover_waits_for_the_primary_to_move(stubbed: tuple[Any, Stubber]) -> None:
    """apply reboots with ForceFailover and polls through 'available' and 'rebooting' until the primary is in the other AZ."""
    client, stub = stubbed
    stub.add_response(
        "describe_db_instances", _db("available", "us-west-2a"), {"DBInstanceIdentifier": "orders"}
    )
    stub.add_response("reboot_db_instance", {"DBInstance": {"DBInstanceIdentifier": "orders"}},
                      {"DBInstanceIdentifier": "orders", "ForceFailover": True})  # fmt: skip
    for status, az in (("available", "us-west-2a"), ("rebooting", "us-west-2a"),
                       ("rebooting", "us-west-2b"), ("available", "us-west-2b")):  # fmt: skip
        stub.add_response("describe_db_instances", _db(status, az))
    ctx = FakeContext(
        RdsFailoverInputs(instance="orders", to_az="us-west-2b", poll_interval=10), target={}
    )
    _Stubbed(client).apply(ctx)
    assert ctx.recorded == {AZ_BEFORE: "us-west-2a"}
    assert ctx.outputs == {"previous_az": "us-west-2a", "primary_az": "us-west-2b"}
    assert ctx.slept == [10.0, 10.0, 10.0]
    stub.assert_no_pending_responses()

    # verify (as on resume) waits while the instance is rebooting, then answers.
    stub.add_response("describe_db_instances", _db("rebooting", "us-west-2a"))
    stub.add_response("describe_db_instances", _db("available", "us-west-2b"))
    assert _Stubbed(client).verify(ctx) is True
    stub.add_response("describe_db_instances", _db("available", "us-west-2a"))
    assert _Stubbed(client).verify(ctx) is False  # stable and not moved: no waiting
    stub.assert_no_pending_responses()

    # A check whose standby is not in to_az refuses, and undo reboots back to the recorded AZ.
    stub.add_response("describe_db_instances", _db("available", "us-west-2a"))
    wrong = FakeContext(RdsFailoverInputs(instance="orders", to_az="us-west-2c"), target={})
    with pytest.raises(StepError, match="standby is in us-west-2b, not us-west-2c"):
        _Stubbed(client).check(wrong)
    stub.add_response("describe_db_instances", _db("available", "us-west-2b"))
    stub.add_response("reboot_db_instance", {"DBInstance": {"DBInstanceIdentifier": "orders"}})
    stub.add_response("describe_db_instances", _db("available", "us-west-2a"))
    _Stubbed(client).undo(ctx)
    assert ctx.lines[-1] == "orders: primary back in us-west-2a"
    stub.assert_no_pending_responses()


def test_aurora_apply_waits_out_failing_over(stubbed: tuple[Any, Stubber]) -> None:
    """After FailoverDBCluster, apply polls through failing-over until the target is the available writer."""
    client, stub = stubbed

    def cluster(status: str, writer: str) -> dict[str, Any]:
        members = [
            {"DBInstanceIdentifier": i, "IsClusterWriter": i == writer} for i in ("pay-1", "pay-2")
        ]
        return {
            "DBClusters": [
                {"DBClusterIdentifier": "pay", "Status": status, "DBClusterMembers": members}
            ]
        }

    def instance(status: str) -> dict[str, Any]:
        return {"DBInstances": [{"DBInstanceIdentifier": "pay-2", "DBInstanceStatus": status}]}

    stub.add_response("describe_db_clusters", cluster("available", "pay-1"))
    stub.add_response("failover_db_cluster", {"DBCluster": {"DBClusterIdentifier": "pay"}},
                      {"DBClusterIdentifier": "pay", "TargetDBInstanceIdentifier": "pay-2"})  # fmt: skip
    for state, writer, inst in (("failing-over", "pay-1", "available"),
                                ("failing-over", "pay-2", "rebooting"),
                                ("available", "pay-2", "available")):  # fmt: skip
        stub.add_response("describe_db_clusters", cluster(state, writer))
        stub.add_response("describe_db_instances", instance(inst))
    ctx = FakeContext(_failover(poll_interval=5), target={})
    _Stubbed(client).apply(ctx)
    assert ctx.slept == [5.0, 5.0]
    stub.assert_no_pending_responses()

    stub.add_response("describe_db_clusters", cluster("failing-over", "pay-1"))
    stub.add_response("describe_db_instances", instance("available"))
    stub.add_response("describe_db_clusters", cluster("failing-over", "pay-1"))
    stub.add_response("describe_db_instances", instance("available"))
    late = FakeContext(
        _failover(poll_interval=5, wait=8), target={}, recorded={WRITER_BEFORE: "pay-1"}
    )
    assert _Stubbed(client).verify(late) is False  # still failing over at its wait: not in effect
    assert late.slept == [5.0]
    stub.assert_no_pending_responses()


# -- through the CLI -------------------------------------------------------------------------


def _runbook(tmp_path: Path, endpoint: str, ack: str = "    acknowledge: [DR001, DR002]\n") -> str:
    path = tmp_path / "aurora.yaml"
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: aurora-failover}\n"
        f'targets:\n  db: {{type: aws, region: {REGION}, endpoint_url: "{endpoint}"}}\n'
        "settings: {step_timeout: 30s}\n"
        "steps:\n"
        "  - id: failover\n    type: aws.rds_failover\n    target: db\n"
        "    with: {cluster: pay, target_instance: pay-2, poll_interval: 0.2s}\n" + ack
    )
    return str(path)


def test_lints_want_an_acknowledgement_for_the_promote(moto: MotoServer, tmp_path: Path) -> None:
    """The step is a promote: without DR001/DR002 acknowledged the runbook is invalid; with them it plans."""
    bare = drctl("validate", _runbook(tmp_path, moto.endpoint, ack=""))
    assert bare.returncode == 2, explain(bare)
    assert "DR001" in bare.stdout + bare.stderr and "DR002" in bare.stdout + bare.stderr
    acked = drctl("plan", _runbook(tmp_path, moto.endpoint))
    assert acked.returncode == 0, explain(acked)
    assert "fail Aurora cluster pay over to pay-2" in acked.stdout


def test_dry_run_shows_the_writer_change_and_changes_nothing(
    moto: MotoServer, tmp_path: Path
) -> None:
    """`drctl run --dry-run` shows writer pay-1 → pay-2 and leaves the writer and the journal's records alone."""
    _aurora(moto)
    state = tmp_path / "state.db"
    dry = drctl("run", _runbook(tmp_path, moto.endpoint), "--dry-run", "--state", str(state))
    assert dry.returncode == 0, explain(dry)
    assert "would fail Aurora cluster pay over: writer pay-1 → pay-2" in dry.stdout
    assert _writer(moto) == "pay-1"
    assert moto.count("FailoverDBCluster") == 0
    assert not {e["kind"] for e in journal(state)} & {"step_started", "step_recorded"}


def test_access_denied_by_iam_fails_clearly_with_nothing_half_done(
    moto: MotoServer, tmp_path: Path
) -> None:
    """With moto's IAM enforced and only rds:Describe* allowed, the run exits 1 naming the permission; the writer stays."""
    _aurora(moto)
    iam = boto3.client("iam", endpoint_url=moto.endpoint, region_name="us-east-1")
    iam.create_user(UserName="oncall")
    key = iam.create_access_key(UserName="oncall")["AccessKey"]
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": ["rds:Describe*"], "Resource": "*"}]}  # fmt: skip
    iam.put_user_policy(UserName="oncall", PolicyName="read", PolicyDocument=json.dumps(policy))
    creds = {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
    state = tmp_path / "state.db"
    with moto.iam_enforced():
        run = drctl("run", _runbook(tmp_path, moto.endpoint), "--state", str(state), env=creds)
    assert run.returncode == 1, explain(run)
    out = run.stdout + run.stderr
    assert (
        "rds FailoverDBCluster: AccessDenied: User: arn:aws:iam::123456789012:user/oncall is not "
        "authorized to perform: rds:FailoverDBCluster"
    ) in out
    assert "not allowed rds:FailoverDBCluster" in out and "Traceback" not in out
    assert _writer(moto) == "pay-1"
    events = [e for e in journal(state) if e["step"] == "failover"]
    assert [(e["kind"], (e["data"] or {}).get("key")) for e in events] == [
        ("step_started", None), ("step_recorded", WRITER_BEFORE), ("step_failed", None),
    ]  # fmt: skip
    everything = out + json.dumps(journal(state))
    assert key["SecretAccessKey"] not in everything and DUMMY_SECRET not in everything


def test_kill_9_after_the_failover_then_resume_verifies_without_resending(
    moto: MotoServer, tmp_path: Path
) -> None:
    """Killed between FailoverDBCluster and its outcome, resume proves it with verify and sends it once."""
    _aurora(moto)
    state = tmp_path / "state.db"
    runbook = _runbook(tmp_path, moto.endpoint)
    killed = drctl(
        "run", runbook, "--state", str(state), env={"DRCTL_FAULT": "after-apply:failover"}
    )
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    assert _writer(moto) == "pay-2"
    resumed = drctl("resume", "--last", "--state", str(state))
    assert resumed.returncode == 0, explain(resumed)
    done = [e for e in journal(state) if e["step"] == "failover" and e["kind"] == "step_succeeded"]
    assert len(done) == 1 and done[0]["data"]["verified_on_resume"] is True
    assert moto.count("FailoverDBCluster") == 1
    assert _writer(moto) == "pay-2"
