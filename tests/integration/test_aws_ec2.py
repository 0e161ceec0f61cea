"""aws.ec2_stop and aws.ec2_isolate against moto's EC2 server, and through the CLI.

moto stops an instance at once (it never shows ``stopping``) and ignores ``Force``, so
the force test checks what was sent, and the ``stopping`` tests let moto's answer to
DescribeInstances say ``stopping`` for a number of reads (a botocore hook on the real
client's parsed reply), which is what AWS says while an instance shuts down.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest

from drctl.errors import StepError, Unreachable
from drctl.providers.aws.ec2 import (
    CREATED_GROUP,
    PREVIOUS_GROUPS,
    PREVIOUS_STATE,
    Ec2Isolate,
    Ec2Stop,
    IsolateInputs,
    StopInputs,
)
from drctl.providers.aws.session import Aws, NotFound
from drctl.testing import FakeContext
from tests.conftest import RUNBOOKS
from tests.integration.moto_server import (  # noqa: F401
    DUMMY_SECRET,
    MotoServer,
    aws_env_fixture,
    moto_fixture,
    moto_server_fixture,
)
from tests.integration.pg_sandbox import RealContext, drctl, explain, journal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

REGION = "eu-west-1"
MISSING = "i-0000000000000dead"


def _ec2(moto: MotoServer) -> Any:
    return boto3.client("ec2", endpoint_url=moto.endpoint, region_name=REGION)


def _instances(moto: MotoServer, count: int = 1, groups: list[str] | None = None) -> list[str]:
    """``count`` running instances in the default VPC, ``groups`` (or the VPC's default) on
    the primary interface.

    Launched with the interface spelled out, not SecurityGroupIds: moto adds an
    instance's launch groups to every interface it reports, whatever the interface's own
    groups are (on AWS they are the primary interface's groups, nothing more).
    """
    ec2 = _ec2(moto)
    subnet = ec2.describe_subnets()["Subnets"][0]
    if not groups:
        default = ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [subnet["VpcId"]]},
                {"Name": "group-name", "Values": ["default"]},
            ]
        )["SecurityGroups"]
        groups = [default[0]["GroupId"]]
    nic = {"DeviceIndex": 0, "SubnetId": subnet["SubnetId"], "Groups": groups}
    reply = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=count, MaxCount=count, NetworkInterfaces=[nic]
    )
    moto.forget_requests()
    return [str(i["InstanceId"]) for i in reply["Instances"]]


def _state(moto: MotoServer, instance_id: str) -> str:
    reply = _ec2(moto).describe_instances(InstanceIds=[instance_id])
    return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])


def _group(moto: MotoServer, name: str, vpc_id: str) -> str:
    return str(
        _ec2(moto).create_security_group(GroupName=name, Description=name, VpcId=vpc_id)["GroupId"]
    )


def _vpc(moto: MotoServer, instance_id: str) -> str:
    reply = _ec2(moto).describe_instances(InstanceIds=[instance_id])
    return str(reply["Reservations"][0]["Instances"][0]["VpcId"])


def _groups_by_interface(moto: MotoServer, instance_id: str) -> dict[str, list[str]]:
    reply = _ec2(moto).describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )
    return {
        n["NetworkInterfaceId"]: [g["GroupId"] for g in n["Groups"]]
        for n in reply["NetworkInterfaces"]
    }


def _second_interface(moto: MotoServer, instance_id: str, group: str) -> str:
    """A second network interface with ``group``, attached to the instance."""
    ec2 = _ec2(moto)
    subnet = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "SubnetId"
    ]
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=[group])["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=instance_id, DeviceIndex=1
    )
    moto.forget_requests()
    return str(eni["NetworkInterfaceId"])


def _target(endpoint: str) -> dict[str, Any]:
    return {"type": "aws", "region": REGION, "endpoint_url": endpoint}


def _stop_ctx(moto: MotoServer, ids: list[str], **kw: Any) -> RealContext:
    inputs = StopInputs.model_validate({"instance_ids": ids, "poll_interval": 0.1, **kw})
    return RealContext(inputs, target=_target(moto.endpoint), timeout=30.0)


def _isolate_ctx(moto: MotoServer, instance_id: str, **kw: Any) -> RealContext:
    inputs = IsolateInputs.model_validate({"instance_id": instance_id, **kw})
    return RealContext(inputs, target=_target(moto.endpoint), timeout=30.0)


def _nobody() -> str:
    """An endpoint on a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# -- aws.ec2_stop -------------------------------------------------------------------------------


def test_stop_check_apply_verify_undo(moto: MotoServer) -> None:
    """check shows running → stopped and sends no stop; apply records each state first and stops; verify reads stopped; undo starts them."""
    a, b = _instances(moto, 2)
    ctx = _stop_ctx(moto, [a, b])
    assert Ec2Stop().check(ctx) == f"{a} running → stopped; {b} running → stopped"
    assert moto.count("StopInstances") == 1  # the dry run that proves the permission
    assert "DryRun=true" in next(r["body"] for r in moto.requests() if "StopInstances" in r["body"])
    assert _state(moto, a) == "running"
    assert Ec2Stop().verify(ctx) is False

    Ec2Stop().apply(ctx)
    assert ctx.recorded == {PREVIOUS_STATE + a: "running", PREVIOUS_STATE + b: "running"}
    assert ctx.outputs == {
        "instance_ids": [a, b],
        "previous_states": {a: "running", b: "running"},
        "stopped": [a, b],
    }
    assert _state(moto, a) == _state(moto, b) == "stopped"
    assert Ec2Stop().verify(ctx) is True

    Ec2Stop().undo(ctx)
    assert _state(moto, a) == _state(moto, b) == "running"
    assert ctx.lines[-1] == f"started {a}, {b} again"
    assert Ec2Stop().verify(ctx) is False


def test_force_stop_sends_force_and_undo_starts_only_what_it_stopped(moto: MotoServer) -> None:
    """force: true sends StopInstances with Force; an instance stopped before the step is neither stopped again nor started by undo."""
    a, b = _instances(moto, 2)
    _ec2(moto).stop_instances(InstanceIds=[b])
    moto.forget_requests()
    ctx = _stop_ctx(moto, [a, b], force=True)
    assert Ec2Stop().check(ctx) == f"{a} running → stopped (forced); {b} stopped: nothing to do"
    Ec2Stop().apply(ctx)
    stops = [r["body"] for r in moto.requests() if "Action=StopInstances" in r["body"]]
    assert len(stops) == 2 and "Force=true" in stops[-1] and "DryRun" not in stops[-1]
    assert f"InstanceId.1={a}" in stops[-1] and b not in stops[-1]
    assert ctx.recorded == {PREVIOUS_STATE + a: "running"}
    Ec2Stop().undo(ctx)
    assert (_state(moto, a), _state(moto, b)) == ("running", "stopped")


class _SaysStopping(Ec2Stop):
    """aws.ec2_stop whose client reads ``stopping`` for the first ``reads`` DescribeInstances."""

    def __init__(self, endpoint: str, reads: int) -> None:
        self.endpoint = endpoint
        self.reads = reads

    def client(self, ctx: Any) -> Aws:
        client = boto3.client("ec2", endpoint_url=self.endpoint, region_name=REGION)

        def stopping(parsed: dict[str, Any], **_: Any) -> None:
            if self.reads > 0:
                self.reads -= 1
                for r in parsed.get("Reservations", []):
                    for i in r["Instances"]:
                        i["State"] = {"Code": 64, "Name": "stopping"}

        client.meta.events.register("after-call.ec2.DescribeInstances", stopping)
        return Aws(client, "ec2")


def test_stopping_is_not_stopped(moto: MotoServer) -> None:
    """apply and verify poll through 'stopping' until 'stopped'; one stuck stopping is stopped again and fails apply at its wait, saying how to force it."""
    (a,) = _instances(moto)
    ctx = _stop_ctx(moto, [a], wait=5)
    step = _SaysStopping(moto.endpoint, reads=4)  # the read before the stop, then 3 polls
    step.apply(ctx)
    assert ctx.slept == pytest.approx([0.1, 0.1, 0.1])
    assert step.reads == 0

    step.reads = 2
    assert step.verify(ctx) is True
    assert len(ctx.slept) == 5

    (b,) = _instances(moto)
    stuck = _stop_ctx(moto, [b], wait=0.35)
    with pytest.raises(
        StepError,
        match=rf"not stopped within 0.35s: {b} stopping; a hung instance stops with force: true",
    ):
        _SaysStopping(moto.endpoint, reads=100).apply(stuck)
    # It was stopping before the step: stopped again, but not this step's to start on undo.
    assert stuck.recorded == {}
    assert moto.count("StopInstances") == 1
    assert _SaysStopping(moto.endpoint, reads=100).verify(stuck) is False


# -- aws.ec2_isolate ----------------------------------------------------------------------------


def test_isolation_replaces_groups_on_every_interface_and_undo_restores_them(
    moto: MotoServer,
) -> None:
    """Each interface's groups are recorded, then replaced by the isolation group alone; undo puts back exactly the recorded ones."""
    (probe,) = _instances(moto)
    vpc = _vpc(moto, probe)
    app, admin, other, iso = (_group(moto, n, vpc) for n in ("app", "admin", "other", "iso"))
    (a,) = _instances(moto, groups=[app, admin])
    second = _second_interface(moto, a, other)
    before = _groups_by_interface(moto, a)
    (first,) = set(before) - {second}
    assert before == {first: [app, admin], second: [other]}

    ctx = _isolate_ctx(moto, a, isolation_group=iso)
    text = Ec2Isolate().check(ctx)
    assert text == (
        f"{a}: {first} [{app}, {admin}] → [{iso}]; {second} [{other}] → [{iso}]; "
        f"{iso} has 0 ingress and 1 egress rule(s)"
    )
    assert moto.count("ModifyNetworkInterfaceAttribute") == 0
    assert Ec2Isolate().verify(ctx) is False

    Ec2Isolate().apply(ctx)
    assert ctx.recorded == {PREVIOUS_GROUPS + n: g for n, g in before.items()}
    assert ctx.outputs == {"instance_id": a, "isolation_group": iso, "previous_groups": before}
    assert _groups_by_interface(moto, a) == {first: [iso], second: [iso]}
    assert Ec2Isolate().verify(ctx) is True

    Ec2Isolate().undo(ctx)
    assert _groups_by_interface(moto, a) == before
    assert Ec2Isolate().verify(ctx) is False


def test_a_created_isolation_group_has_no_rules_and_undo_deletes_it(moto: MotoServer) -> None:
    """create_group makes a group in the instance's VPC with no ingress and no egress rule; undo restores the groups and deletes it."""
    (a,) = _instances(moto)
    before = _groups_by_interface(moto, a)
    ctx = _isolate_ctx(moto, a, create_group=True)
    assert Ec2Isolate().check(ctx).endswith(f"→ [new drctl-isolation-{a}]")
    assert moto.count("CreateSecurityGroup") == 1  # the permission's dry run only

    Ec2Isolate().apply(ctx)
    group = ctx.recorded[CREATED_GROUP]
    (found,) = _ec2(moto).describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert (found["VpcId"], found["GroupName"]) == (_vpc(moto, a), f"drctl-isolation-{a}")
    assert found["IpPermissions"] == [] and found["IpPermissionsEgress"] == []
    assert set(map(tuple, _groups_by_interface(moto, a).values())) == {(group,)}
    assert Ec2Isolate().verify(ctx) is True

    # A second attempt reuses the group it made instead of failing on the name.
    Ec2Isolate().apply(_isolate_ctx(moto, a, create_group=True))
    assert moto.count("CreateSecurityGroup") == 2

    Ec2Isolate().undo(ctx)
    assert _groups_by_interface(moto, a) == before
    assert ctx.lines[-1].endswith(f"; isolation group {group} deleted")
    names = {g["GroupName"] for g in _ec2(moto).describe_security_groups()["SecurityGroups"]}
    assert f"drctl-isolation-{a}" not in names


def test_isolate_refuses_a_group_it_cannot_use(moto: MotoServer) -> None:
    """A group in another VPC, or a taken name that drctl did not make, fails check and apply with the reason, changing nothing."""
    (a,) = _instances(moto)
    elsewhere = _ec2(moto).create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    foreign = _group(moto, "foreign", elsewhere)
    with pytest.raises(StepError, match=rf"{foreign} is in {elsewhere}, not {a}'s"):
        Ec2Isolate().check(_isolate_ctx(moto, a, isolation_group=foreign))
    _group(moto, "taken", _vpc(moto, a))
    taken = _isolate_ctx(moto, a, create_group=True, group_name="taken")
    for phase in (Ec2Isolate().check, Ec2Isolate().apply):
        with pytest.raises(
            StepError, match=r"a security group named taken .* drctl did not make it"
        ):
            phase(taken)
    assert moto.count("ModifyNetworkInterfaceAttribute") == 0


# -- errors -------------------------------------------------------------------------------------


def test_an_unknown_instance_is_named(moto: MotoServer) -> None:
    """check and apply of either step fail with NotFound naming the instance id, sending no change."""
    for step, ctx in (
        (Ec2Stop(), _stop_ctx(moto, [MISSING])),
        (Ec2Isolate(), _isolate_ctx(moto, MISSING, create_group=True)),
    ):
        for phase in (step.check, step.apply):
            with pytest.raises(NotFound, match=rf"ec2 DescribeInstances: .*{MISSING}"):
                phase(ctx)  # type: ignore[operator]
    assert moto.count("StopInstances") == moto.count("CreateSecurityGroup") == 0


def test_an_endpoint_that_does_not_answer_is_unreachable(aws_env: str, tmp_path: Path) -> None:
    """A silent endpoint is Unreachable for both steps, and a run's outcome says the endpoint gave no answer."""
    endpoint = _nobody()
    stop = StopInputs(instance_ids=["i-0123456789abcdef0"])
    with pytest.raises(Unreachable, match="ec2 DescribeInstances: no answer"):
        Ec2Stop().check(FakeContext(stop, target=_target(endpoint), timeout=10.0))
    isolate = IsolateInputs(instance_id="i-0123456789abcdef0", create_group=True)
    with pytest.raises(Unreachable, match="ec2 DescribeInstances: no answer"):
        Ec2Isolate().apply(FakeContext(isolate, target=_target(endpoint), timeout=10.0))

    runbook = _runbook(tmp_path, endpoint, "i-0123456789abcdef0")
    run = drctl("run", runbook, "--yes", "--state", str(tmp_path / "state.db"))
    assert run.returncode == 1, explain(run)
    assert "ec2 DescribeInstances: no answer" in run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    failed = [e for e in journal(tmp_path / "state.db") if e["kind"] == "step_failed"]
    assert failed and "no answer" in failed[0]["data"]["error"]


def test_access_denied_names_the_call(moto: MotoServer, tmp_path: Path) -> None:
    """With moto's IAM enforced and only ec2:Describe* allowed, the dry run fails naming ec2:CreateSecurityGroup and ec2:StopInstances; nothing changes."""
    import json

    (a,) = _instances(moto)
    iam = boto3.client("iam", endpoint_url=moto.endpoint, region_name="us-east-1")
    iam.create_user(UserName="oncall")
    key = iam.create_access_key(UserName="oncall")["AccessKey"]
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": ["ec2:Describe*"], "Resource": "*"}]}  # fmt: skip
    iam.put_user_policy(UserName="oncall", PolicyName="read", PolicyDocument=json.dumps(policy))
    creds = {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
    runbook = _runbook(tmp_path, moto.endpoint, a)
    with moto.iam_enforced():
        dry = drctl("run", runbook, "--dry-run", "--state", str(tmp_path / "s.db"), env=creds)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 1, explain(dry)
    assert "not allowed ec2:CreateSecurityGroup" in out, out
    assert "ec2 StopInstances: " in out and "not allowed ec2:StopInstances" in out, out
    assert "Traceback" not in out and key["SecretAccessKey"] not in out
    assert _state(moto, a) == "running"


# -- through the CLI ----------------------------------------------------------------------------


def _runbook(tmp_path: Path, endpoint: str, instance: str, with_stop: str = "") -> str:
    path = tmp_path / "fence.yaml"
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: ec2-fence}\n"
        f'targets:\n  ec2: {{type: aws, region: {REGION}, endpoint_url: "{endpoint}"}}\n'
        "settings: {step_timeout: 30s}\n"
        "steps:\n"
        "  - id: isolate\n    type: aws.ec2_isolate\n    target: ec2\n"
        f"    with: {{instance_id: {instance}, create_group: true}}\n"
        "  - id: stop\n    type: aws.ec2_stop\n    target: ec2\n"
        f"    with: {{instance_ids: [{instance}], poll_interval: 0.1s{with_stop}}}\n"
    )
    return str(path)


def _kill_at(tmp_path: Path, runbook: str, kind: str, step: str) -> int:
    """The number of the journal event of ``kind`` for ``step`` in a clean run of ``runbook``.

    The clean run goes against a fresh moto state and is undone by the caller's reset.
    """
    state = tmp_path / "count.db"
    clean = drctl("run", runbook, "--yes", "--state", str(state))
    assert clean.returncode == 0, explain(clean)
    events = journal(state)
    return next(n for n, e in enumerate(events, 1) if e["kind"] == kind and e["step"] == step)


def test_kill_9_between_the_record_and_the_change_then_resume_decides_with_verify(
    moto: MotoServer, tmp_path: Path
) -> None:
    """Killed right after the stop's state is journaled (no stop sent), resume sees with verify it is not in effect and stops it once."""
    (probe,) = _instances(moto)
    at = _kill_at(tmp_path, _runbook(tmp_path, moto.endpoint, probe), "step_recorded", "stop")
    moto.reset()
    (a,) = _instances(moto)
    state = tmp_path / "state.db"
    runbook = _runbook(tmp_path, moto.endpoint, a)
    killed = drctl(
        "run", runbook, "--yes", "--state", str(state), env={"DRCTL_FAULT": f"event:{at}"}
    )
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    assert _state(moto, a) == "running"
    assert moto.count("StopInstances") == 1  # check's dry run; no real stop yet
    recorded = [e for e in journal(state) if e["kind"] == "step_recorded" and e["step"] == "stop"]
    assert recorded[-1]["data"] == {"key": PREVIOUS_STATE + a, "value": "running"}

    resumed = drctl("resume", "--last", "--state", str(state))
    assert resumed.returncode == 0, explain(resumed)
    assert "stop: interrupted earlier and not in effect; applying again" in resumed.stdout
    assert _state(moto, a) == "stopped"
    sent = [r["body"] for r in moto.requests() if "Action=StopInstances" in r["body"]]
    assert len([b for b in sent if "DryRun" not in b]) == 1
    isolated = [
        e for e in journal(state) if e["step"] == "isolate" and e["kind"] == "step_succeeded"
    ]
    assert len(isolated) == 1 and not isolated[0]["data"].get("verified_on_resume")


def test_kill_9_between_the_groups_record_and_the_swap_then_resume(
    moto: MotoServer, tmp_path: Path
) -> None:
    """Killed after the interfaces' groups are journaled and before the swap, resume re-applies; a rollback then restores the journaled groups."""
    (probe,) = _instances(moto)
    runbook = _runbook(tmp_path, moto.endpoint, probe)
    at = _kill_at(tmp_path, runbook, "step_recorded", "isolate")
    # The last record before the swap: the interface's groups come after the group's id.
    events = journal(tmp_path / "count.db")
    keys = [
        e["data"]["key"] for e in events if e["kind"] == "step_recorded" and e["step"] == "isolate"
    ]
    assert keys[0] == CREATED_GROUP and keys[1].startswith(PREVIOUS_GROUPS)
    at += 1
    moto.reset()
    (a,) = _instances(moto)
    before = _groups_by_interface(moto, a)
    state = tmp_path / "state.db"
    runbook = _runbook(tmp_path, moto.endpoint, a)
    killed = drctl(
        "run", runbook, "--yes", "--state", str(state), env={"DRCTL_FAULT": f"event:{at}"}
    )
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    assert _groups_by_interface(moto, a) == before
    assert moto.count("ModifyNetworkInterfaceAttribute") == 0

    resumed = drctl("resume", "--last", "--state", str(state))
    assert resumed.returncode == 0, explain(resumed)
    assert "isolate: interrupted earlier and not in effect; applying again" in resumed.stdout
    assert moto.count("CreateSecurityGroup") == 2  # check's dry run, then the one group
    groups = _groups_by_interface(moto, a)
    assert len(set(map(tuple, groups.values()))) == 1 and groups != before
    assert _state(moto, a) == "stopped"


def test_kill_9_after_the_stop_then_resume_verifies_without_resending(
    moto: MotoServer, tmp_path: Path
) -> None:
    """Killed after StopInstances and before its outcome, resume proves the stop with verify and sends none again."""
    (a,) = _instances(moto)
    state = tmp_path / "state.db"
    runbook = _runbook(tmp_path, moto.endpoint, a)
    killed = drctl(
        "run", runbook, "--yes", "--state", str(state), env={"DRCTL_FAULT": "after-apply:stop"}
    )
    assert killed.returncode == -signal.SIGKILL, explain(killed)
    resumed = drctl("resume", "--last", "--state", str(state))
    assert resumed.returncode == 0, explain(resumed)
    done = [e for e in journal(state) if e["step"] == "stop" and e["kind"] == "step_succeeded"]
    assert len(done) == 1 and done[0]["data"]["verified_on_resume"] is True
    sent = [r["body"] for r in moto.requests() if "Action=StopInstances" in r["body"]]
    assert len([b for b in sent if "DryRun" not in b]) == 1


def test_a_runbook_with_both_validates_and_plans_offline_without_credentials(
    tmp_path: Path,
) -> None:
    """validate and plan need no credentials and no endpoint, and the plan says exactly what will be isolated and stopped."""
    runbook = _runbook(tmp_path, _nobody(), "i-0123456789abcdef0", with_stop=", force: true")
    bare = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_PROFILE": "",
            "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}  # fmt: skip
    valid = drctl("validate", runbook, env=bare)
    assert valid.returncode == 0, explain(valid)
    plan = drctl("plan", runbook, env=bare)
    assert plan.returncode == 0, explain(plan)
    assert (
        "fence: isolate EC2 instance i-0123456789abcdef0 in ec2: the security groups of every "
        "network interface → a new group drctl-isolation-i-0123456789abcdef0 with no rules "
        "(created in its VPC)"
    ) in plan.stdout
    assert (
        "fence: stop EC2 instance i-0123456789abcdef0 in ec2 (StopInstances with Force: no "
        "clean OS shutdown; wait ≤ 600s until stopped)"
    ) in plan.stdout


@pytest.mark.parametrize(
    ("with_", "line", "message"),
    [
        ("instance_ids: [sg-0123456789abcdef0]", 7,
         "'sg-0123456789abcdef0' is not an EC2 instance id"),
        ("instance_ids: []", 7, "instance_ids"),
        ("instance_ids: [i-0123456789abcdef0], force: maybe", 7, "force"),
        ("instance_ids: i-0123456789abcdef0, wait: 2h", 7, "wait"),
        ("instance_id: i-0123456789abcdef0, create_group: true, isolation_group: sg-01234567", 7,
         "give isolation_group, or create_group: true — one of them"),
        ("instance_id: i-0123456789abcdef0, isolation_group: default", 7,
         "'default' is not a security group id"),
        ("instance_id: i-0123456789abcdef0, create_group: true, vpc: vpc-1", 7, "vpc"),
    ],
)  # fmt: skip
def test_bad_inputs_are_refused_by_validate_with_their_place(
    tmp_path: Path, with_: str, line: int, message: str
) -> None:
    """A bad ``with`` for either step exits 2 from `drctl validate`, naming file:line:col and the problem, with no traceback."""
    kind = "aws.ec2_stop" if "instance_ids" in with_ else "aws.ec2_isolate"
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: bad}\n"
        "targets:\n  ec2: {type: aws, region: eu-west-1}\n"
        f"steps:\n  - {{id: fence, type: {kind}, target: ec2, with: {{{with_}}}}}\n"
    )
    result = drctl("validate", str(path))
    assert result.returncode == 2, explain(result)
    assert f"{path}:{line}:" in result.stdout and message in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_example_runbook_fences_against_moto(moto: MotoServer, tmp_path: Path) -> None:
    """runbooks/aws-ec2-fence.yaml: the dry run changes nothing; the run isolates and stops the instance; a failure rolls both back."""
    (a,) = _instances(moto)
    before = _groups_by_interface(moto, a)
    params = [
        "-p",
        f"instance={a}",
        "-p",
        f"region={REGION}",
        "-p",
        f"aws_endpoint={moto.endpoint}",
    ]
    runbook = str(RUNBOOKS / "aws-ec2-fence.yaml")
    dry = drctl("run", runbook, *params, "--dry-run", "--state", str(tmp_path / "dry.db"))
    assert dry.returncode == 0, explain(dry)
    assert f"{a} running → stopped" in dry.stdout
    assert _state(moto, a) == "running" and _groups_by_interface(moto, a) == before

    run = drctl("run", runbook, *params, "--yes", "--state", str(tmp_path / "state.db"))
    assert run.returncode == 0, explain(run)
    assert _state(moto, a) == "stopped"
    (group,) = set(map(tuple, _groups_by_interface(moto, a).values()))
    assert group != tuple(next(iter(before.values())))
    assert DUMMY_SECRET not in run.stdout + run.stderr

    # An instance whose stop is refused: the stop fails and the rollback takes the
    # isolation back off, to exactly the groups it had, and deletes the group it made.
    (b,) = _instances(moto)
    _ec2(moto).modify_instance_attribute(InstanceId=b, DisableApiStop={"Value": True})
    before = _groups_by_interface(moto, b)
    params[1] = f"instance={b}"
    failed = drctl("run", runbook, *params, "--yes", "--state", str(tmp_path / "rb.db"))
    assert failed.returncode == 1, explain(failed)
    assert "OperationNotPermitted" in failed.stdout + failed.stderr
    assert _groups_by_interface(moto, b) == before and _state(moto, b) == "running"
    names = {g["GroupName"] for g in _ec2(moto).describe_security_groups()["SecurityGroups"]}
    assert f"drctl-isolation-{b}" not in names


def test_unauthorized_operation_drops_the_encoded_blob(aws_env: str) -> None:
    """EC2's UnauthorizedOperation is AccessDenied naming the call, without the kilobytes of encoded policy evaluation (and without the secret)."""
    from botocore.exceptions import ClientError

    from drctl.providers.aws.session import AccessDenied, translate

    said = (
        f"You are not authorized to perform this operation. User {aws_env} Encoded "
        "authorization failure message: " + "Zm9v" * 500
    )
    error = ClientError(
        {"Error": {"Code": "UnauthorizedOperation", "Message": said}}, "StopInstances"
    )
    translated = translate(error, "ec2", "StopInstances")
    assert isinstance(translated, AccessDenied)
    assert translated.message == (
        "ec2 StopInstances: UnauthorizedOperation: You are not authorized to perform this "
        "operation. User *** (aws sts decode-authorization-message decodes AWS's reason) — "
        "the credentials from the default credential chain are not allowed ec2:StopInstances; "
        "grant it, or run with credentials that have it"
    )
