"""``aws.ec2_stop`` and ``aws.ec2_isolate``: fence an instance through EC2's control plane.

When the old primary's host is cut off from drctl (a partition, a lost region's
network) it may still serve its own clients, so a fence that needs the host cannot
prove anything. EC2's API can still act on it: stop the instance, or take all its
network traffic away by swapping every interface's security groups for one with no
rules. Each step journals what it changes (``ctx.record``) before the change, per
instance or per interface, so a retry or a resume never records the fenced state as
the one to go back to, and ``undo`` puts back exactly what was recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import Field, field_validator, model_validator

from drctl.errors import StepError
from drctl.providers.aws.session import Aws, AwsError, NotFound, import_client
from drctl.runbook.model import Duration
from drctl.runbook.targets import AwsTarget
from drctl.steps.base import Role, StepContext, StepInputs, StepType, published

#: ``ctx.record`` key prefixes: an instance's state before this step stopped it, and an
#: interface's security groups before this step replaced them (one key each, so a later
#: attempt adds what it changes without overwriting what an earlier one changed).
PREVIOUS_STATE = "previous_state:"
PREVIOUS_GROUPS = "previous_groups:"
#: ``ctx.record`` key: the isolation group this step created (undo deletes it).
CREATED_GROUP = "created_group"

_INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_GROUP_ID = re.compile(r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
#: What marks a security group as one this step type made (and may empty and delete).
_MADE_BY = "drctl isolation group: no traffic in or out"


class InstanceState(StrEnum):
    """EC2's instance states."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"


#: Runs nothing: the fence holds (a terminated instance never runs again).
DOWN = frozenset({InstanceState.STOPPED, InstanceState.TERMINATED})
#: On the way down: waiting longer may still change the answer.
GOING_DOWN = frozenset({InstanceState.STOPPING, InstanceState.SHUTTING_DOWN})
#: Up or coming up: what this step stops and ``undo`` starts again.
UP = frozenset({InstanceState.PENDING, InstanceState.RUNNING})


def _instance_id(value: str) -> str:
    if not _INSTANCE_ID.match(value):
        raise ValueError(f"{value!r} is not an EC2 instance id (i- and 8 or 17 hex digits)")
    return value


@dataclass(frozen=True)
class Interface:
    """One network interface of an instance, as EC2 reports it."""

    id: str
    vpc_id: str
    groups: tuple[str, ...]
    #: 0 for the primary interface (whose groups AWS also reports as the instance's).
    device_index: int

    @classmethod
    def from_api(cls, found: Mapping[str, Any]) -> Interface:
        return cls(
            id=str(found["NetworkInterfaceId"]),
            vpc_id=str(found.get("VpcId", "")),
            groups=tuple(str(g["GroupId"]) for g in found.get("Groups", [])),
            device_index=int(found.get("Attachment", {}).get("DeviceIndex", 0)),
        )


@dataclass(frozen=True)
class Instance:
    """What a fence needs to know about an instance."""

    id: str
    state: InstanceState
    vpc_id: str

    @classmethod
    def from_api(cls, found: Mapping[str, Any]) -> Instance:
        return cls(
            id=str(found["InstanceId"]),
            state=InstanceState(found["State"]["Name"]),
            vpc_id=str(found.get("VpcId", "")),
        )


def read_instances(aws: Aws, ids: Sequence[str]) -> dict[str, Instance]:
    """The instances by id, in the order asked; NotFound naming any that does not exist."""
    reply = aws.call("describe_instances", InstanceIds=list(ids))
    found = {
        i["InstanceId"]: Instance.from_api(i)
        for r in reply.get("Reservations", [])
        for i in r.get("Instances", [])
    }
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"ec2 DescribeInstances: no instance {', '.join(missing)} in this region")
    return {i: found[i] for i in ids}


def read_interfaces(aws: Aws, instance_id: str) -> tuple[Interface, ...]:
    """Every network interface attached to the instance, the primary first."""
    reply = aws.call(
        "describe_network_interfaces",
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}],
    )
    return tuple(
        sorted(
            (Interface.from_api(n) for n in reply.get("NetworkInterfaces", [])),
            key=lambda n: (n.device_index, n.id),
        )
    )


def _states(instances: Iterable[Instance]) -> str:
    return ", ".join(f"{i.id} {i.state}" for i in instances)


EI = TypeVar("EI", bound=StepInputs)


