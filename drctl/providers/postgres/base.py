"""``PostgresStep``: what every PostgreSQL step type shares — its target and its warm-up."""

from __future__ import annotations

from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import I, StepContext, StepType


class PostgresStep(StepType[I, PostgresTarget]):
    """Base of the ``postgres.*`` step types: a required ``postgres`` target, psycopg warmed up."""

    target_types = frozenset({"postgres"})
    target_required = True

    def warm_up(self) -> None:
        # Everything the steps import lazily: psycopg and the modules they reach into.
        # Not dnspython, which only a target with a dns_server needs: that resolution
        # warms it through the import lock itself (session._resolve_a), so the first
        # step does not wait for it.
        import psycopg
        import psycopg.conninfo
        import psycopg.errors  # noqa: F401


#: The context a PostgreSQL step type with inputs ``I`` gets.
PostgresContext = StepContext[I, PostgresTarget]
