"""``PostgresStep``: what every PostgreSQL step type shares — its target and its warm-up."""

from __future__ import annotations

from drctl.runbook.targets import PostgresTarget
from drctl.steps.base import I, StepContext, StepType


class PostgresStep(StepType[I, PostgresTarget]):
    """Base of the ``postgres.*`` step types: a required ``postgres`` target, psycopg warmed up."""

    target_types = frozenset({"postgres"})
    target_required = True

    def warm_up(self) -> None:
        # Everything the steps import lazily: psycopg and the modules they reach into,
        # dnspython for a target's dns_server.
        import dns.message
        import dns.query
        import dns.rdatatype  # noqa: F401
        import psycopg
        import psycopg.conninfo
        import psycopg.errors  # noqa: F401


#: The context a PostgreSQL step type with inputs ``I`` gets.
PostgresContext = StepContext[I, PostgresTarget]
