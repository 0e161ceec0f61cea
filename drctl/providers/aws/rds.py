"""``aws.rds_failover``: move an Aurora cluster's writer, or fail a Multi-AZ instance over."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from drctl.errors import StepError
from drctl.providers.aws.session import Aws, import_client
from drctl.runbook.model import Duration
from drctl.runbook.targets import AwsTarget
from drctl.steps.base import Role, StepContext, StepInputs, StepType, published

#: ``ctx.record`` keys: the writer (Aurora) or the primary's AZ (Multi-AZ) before the failover.
WRITER_BEFORE = "writer_before"
AZ_BEFORE = "az_before"


class RdsFailoverInputs(StepInputs):
    cluster: str | None = Field(
        default=None,
        min_length=1,
        description="Aurora (or Multi-AZ DB cluster) identifier: FailoverDBCluster.",
    )
    target_instance: str | None = Field(
        default=None,
        min_length=1,
        description="With cluster: the instance to make the writer (required, so that a "
        "retry or a resume can never fail back).",
    )
    instance: str | None = Field(
        default=None,
        min_length=1,
        description="Multi-AZ DB instance identifier: RebootDBInstance with ForceFailover.",
    )
    to_az: str | None = Field(
        default=None,
        min_length=1,
        description="With instance: the AZ its primary must end up in, the standby's (required, "
        "so that a retry or a resume can never fail back).",
    )
    wait: Duration = Field(
        default=600.0, gt=0, le=3600, description="How long to wait for the new writer."
    )
    poll_interval: Duration = Field(
        default=10.0, gt=0, le=120, description="Seconds between DescribeDB* polls."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> RdsFailoverInputs:
        if (self.cluster is None) == (self.instance is None):
            raise ValueError("give cluster (Aurora) or instance (Multi-AZ), not both or neither")
        if self.cluster is not None and not self.target_instance:
            raise ValueError("cluster needs target_instance: the instance to make the writer")
        if self.instance is not None and not self.to_az:
            raise ValueError("instance needs to_az: the AZ its primary must end up in")
        if self.instance is not None and self.target_instance is not None:
            raise ValueError("target_instance goes with cluster; with instance, use to_az")
        if self.cluster is not None and self.to_az is not None:
            raise ValueError("to_az goes with instance; with cluster, use target_instance")
        return self


@dataclass(frozen=True)
class Cluster:
    """What a failover needs to know about a DB cluster."""

    id: str
    status: str
    writer: str | None
    members: tuple[str, ...]
    endpoint: str

    @classmethod
    def read(cls, aws: Aws, cluster_id: str) -> Cluster:
        found = aws.call("describe_db_clusters", DBClusterIdentifier=cluster_id)["DBClusters"][0]
        members = found.get("DBClusterMembers", [])
        writers = [m["DBInstanceIdentifier"] for m in members if m.get("IsClusterWriter")]
        return cls(
            id=cluster_id,
            status=str(found.get("Status", "")),
            writer=writers[0] if writers else None,
            members=tuple(str(m["DBInstanceIdentifier"]) for m in members),
            endpoint=str(found.get("Endpoint", "")),
        )


def _instance(aws: Aws, instance_id: str) -> dict[str, Any]:
    return dict(
        aws.call("describe_db_instances", DBInstanceIdentifier=instance_id)["DBInstances"][0]
    )


Ctx = StepContext[RdsFailoverInputs, AwsTarget]


class RdsFailover(StepType[RdsFailoverInputs, AwsTarget]):
    """Fail an Aurora cluster over to a chosen reader, or a Multi-AZ DB instance to its standby.

    ``cluster`` + ``target_instance``: FailoverDBCluster, then wait until the target is
    the writer and the cluster and the instance are ``available``. ``instance`` +
    ``to_az``: RebootDBInstance with ForceFailover, then wait until it is ``available``
    with its primary in ``to_az``. The target of the failover is named, not implied, so a
    retry or a resume after a slow failover finds it done instead of failing back.
    ``check`` reads the cluster or instance and shows ``Aurora cluster pay: writer
    pay-1 → pay-2``; it fails when it does not exist, is not ``available``, the target is
    not a member, the instance is not Multi-AZ or its standby is elsewhere, or the
    credentials may not describe it. ``apply`` records the writer (or the primary's AZ)
    first and sends nothing when the target already holds the role. ``verify`` reads
    the roles back (waiting while a failover is still in progress). ``undo`` fails back
    to the recorded writer or AZ. Publishes ``writer`` and ``previous_writer``, or
    ``primary_az`` and ``previous_az``.

    The safety lints see a promote: AWS itself demotes the old writer (it restarts as a
    reader, or as the standby) and the data is in one cluster volume or a synchronous
    standby, so a runbook acknowledges DR001 and DR002 for this step, saying why.
    """

    name = "aws.rds_failover"
    outputs = published(
        {
            "writer": "The writer instance after the failover.",
            "primary_az": "The writer's availability zone after.",
            "previous_writer": "The writer before.",
            "previous_az": "The writer's availability zone before.",
        }
    )
    Inputs = RdsFailoverInputs
    wait_fields = ("wait",)
    roles = frozenset({Role.PROMOTE, Role.MUTATING})
    target_types = frozenset({"aws"})
    target_required = True

    def warm_up(self) -> None:
        import_client()

    def describe(self, inputs: RdsFailoverInputs, target: str | None) -> str:
        if inputs.cluster is not None:
            return (
                f"fail Aurora cluster {inputs.cluster} over to {inputs.target_instance} "
                f"(FailoverDBCluster in {target}, wait ≤ {inputs.wait:g}s)"
            )
        return (
            f"reboot {inputs.instance} with failover to its Multi-AZ standby in {inputs.to_az} "
            f"(in {target}, wait ≤ {inputs.wait:g}s)"
        )

    def client(self, ctx: Ctx) -> Aws:
        """An RDS client for this phase of the step (a subclass may hand another)."""
        return Aws.open("rds", ctx.target, ctx)

    # -- check ----------------------------------------------------------------------------

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        aws = self.client(ctx)
        if inputs.cluster is not None:
            return self._check_cluster(aws, inputs.cluster, str(inputs.target_instance))
        assert inputs.instance is not None
        db = _instance(aws, inputs.instance)
        az = db.get("AvailabilityZone")
        if not db.get("MultiAZ"):
            raise StepError(
                f"{inputs.instance} is not Multi-AZ: a reboot with failover has no standby to go to"
            )
        if az == inputs.to_az:
            return f"do nothing: the primary of {inputs.instance} is in {az} already"
        standby = db.get("SecondaryAvailabilityZone")
        if standby and standby != inputs.to_az:
            raise StepError(
                f"{inputs.instance}'s standby is in {standby}, not {inputs.to_az}: a failover "
                f"would not put the primary where to_az says"
            )
        _require_available(f"instance {inputs.instance}", db.get("DBInstanceStatus"))
        return f"move the primary of {inputs.instance} {az} → {inputs.to_az} (reboot with failover)"

    @staticmethod
    def _check_cluster(aws: Aws, cluster_id: str, target: str) -> str:
        cluster = Cluster.read(aws, cluster_id)
        if cluster.writer == target:
            return f"do nothing: {target} is the writer of Aurora cluster {cluster_id} already"
        if target not in cluster.members:
            raise StepError(
                f"{target} is not an instance of cluster {cluster_id} "
                f"(members: {', '.join(cluster.members) or 'none'})"
            )
        _require_available(f"cluster {cluster_id}", cluster.status)
        _require_available(f"instance {target}", _instance(aws, target).get("DBInstanceStatus"))
        return f"fail Aurora cluster {cluster_id} over: writer {cluster.writer} → {target}"

    # -- apply, verify, undo --------------------------------------------------------------

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        aws = self.client(ctx)
        if inputs.cluster is not None:
            target = str(inputs.target_instance)
            before = Cluster.read(aws, inputs.cluster).writer
            ctx.output("previous_writer", before)
            ctx.output("writer", target)
            if before == target:
                ctx.log(f"{target} is the writer of {inputs.cluster} already: nothing sent")
                return
            ctx.record(WRITER_BEFORE, before)
            self._move_writer(ctx, aws, inputs.cluster, target)
            ctx.log(f"Aurora cluster {inputs.cluster}: writer {before} → {target}")
            return
        assert inputs.instance is not None
        az = _instance(aws, inputs.instance).get("AvailabilityZone")
        ctx.output("previous_az", az)
        if az == inputs.to_az:
            ctx.output("primary_az", az)
            ctx.log(f"the primary of {inputs.instance} is in {az} already: nothing sent")
            return
        ctx.record(AZ_BEFORE, az)
        self._reboot_over(ctx, aws, inputs.instance, to=str(inputs.to_az))
        ctx.output("primary_az", inputs.to_az)
        ctx.log(f"{inputs.instance}: primary {az} → {inputs.to_az}")

    def verify(self, ctx: Ctx) -> bool:
        """The target is the writer (or the primary is in ``to_az``), and all is available."""
        inputs = ctx.inputs
        aws = self.client(ctx)
        if inputs.cluster is not None:
            probe = self._writer_probe(aws, inputs.cluster, str(inputs.target_instance))
        else:
            assert inputs.instance is not None
            probe = self._az_probe(aws, inputs.instance, str(inputs.to_az))
        done, _ = _poll(ctx, inputs, probe, until_stable=True)
        return done

    def undo(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        aws = self.client(ctx)
        if inputs.cluster is not None:
            before = ctx.recorded.get(WRITER_BEFORE)
            if not before:
                ctx.log("this step sent no failover: nothing to undo")
                return
            if Cluster.read(aws, inputs.cluster).writer == before:
                ctx.log(f"{before} is the writer of {inputs.cluster} already: nothing to undo")
                return
            self._move_writer(ctx, aws, inputs.cluster, str(before))
            ctx.log(f"Aurora cluster {inputs.cluster}: writer back to {before}")
            return
        assert inputs.instance is not None
        az = ctx.recorded.get(AZ_BEFORE)
        if not az:
            ctx.log("this step sent no failover: nothing to undo")
            return
        now = _instance(aws, inputs.instance).get("AvailabilityZone")
        if now == az:
            ctx.log(f"the primary of {inputs.instance} is in {az} already: nothing to undo")
            return
        self._reboot_over(ctx, aws, inputs.instance, to=str(az))
        ctx.log(f"{inputs.instance}: primary back in {az}")

    def _move_writer(self, ctx: Ctx, aws: Aws, cluster_id: str, target: str) -> None:
        aws.call(
            "failover_db_cluster",
            DBClusterIdentifier=cluster_id,
            TargetDBInstanceIdentifier=target,
        )
        done, state = _poll(ctx, ctx.inputs, self._writer_probe(aws, cluster_id, target))
        if not done:
            raise StepError(f"cluster {cluster_id} failover to {target} not done in time: {state}")

    def _reboot_over(self, ctx: Ctx, aws: Aws, instance_id: str, *, to: str) -> None:
        aws.call("reboot_db_instance", DBInstanceIdentifier=instance_id, ForceFailover=True)
        done, state = _poll(ctx, ctx.inputs, self._az_probe(aws, instance_id, to))
        if not done:
            raise StepError(f"{instance_id} reboot with failover not done in time: {state}")

    @staticmethod
    def _writer_probe(aws: Aws, cluster_id: str, target: str) -> Probe:
        def probe() -> tuple[bool, bool, str]:
            cluster = Cluster.read(aws, cluster_id)
            status = _instance(aws, target).get("DBInstanceStatus")
            state = f"writer {cluster.writer}, cluster {cluster.status}, {target} {status}"
            done = cluster.writer == target and cluster.status == status == "available"
            return done, cluster.status == status == "available", state

        return probe

    @staticmethod
    def _az_probe(aws: Aws, instance_id: str, to: str) -> Probe:
        def probe() -> tuple[bool, bool, str]:
            db = _instance(aws, instance_id)
            az, status = db.get("AvailabilityZone"), db.get("DBInstanceStatus")
            state = f"{instance_id} {status}, primary in {az}"
            return az == to and status == "available", status == "available", state

        return probe


#: A probe returns (done, stable, state): the effect is in place; nothing is in progress
#: (so waiting longer will not change the answer); a line saying where things stand.
Probe = Callable[[], tuple[bool, bool, str]]


def _poll(
    ctx: Ctx, inputs: RdsFailoverInputs, probe: Probe, *, until_stable: bool = False
) -> tuple[bool, str]:
    """Poll ``probe`` until done (or, with ``until_stable``, until nothing is in progress).

    Bounded by the step's ``wait`` and its deadline. Right after a failover call RDS may
    still say ``available`` for a moment, so apply waits for the effect itself; verify
    only waits while something is in progress.
    """
    state = "not polled"

    def settled() -> bool | None:
        nonlocal state
        done, stable, state = probe()
        return done if done or (until_stable and stable) else None

    polled = ctx.poll(settled, every=inputs.poll_interval, within=inputs.wait)
    return bool(polled.value), state


def _require_available(what: str, status: Any) -> None:
    if status != "available":
        raise StepError(f"{what} is {status}: fail over only from an available state")
