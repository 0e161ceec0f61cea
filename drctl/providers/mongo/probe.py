"""``mongo.write_probe``: prove the replica set takes majority writes, by writing and reading back."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from pydantic import Field

from drctl.errors import StepError
from drctl.providers.mongo.base import MongoContext, MongoStep
from drctl.providers.mongo.session import connect
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepInputs, published


class ProbeInputs(StepInputs):
    database: str = Field(default="drctl", description="Database of the probe collection.")
    collection: str = Field(default="probe", description="Collection the probe documents go to.")
    wtimeout: Duration = Field(
        default=5.0, description="How long the primary may wait for a majority to acknowledge."
    )
    deadline: Duration = Field(
        default=30.0, description="Keep trying this long (a new primary may need a moment)."
    )
    interval: Duration = Field(default=0.5, description="Seconds between tries.")


Ctx = MongoContext[ProbeInputs]


class WriteProbe(MongoStep[ProbeInputs]):
    """Insert a document with ``w: majority, j: true`` and read it back with read concern majority.

    Each try inserts one document (``run_id``, ``step``, a nonce, the time) into
    ``drctl.probe`` with a ``wtimeout``, then reads it back from the primary with read
    concern ``majority``: the write is durable on a majority and visible to majority
    reads. Retries until the deadline (no primary yet, write concern timed out, a
    dropped connection). Publishes ``latency_ms``, ``attempts`` and ``primary``.
    """

    name = "mongo.write_probe"
    outputs = published(
        {
            "latency_ms": "The successful write's latency.",
            "attempts": "Tries it took.",
            "primary": "The member that took the write.",
        }
    )
    Inputs = ProbeInputs

    def runs_in_dry_run(self, inputs: ProbeInputs) -> bool:
        return False  # it writes a probe document

    roles = frozenset({Role.VERIFY})

    def describe(self, inputs: ProbeInputs, target: str | None) -> str:
        return (
            f"write a probe document to {target} with w: majority (wtimeout "
            f"{inputs.wtimeout:g}s) and read it back, up to {inputs.deadline:g}s"
        )

    def apply(self, ctx: Ctx) -> None:
        inputs = ctx.inputs
        from bson import ObjectId
        from pymongo import ReadPreference
        from pymongo.read_concern import ReadConcern
        from pymongo.write_concern import WriteConcern

        uri = ctx.target.uri
        concern = WriteConcern(w="majority", j=True, wtimeout=max(1, int(inputs.wtimeout * 1000)))

        def write() -> tuple[float, str | None]:
            doc = {
                "_id": ObjectId(),
                "run_id": ctx.run_id,
                "step": ctx.step_id,
                "nonce": secrets.token_hex(8),
                "at": datetime.now(UTC),
            }
            t0 = ctx.monotonic()
            with connect(uri, ctx, what="write probe", cap=inputs.wtimeout + 5.0) as client:
                coll = client[inputs.database].get_collection(
                    inputs.collection,
                    write_concern=concern,
                    read_concern=ReadConcern("majority"),
                    read_preference=ReadPreference.PRIMARY,
                )
                coll.insert_one(doc)
                back = coll.find_one({"_id": doc["_id"]})
                primary = client.primary
            if back is None or back.get("nonce") != doc["nonce"]:
                raise StepError(
                    "the document read back with read concern majority differs or is missing"
                )
            return ctx.monotonic() - t0, f"{primary[0]}:{primary[1]}" if primary else None

        polled = ctx.poll(
            write, every=inputs.interval, within=inputs.deadline, retry_on=(StepError,)
        )
        if polled.value is None:
            last = polled.error.message if polled.error else "no attempt"
            raise StepError(
                f"no majority-acknowledged write after {polled.polls} tries in "
                f"{polled.waited:.1f}s: {last}"
            ) from polled.error
        took, primary = polled.value
        ctx.output("latency_ms", round(took * 1000, 1))
        ctx.output("attempts", polled.polls)
        ctx.output("primary", primary)
        ctx.log(f"majority write acknowledged and read back after {polled.polls} tries")
