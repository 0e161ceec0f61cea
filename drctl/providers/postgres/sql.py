"""``postgres.sql``: a read-only query with an expected result, for custom checks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from drctl.errors import StepError
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.session import connect
from drctl.steps.base import Role, StepInputs, published, short


class SqlInputs(StepInputs):
    query: str = Field(description="A read-only query; it runs in a read-only session.")
    expect: Any = Field(
        default=None,
        description="The expected first column of the first row; or a list of rows (lists) for the whole result.",
    )
    roles: list[Literal["verify", "lag_check"]] = Field(
        default=["verify"],
        description=(
            "What the check counts as for the safety lints: verify (DR004) and/or lag_check "
            "(DR002: a custom lag or data-loss query before a promote)."
        ),
    )


Ctx = PostgresContext[SqlInputs]


class Sql(PostgresStep[SqlInputs]):
    """Run a read-only query and compare its result with ``expect``; publishes ``rows``.

    ``roles`` says what the check stands for in the safety lints: ``[lag_check]`` makes a
    custom lag or data-loss query (say, one reading a monitoring table) the check DR002
    wants before a promote.
    """

    name = "postgres.sql"
    outputs = published(
        {
            "rows": "The result rows (lists of values).",
        }
    )
    Inputs = SqlInputs
    roles = frozenset({Role.VERIFY})

    def step_roles(self, inputs: SqlInputs) -> frozenset[Role]:
        return frozenset(Role(r) for r in inputs.roles)

    def describe(self, inputs: SqlInputs, target: str | None) -> str:
        expect = "" if inputs.expect is None else f", expect {short(inputs.expect, 30)}"
        return f"query {target}: {short(inputs.query, 50)}{expect}"

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        with connect(ctx.target, ctx, what="query", read_only=True) as conn:
            rows = [list(r) for r in conn.execute(inputs.query).fetchall()]
        plain = [
            [v if isinstance(v, str | int | float | bool) or v is None else str(v) for v in r]
            for r in rows
        ]
        ctx.output("rows", plain)
        if inputs.expect is None:
            return
        if isinstance(inputs.expect, list):
            if plain != inputs.expect:
                raise StepError(
                    f"query returned {short(plain, 80)}, expected {short(inputs.expect, 80)}"
                )
            return
        first = plain[0][0] if plain and plain[0] else None
        if first != inputs.expect and str(first) != str(inputs.expect):
            raise StepError(f"query returned {first!r}, expected {inputs.expect!r}")
