"""``postgres.exec``: run statements that change a server (CHECKPOINT, ALTER SYSTEM, reload)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from drctl.errors import StepError, Unreachable, first_line
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.session import connect, scalar
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepInputs, published, short


class ExecInputs(StepInputs):
    sql: list[str] = Field(
        description=(
            "One statement, or a list run in order, each on its own (autocommit): ALTER "
            "SYSTEM and CHECKPOINT cannot run inside a transaction block."
        ),
    )
    verify: str | None = Field(
        default=None,
        description=(
            "A read-only query whose first column of the first row proves the effect "
            "(e.g. SHOW work_mem); without it nothing proves the step (lint DR004)."
        ),
    )
    expect: Any = Field(
        default=True, description="What the verify query must return (compared as text too)."
    )
    within: Duration = Field(
        default=5.0,
        description="Keep asking the verify query this long (a reload takes effect a moment later).",
    )

    @field_validator("sql", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("sql")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value or not all(s.strip() for s in value):
            raise ValueError("give at least one statement, none of them empty")
        return value


Ctx = PostgresContext[ExecInputs]


class Exec(PostgresStep[ExecInputs]):
    """Run statements that change the server, then prove their effect with a ``verify`` query.

    For the everyday parts of a procedure that need no ``shell``: ``CHECKPOINT`` before a
    switchover, ``ALTER SYSTEM SET …`` and ``SELECT pg_reload_conf()``. Each statement
    runs on its own in an autocommit session, in order; the first that fails fails the
    step. ``verify`` (a read-only query) is asked until its first value equals ``expect``
    or ``within`` runs out: after ``apply``, and on resume to tell whether an interrupted
    step took effect. A dry run connects read-only and reports what the verify query
    says now; it runs none of the statements.

    Publishes ``statements`` (how many ran) and ``value``, what the verify query returned.
    """

    name = "postgres.exec"
    outputs = published(
        {
            "statements": "How many statements ran.",
            "value": "What the verify query returned last.",
        }
    )
    Inputs = ExecInputs
    roles = frozenset({Role.MUTATING})

    def verifies(self, inputs: ExecInputs) -> bool:
        return inputs.verify is not None

    def describe(self, inputs: ExecInputs, target: str | None) -> str:
        shown = "; ".join(inputs.sql)
        check = (
            f", verify {short(inputs.verify, 30)} = {short(inputs.expect, 20)}"
            if inputs.verify
            else ""
        )
        return f"run on {target}: {short(shown, 60)}{check}"

    def check(self, ctx: Ctx) -> str | None:
        inputs = ctx.inputs
        with connect(ctx.target, ctx, what="server", read_only=True, cap=5.0) as conn:
            now = scalar(conn, inputs.verify) if inputs.verify else None
        todo = f"would run {len(inputs.sql)} statement(s): {short('; '.join(inputs.sql), 60)}"
        if inputs.verify is None:
            return todo
        if _matches(now, inputs.expect):
            return f"{todo} (the verify query already returns {now!r})"
        return f"{todo} (the verify query returns {now!r} now, {inputs.expect!r} expected after)"

    def apply(self, ctx: Ctx) -> None:
        import psycopg

        inputs = ctx.inputs
        with connect(ctx.target, ctx, what="server") as conn:
            for n, statement in enumerate(inputs.sql, 1):
                try:
                    conn.execute(statement)
                except psycopg.Error as exc:
                    raise StepError(
                        f"statement {n} ({short(statement, 40)}) failed: {first_line(exc)}"
                    ) from exc
                ctx.log(f"ran: {short(statement, 80)}")
        ctx.output("statements", len(inputs.sql))
        if inputs.verify is None:
            return
        value = self._poll(ctx)
        ctx.output("value", _plain(value.found))
        if not value.ok:
            raise StepError(
                f"after {len(inputs.sql)} statement(s), {short(inputs.verify, 40)} returned "
                f"{value.found!r}, expected {inputs.expect!r} (asked for {inputs.within:g}s)"
            )

    def verify(self, ctx: Ctx) -> bool:
        if ctx.inputs.verify is None:
            return True
        return self._poll(ctx).ok

    def _poll(self, ctx: Ctx) -> _Seen:
        inputs = ctx.inputs
        query = inputs.verify or "SELECT true"
        last: list[Any] = [None]

        def ask() -> bool | None:
            with connect(ctx.target, ctx, what="server", read_only=True, cap=3.0) as conn:
                last[0] = scalar(conn, query)
            return True if _matches(last[0], inputs.expect) else None

        polled = ctx.poll(ask, every=0.2, within=inputs.within, retry_on=(Unreachable,))
        return _Seen(polled.done, last[0])


@dataclass(frozen=True)
class _Seen:
    """What the verify query returned last, and whether it was what was expected."""

    ok: bool
    found: Any


def _matches(value: Any, expect: Any) -> bool:
    return bool(value == expect or str(value) == str(expect))


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
