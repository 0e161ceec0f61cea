"""``postgres.write_probe``: prove the server takes writes, by writing and reading back."""

from __future__ import annotations

import secrets

from pydantic import Field

from drctl.errors import StepError
from drctl.providers.postgres.base import PostgresContext, PostgresStep
from drctl.providers.postgres.promote import CREATE_PROBE, PROBE_TABLE
from drctl.providers.postgres.session import connect, target_dsn
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepInputs, published


class ProbeInputs(StepInputs):
    deadline: Duration = Field(
        default=30.0, description="Keep trying this long (a new primary may need a moment)."
    )
    interval: Duration = Field(default=0.5, description="Seconds between tries.")


Ctx = PostgresContext[ProbeInputs]


class WriteProbe(PostgresStep[ProbeInputs]):
    """Insert a row into drctl's probe table and read it back, retrying until the deadline.

    The table (``drctl_probe``) is created on first use. With ``dns_server`` on the
    target, the DSN's host is resolved through that server on every try, so the probe
    writes where a client following the name would. Publishes ``latency_ms`` of the
    successful write, ``attempts``, and the ``address`` written through.
    """

    name = "postgres.write_probe"
    outputs = published(
        {
            "latency_ms": "The successful write's latency.",
            "attempts": "Tries it took.",
            "address": "The address written through (with the target's dns_server).",
        }
    )
    Inputs = ProbeInputs

    def runs_in_dry_run(self, inputs: ProbeInputs) -> bool:
        return False  # it writes a probe row

    wait_fields = ("deadline",)
    roles = frozenset({Role.VERIFY})

    def describe(self, inputs: ProbeInputs, target: str | None) -> str:
        return f"write and read back a probe row on {target} (up to {inputs.deadline:g}s)"

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        tries = 0

        def write() -> tuple[float, str | None]:
            nonlocal tries
            tries += 1
            nonce = secrets.token_hex(8)
            t0 = ctx.monotonic()
            # Resolved on every try: a repointed name is followed as a client would.
            dsn, address = target_dsn(ctx, ctx.target.dsn, ctx.target.dns_server)
            with connect(dsn, ctx, what="probe", cap=5.0) as conn:
                with conn.transaction():
                    conn.execute(CREATE_PROBE)
                    row = conn.execute(
                        f"INSERT INTO {PROBE_TABLE} (run_id, step, nonce) VALUES (%s, %s, %s) RETURNING id",
                        (ctx.run_id, ctx.step_id, nonce),
                    ).fetchone()
                back = conn.execute(
                    f"SELECT nonce FROM {PROBE_TABLE} WHERE id = %s", (row[0],)
                ).fetchone()
            if not (back and back[0] == nonce):
                raise StepError("the row read back differs")
            return ctx.monotonic() - t0, address

        polled = ctx.poll(
            write, every=inputs.interval, within=inputs.deadline, retry_on=(StepError,)
        )
        if polled.value is None:
            last = polled.error.message if polled.error else "no attempt"
            raise StepError(
                f"no successful write after {polled.polls} tries in {polled.waited:.1f}s: {last}"
            ) from polled.error
        took, address = polled.value
        ctx.output("latency_ms", round(took * 1000, 1))
        ctx.output("attempts", polled.polls)
        if address is not None:
            ctx.output("address", address)
            ctx.log(f"wrote through {address}")
