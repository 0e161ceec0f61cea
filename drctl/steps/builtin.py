"""The step types that ship with drctl, by name, imported only when used.

The same names are registered as ``drctl.steps`` entry points in pyproject.toml;
this table lets the registry find them without scanning installed distributions,
which would cost more than the rest of ``drctl validate``.
"""

from __future__ import annotations

BUILTIN_STEP_TYPES: dict[str, str] = {
    "shell": "drctl.steps.shell:Shell",
    "http": "drctl.steps.http:Http",
    "wait": "drctl.steps.wait:Wait",
    "approve": "drctl.steps.approve:Approve",
    "notify": "drctl.steps.notify:Notify",
    "assert": "drctl.steps.assertion:Assert",
    "postgres.replication_lag": "drctl.providers.postgres.lag:ReplicationLag",
    "postgres.fence": "drctl.providers.postgres.fence:Fence",
    "postgres.promote": "drctl.providers.postgres.promote:Promote",
    "postgres.write_probe": "drctl.providers.postgres.probe:WriteProbe",
    "postgres.rejoin": "drctl.providers.postgres.rejoin:Rejoin",
    "postgres.sql": "drctl.providers.postgres.sql:Sql",
    "postgres.exec": "drctl.providers.postgres.exec:Exec",
    "postgres.choose_primary": "drctl.providers.postgres.choose:ChoosePrimary",
    "postgres.follow": "drctl.providers.postgres.follow:Follow",
    "mongo.rs_status": "drctl.providers.mongo.status:ReplicaSetStatus",
    "mongo.step_down": "drctl.providers.mongo.step_down:StepDown",
    "mongo.freeze": "drctl.providers.mongo.freeze:Freeze",
    "mongo.elect": "drctl.providers.mongo.elect:Elect",
    "mongo.reconfig": "drctl.providers.mongo.reconfig:Reconfig",
    "mongo.write_probe": "drctl.providers.mongo.probe:WriteProbe",
    "ssh.run": "drctl.providers.ssh.run:SshRun",
    "rfc2136.update": "drctl.providers.dns.rfc2136:Update",
    "rfc2136.delete": "drctl.providers.dns.rfc2136:Delete",
    "dns.resolve": "drctl.providers.dns.resolve:Resolve",
    "route53.upsert": "drctl.providers.dns.route53:Upsert",
    "route53.delete": "drctl.providers.dns.route53:Delete",
    "aws.rds_failover": "drctl.providers.aws.rds:RdsFailover",
    "aws.ec2_stop": "drctl.providers.aws.ec2:Ec2Stop",
    "aws.ec2_isolate": "drctl.providers.aws.ec2:Ec2Isolate",
    "patroni.status": "drctl.providers.patroni.status:PatroniStatus",
    "patroni.pause": "drctl.providers.patroni.pause:Pause",
    "patroni.resume": "drctl.providers.patroni.pause:Resume",
    "patroni.switchover": "drctl.providers.patroni.switchover:Switchover",
    "patroni.failover": "drctl.providers.patroni.switchover:Failover",
    "patroni.restart": "drctl.providers.patroni.member:Restart",
    "patroni.reinit": "drctl.providers.patroni.member:Reinit",
}
