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
}