class Ec2Step(StepType[EI, AwsTarget], Generic[EI]):
    """Base of the ``aws.ec2_*`` step types: an AWS target and an EC2 client per phase."""

    roles = frozenset({Role.FENCE, Role.MUTATING})
    target_types = frozenset({"aws"})
    target_required = True
    wait_fields = ("wait",)

    def warm_up(self) -> None:
        import_client()

    def client(self, ctx: StepContext[EI, AwsTarget]) -> Aws:
        """An EC2 client for this phase of the step (a subclass may hand another)."""
        return Aws.open("ec2", ctx.target, ctx)


# -- aws.ec2_stop -----------------------------------------------------------------------------


class StopInputs(StepInputs):
    instance_ids: list[str] = Field(
        min_length=1,
        max_length=50,
        description="The instances that hold the old primary (one may be given as a string).",
    )
    force: bool = Field(
        default=False,
        description="StopInstances with Force: no clean shutdown of the OS, for a hung "
        "instance (or one stuck in stopping).",
    )
    wait: Duration = Field(
        default=600.0, gt=0, le=3600, description="How long to wait for every instance to stop."
    )
    poll_interval: Duration = Field(
        default=5.0, gt=0, le=120, description="Seconds between DescribeInstances polls."
    )

    @field_validator("instance_ids", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("instance_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for item in value:
            _instance_id(item)
        if len(set(value)) != len(value):
            raise ValueError("an instance is named twice")
        return value


StopCtx = StepContext[StopInputs, AwsTarget]


class Ec2Stop(Ec2Step[StopInputs]):
    """Fence the old primary by stopping its EC2 instance(s): StopInstances, verified stopped.

    ``check`` reads the instances (failing on one that does not exist), asks EC2 with a
    dry run whether the credentials may stop them, and shows what would change
    (``i-0abc… running → stopped``). ``apply`` records each running (or pending)
    instance's state before it sends StopInstances (with ``Force`` when ``force: true``,
    for a hung instance), then polls DescribeInstances until every instance is
    ``stopped`` (``stopping`` is not stopped; a terminated instance counts, as it can
    never run again), within ``wait`` and the step's time. An instance stuck in
    ``stopping`` is stopped again, so a retry with ``force: true`` can finish it.
    ``verify`` reads the states back, waiting only while one is still going down.
    ``undo`` starts what this step stopped, and only that, and waits until it runs.
    Publishes ``instance_ids``, ``previous_states`` and ``stopped``.
    """

    name = "aws.ec2_stop"
    outputs = published(
        {
            "instance_ids": "The instances asked for.",
            "previous_states": "Each instance's state before the step, by id.",
            "stopped": "The instances the step stopped (not already down).",
        }
    )
    Inputs = StopInputs

    def describe(self, inputs: StopInputs, target: str | None) -> str:
        how = "StopInstances with Force: no clean OS shutdown" if inputs.force else "StopInstances"
        return (
            f"fence: stop EC2 instance{'s' if len(inputs.instance_ids) > 1 else ''} "
            f"{', '.join(inputs.instance_ids)} in {target} ({how}; wait ≤ {inputs.wait:g}s "
            "until stopped)"
        )

    def check(self, ctx: StopCtx) -> str | None:
        inputs = ctx.inputs
        aws = self.client(ctx)
        instances = read_instances(aws, inputs.instance_ids)
        to_stop = [i.id for i in instances.values() if i.state not in DOWN]
        if to_stop:
            aws.permitted("stop_instances", InstanceIds=to_stop, Force=inputs.force)
        return "; ".join(
            f"{i.id} {i.state}: nothing to do"
            if i.state in DOWN
            else f"{i.id} {i.state} → stopped{' (forced)' if inputs.force else ''}"
            for i in instances.values()
        )

    def apply(self, ctx: StopCtx) -> None:
        inputs = ctx.inputs
        aws = self.client(ctx)
        instances = read_instances(aws, inputs.instance_ids)
        ctx.output("instance_ids", list(inputs.instance_ids))
        ctx.output("previous_states", {i.id: str(i.state) for i in instances.values()})
        to_stop = [i.id for i in instances.values() if i.state not in DOWN]
        ctx.output("stopped", to_stop)
        if not to_stop:
            ctx.log(f"stopped already: {_states(instances.values())}; nothing sent")
            return
        for i in instances.values():
            if i.state in UP:
                ctx.record(PREVIOUS_STATE + i.id, str(i.state))
        aws.call("stop_instances", InstanceIds=to_stop, Force=inputs.force)
        done, now = self._wait_down(ctx, aws, settled_only=False)
        if not done:
            hint = "" if inputs.force else "; a hung instance stops with force: true"
            raise StepError(f"not stopped within {inputs.wait:g}s: {_states(now)}{hint}")
        ctx.log(f"stopped {', '.join(to_stop)}{' (forced)' if inputs.force else ''}")

    def verify(self, ctx: StopCtx) -> bool:
        """Every instance is stopped (or terminated); waits only while one is going down."""
        done, _ = self._wait_down(ctx, self.client(ctx), settled_only=True)
        return done

    def undo(self, ctx: StopCtx) -> None:
        inputs = ctx.inputs
        ours = [i for i in inputs.instance_ids if ctx.recorded.get(PREVIOUS_STATE + i)]
        if not ours:
            ctx.log("this step stopped no instance: nothing to undo")
            return
        aws = self.client(ctx)

        def settled() -> dict[str, Instance] | None:
            now = read_instances(aws, ours)
            return None if any(i.state in GOING_DOWN for i in now.values()) else now

        # StartInstances refuses an instance that is still stopping.
        polled = ctx.poll(settled, every=inputs.poll_interval, within=inputs.wait)
        if polled.value is None:
            raise StepError(
                f"cannot start {', '.join(ours)}: still going down after {inputs.wait:g}s"
            )
        gone = [i.id for i in polled.value.values() if i.state is InstanceState.TERMINATED]
        if gone:
            raise StepError(f"cannot start {', '.join(gone)}: terminated")
        to_start = [i.id for i in polled.value.values() if i.state is InstanceState.STOPPED]
        if to_start:
            aws.call("start_instances", InstanceIds=to_start)
        up = ctx.poll(
            lambda: (
                True
                if all(i.state is InstanceState.RUNNING for i in read_instances(aws, ours).values())
                else None
            ),
            every=inputs.poll_interval,
            within=inputs.wait,
        )
        if not up.done:
            raise StepError(
                f"started {', '.join(to_start)} but not running within {inputs.wait:g}s"
            )
        ctx.log(f"started {', '.join(to_start)} again" if to_start else "running already")

    def _wait_down(
        self, ctx: StopCtx, aws: Aws, *, settled_only: bool
    ) -> tuple[bool, tuple[Instance, ...]]:
        """Poll until every instance is down; with ``settled_only``, also stop at an answer
        that waiting cannot change (none going down). Returns (down, the last states)."""
        inputs = ctx.inputs
        last: tuple[Instance, ...] = ()

        def down() -> bool | None:
            nonlocal last
            last = tuple(read_instances(aws, inputs.instance_ids).values())
            if all(i.state in DOWN for i in last):
                return True
            if settled_only and not any(i.state in GOING_DOWN for i in last):
                return False
            return None

        polled = ctx.poll(down, every=inputs.poll_interval, within=inputs.wait)
        return bool(polled.value), last


# -- aws.ec2_isolate --------------------------------------------------------------------------


class IsolateInputs(StepInputs):
    instance_id: str = Field(description="The instance that holds the old primary.")
    isolation_group: str | None = Field(
        default=None,
        description="An existing security group (sg-…) in the instance's VPC to put on "
        "every interface instead of its groups.",
    )
    create_group: bool = Field(
        default=False,
        description="Instead: create the isolation group in the instance's VPC, with no "
        "ingress and no egress rules (or reuse the one an earlier attempt created).",
    )
    group_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="With create_group: its name (default: drctl-isolation-<instance_id>).",
    )

    @field_validator("instance_id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _instance_id(value)

    @field_validator("isolation_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None and not _GROUP_ID.match(value):
            raise ValueError(f"{value!r} is not a security group id (sg- and 8 or 17 hex digits)")
        return value

    @model_validator(mode="after")
    def _one_group(self) -> IsolateInputs:
        if (self.isolation_group is None) == (not self.create_group):
            raise ValueError("give isolation_group, or create_group: true — one of them")
        if self.group_name is not None and not self.create_group:
            raise ValueError("group_name goes with create_group: true")
        return self

    @property
    def name_to_create(self) -> str:
        return self.group_name or f"drctl-isolation-{self.instance_id}"


IsolateCtx = StepContext[IsolateInputs, AwsTarget]


@dataclass(frozen=True)
class SecurityGroup:
    """A security group and how many rules it has each way."""

    id: str
    vpc_id: str
    description: str
    ingress: tuple[Mapping[str, Any], ...]
    egress: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_api(cls, found: Mapping[str, Any]) -> SecurityGroup:
        return cls(
            id=str(found["GroupId"]),
            vpc_id=str(found.get("VpcId", "")),
            description=str(found.get("Description", "")),
            ingress=tuple(found.get("IpPermissions", [])),
            egress=tuple(found.get("IpPermissionsEgress", [])),
        )

    @property
    def rules(self) -> str:
        return f"{len(self.ingress)} ingress and {len(self.egress)} egress rule(s)"


def read_group(aws: Aws, group_id: str) -> SecurityGroup:
    return SecurityGroup.from_api(
        aws.call("describe_security_groups", GroupIds=[group_id])["SecurityGroups"][0]
    )


def find_group(aws: Aws, vpc_id: str, name: str) -> SecurityGroup | None:
    reply = aws.call(
        "describe_security_groups",
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}],
    )
    groups = reply.get("SecurityGroups", [])
    return SecurityGroup.from_api(groups[0]) if groups else None


class Ec2Isolate(Ec2Step[IsolateInputs]):
    """Fence the old primary by cutting its network: every interface gets one isolation group.

    Replaces the security groups of each of the instance's network interfaces with the
    isolation group: ``isolation_group`` as given, or, with ``create_group: true``, one
    created in the instance's VPC with no ingress and no egress rules (AWS's default
    allow-all egress rule is revoked). ``check`` reads the instance and its interfaces
    (failing on an instance that does not exist, a group in another VPC, or a name
    taken by a group drctl did not make) and shows each interface's groups before and
    after. ``apply`` records every interface's groups (``ctx.record``, durable) before it
    changes any. ``verify`` reads the interfaces back: each holds the isolation group
    alone. ``undo`` puts back the recorded groups on the recorded interfaces, exactly,
    and deletes a group this step created. Publishes ``instance_id``,
    ``isolation_group`` and ``previous_groups``.

    EC2 keeps tracked connections that are already open when rules go away (until they
    idle out), so a client session open before the swap may go on; stop the instance
    too (``aws.ec2_stop``) when the fence must not wait for that.
    """

    name = "aws.ec2_isolate"
    outputs = published(
        {
            "instance_id": "The isolated instance.",
            "isolation_group": "The security group its interfaces now have.",
            "previous_groups": "Each network interface's groups before, by interface id.",
        }
    )
    Inputs = IsolateInputs

    def describe(self, inputs: IsolateInputs, target: str | None) -> str:
        group = (
            f"a new group {inputs.name_to_create} with no rules (created in its VPC)"
            if inputs.create_group
            else str(inputs.isolation_group)
        )
        return (
            f"fence: isolate EC2 instance {inputs.instance_id} in {target}: the security "
            f"groups of every network interface → {group}"
        )

    def check(self, ctx: IsolateCtx) -> str | None:
        inputs = ctx.inputs
        aws = self.client(ctx)
        instance, interfaces = self._read(aws, inputs.instance_id)
        if inputs.isolation_group is not None:
            group = read_group(aws, inputs.isolation_group)
            if group.vpc_id != instance.vpc_id:
                raise StepError(
                    f"{group.id} is in {group.vpc_id}, not {instance.id}'s {instance.vpc_id}: "
                    "an interface takes groups of its own VPC only"
                )
            to, note = group.id, f"; {group.id} has {group.rules}"
        else:
            found = find_group(aws, instance.vpc_id, inputs.name_to_create)
            _ours(found, inputs.name_to_create)
            if found is None:
                aws.permitted(
                    "create_security_group",
                    GroupName=inputs.name_to_create,
                    Description=_MADE_BY,
                    VpcId=instance.vpc_id,
                )
            to, note = found.id if found else f"new {inputs.name_to_create}", ""
        changes = [f"{n.id} [{', '.join(n.groups)}] → [{to}]" for n in interfaces]
        return f"{instance.id}: " + "; ".join(changes) + note

    def apply(self, ctx: IsolateCtx) -> None:
        inputs = ctx.inputs
        aws = self.client(ctx)
        instance, interfaces = self._read(aws, inputs.instance_id)
        group = inputs.isolation_group or self._isolation_group(ctx, aws, instance)
        ctx.output("instance_id", instance.id)
        ctx.output("isolation_group", group)
        ctx.output("previous_groups", {n.id: list(n.groups) for n in interfaces})
        to_change = [n for n in interfaces if n.groups != (group,)]
        # Every interface's groups are durable before any changes: a kill midway leaves
        # a journal that can put all of them back.
        for n in to_change:
            ctx.record(PREVIOUS_GROUPS + n.id, list(n.groups))
        for n in to_change:
            aws.call("modify_network_interface_attribute", NetworkInterfaceId=n.id, Groups=[group])
        done = ", ".join(n.id for n in to_change) or "none (isolated already)"
        ctx.log(f"{instance.id} isolated in {group}; interfaces changed: {done}")

    def verify(self, ctx: IsolateCtx) -> bool:
        """Every interface of the instance holds the isolation group and no other."""
        inputs = ctx.inputs
        aws = self.client(ctx)
        instance, interfaces = self._read(aws, inputs.instance_id)
        group = inputs.isolation_group or ctx.recorded.get(CREATED_GROUP)
        if group is None:
            found = find_group(aws, instance.vpc_id, inputs.name_to_create)
            if found is None:
                return False
            group = found.id
        return all(n.groups == (group,) for n in interfaces)

    def undo(self, ctx: IsolateCtx) -> None:
        inputs = ctx.inputs
        recorded = {
            key.removeprefix(PREVIOUS_GROUPS): [str(g) for g in value]
            for key, value in ctx.recorded.items()
            if key.startswith(PREVIOUS_GROUPS)
        }
        aws = self.client(ctx)
        _, interfaces = self._read(aws, inputs.instance_id)
        now = {n.id: n for n in interfaces}
        restored = []
        for eni, groups in sorted(recorded.items()):
            if eni not in now:
                raise StepError(f"interface {eni} is no longer attached to {inputs.instance_id}")
            if list(now[eni].groups) != groups:
                aws.call(
                    "modify_network_interface_attribute", NetworkInterfaceId=eni, Groups=groups
                )
                restored.append(f"{eni} [{', '.join(groups)}]")
        said = [f"groups put back: {'; '.join(restored)}"] if restored else []
        created = ctx.recorded.get(CREATED_GROUP)
        if created and not any(
            created in n.groups for n in read_interfaces(aws, inputs.instance_id)
        ):
            try:
                aws.call("delete_security_group", GroupId=created)
                said.append(f"isolation group {created} deleted")
            except AwsError as exc:
                # Still on another instance: the group is left, and said to be.
                said.append(f"isolation group {created} kept: {exc.message}")
        ctx.log("; ".join(said) or "no interface to put back: nothing to undo")

    @staticmethod
    def _read(aws: Aws, instance_id: str) -> tuple[Instance, tuple[Interface, ...]]:
        instance = read_instances(aws, [instance_id])[instance_id]
        interfaces = read_interfaces(aws, instance_id)
        if not interfaces:
            raise StepError(f"{instance_id} ({instance.state}) has no network interface to isolate")
        elsewhere = [n.id for n in interfaces if n.vpc_id != instance.vpc_id]
        if elsewhere:
            raise StepError(
                f"interface {', '.join(elsewhere)} of {instance_id} is outside its VPC "
                f"{instance.vpc_id}: one isolation group cannot cover it"
            )
        return instance, interfaces

    @staticmethod
    def _isolation_group(ctx: IsolateCtx, aws: Aws, instance: Instance) -> str:
        """The group to create (or the one an earlier attempt created), with no rules."""
        name = ctx.inputs.name_to_create
        found = _ours(find_group(aws, instance.vpc_id, name), name)
        if found is None:
            made = aws.call(
                "create_security_group",
                GroupName=name,
                Description=_MADE_BY,
                VpcId=instance.vpc_id,
            )
            found = read_group(aws, str(made["GroupId"]))
        # Recorded for a group found by its drctl marker too: an attempt killed between
        # creating it and recording it leaves one that undo must still delete.
        ctx.record(CREATED_GROUP, found.id)
        # An attempt killed between creating the group and emptying it leaves AWS's
        # default egress rule behind; revoking here makes every attempt end empty.
        if found.egress:
            aws.call(
                "revoke_security_group_egress", GroupId=found.id, IpPermissions=list(found.egress)
            )
        if found.ingress:
            aws.call(
                "revoke_security_group_ingress", GroupId=found.id, IpPermissions=list(found.ingress)
            )
        return found.id


def _ours(group: SecurityGroup | None, name: str) -> SecurityGroup | None:
    """``group`` if drctl made it (or None); a StepError for a name taken by another."""
    if group is not None and group.description != _MADE_BY:
        raise StepError(
            f"a security group named {name} ({group.id}, {group.rules}) exists in "
            f"{group.vpc_id} and drctl did not make it: give it as isolation_group, or "
            "choose another group_name"
        )
    return group
