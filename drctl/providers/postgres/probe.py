"""``postgres.write_probe``: prove the server takes writes, by writing and reading back."""

from __future__ import annotations

import secrets
import time

from pydantic import Field

from drctl.errors import StepError
from drctl.providers.postgres.promote import CREATE_PROBE, PROBE_TABLE
from drctl.providers.postgres.session import connect, import_client, target_dsn
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepContext, StepInputs, StepType


class ProbeInputs(StepInputs):
    deadline: Duration = Field(
        default=30.0, description="Keep trying this long (a new primary may need a moment)."
    )
    interval: Duration = Field(default=0.5, description="Seconds between tries.")


class WriteProbe(StepType):
    """Insert a row into drctl's probe table and read it back, retrying until the deadline.

    The table (``drctl_probe``) is created on first use. With ``dns_server`` on the
    target, the DSN's host is resolved through that server on every try, so the probe
    writes where a client following the name would. Publishes ``latency_ms`` of the
    successful write, ``attempts``, and the ``address`` written through.
    """

    name = "postgres.write_probe"
    Inputs = ProbeInputs
    roles = frozenset({Role.VERIFY})
    target_types = frozenset({"postgres"})
    target_required = True

    def warm_up(self) -> None:
        import_client()

    def describe(self, inputs: StepInputs, target: str | None) -> str:
        assert isinstance(inputs, ProbeInputs)
        return f"write and read back a probe row on {target} (up to {inputs.deadline:g}s)"

    def apply(self, ctx: StepContext) -> None:
        inputs = ctx.inputs
        assert isinstance(inputs, ProbeInputs)
        budget = min(inputs.deadline, ctx.remaining())
        started = time.monotonic()
        attempts = 0
        last = "no attempt"
        # Bounded by the deadline: at most deadline/interval + 1 tries.
        while True:
            attempts += 1
            nonce = secrets.token_hex(8)
            t0 = time.monotonic()
            try:
                # Resolved on every try: a repointed name is followed as a client would.
                dsn, address = target_dsn(ctx, ctx.target)
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
                if back and back[0] == nonce:
                    ctx.output("latency_ms", round((time.monotonic() - t0) * 1000, 1))
                    ctx.output("attempts", attempts)
                    if address is not None:
                        ctx.output("address", address)
                        ctx.log(f"wrote through {address}")
                    return
                last = "the row read back differs"
            except StepError as exc:
                last = exc.message
            if time.monotonic() - started + inputs.interval > budget:
                raise StepError(
                    f"no successful write after {attempts} tries in {time.monotonic() - started:.1f}s: {last}"
                )
            ctx.sleep(inputs.interval)
