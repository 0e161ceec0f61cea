"""``mongo.write_probe``: prove the replica set takes majority writes, by writing and reading back."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

from pydantic import Field

from drctl.errors import StepError
from drctl.providers.mongo.session import Deadline, connect, import_client
from drctl.runbook.model import Duration
from drctl.steps.base import Role, StepContext, StepInputs, StepType


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


class WriteProbe(StepType):
    """Insert a document with ``w: majority, j: true`` and read it back with read concern majority.

    Each try inserts one document (``run_id``, ``step``, a nonce, the time) into
    ``drctl.probe`` with a ``wtimeout``, then reads it back from the primary with read
    concern ``majority``: the write is durable on a majority and visible to majority
    reads. Retries until the deadline (no primary yet, write concern timed out, a
    dropped connection). Publishes ``latency_ms``, ``attempts`` and ``primary``.
    """

    name = "mongo.write_probe"
    Inputs = ProbeInputs
    roles = frozenset({Role.VERIFY})
    target_types = frozenset({"mongo"})
    target_required = True

    def warm_up(self) -> None:
        import_client()

    def describe(self, inputs: StepInputs, target: str | None) -> str:
        assert isinstance(inputs, ProbeInputs)
        return (
            f"write a probe document to {target} with w: majority (wtimeout "
            f"{inputs.wtimeout:g}s) and read it back, up to {inputs.deadline:g}s"
        )

    def apply(self, ctx: StepContext) -> None:
        inputs = ctx.inputs
        assert isinstance(inputs, ProbeInputs)
        from bson import ObjectId
        from pymongo import ReadPreference
        from pymongo.read_concern import ReadConcern
        from pymongo.write_concern import WriteConcern

        uri = str((ctx.target or {})["uri"])
        deadline = Deadline(ctx, inputs.deadline)
        concern = WriteConcern(w="majority", j=True, wtimeout=max(1, int(inputs.wtimeout * 1000)))
        last = "no attempt"
        attempts = 0
        # Bounded by the deadline, and by a count: at most deadline/interval + 1 tries.
        for _ in range(int(inputs.deadline / max(inputs.interval, 0.01)) + 1):
            attempts += 1
            doc = {
                "_id": ObjectId(),
                "run_id": ctx.run_id,
                "step": ctx.step_id,
                "nonce": secrets.token_hex(8),
                "at": datetime.now(UTC),
            }
            t0 = time.monotonic()
            try:
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
                if back is not None and back.get("nonce") == doc["nonce"]:
                    ctx.output("latency_ms", round((time.monotonic() - t0) * 1000, 1))
                    ctx.output("attempts", attempts)
                    ctx.output("primary", f"{primary[0]}:{primary[1]}" if primary else None)
                    ctx.log(f"majority write acknowledged and read back after {attempts} tries")
                    return
                last = "the document read back with read concern majority differs or is missing"
            except StepError as exc:
                last = exc.message
            if deadline.left() < inputs.interval:
                break
            ctx.sleep(inputs.interval)
        raise StepError(
            f"no majority-acknowledged write after {attempts} tries in "
            f"{deadline.elapsed():.1f}s: {last}"
        )
