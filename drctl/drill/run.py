"""Running a drill: the canary, the runbook run, the read-back, the measurement, the journal.

A drill is a normal run (same journal, lock and gates — with no prompt: a gate needs
``--yes`` or ``--approve``) wrapped by a canary writer. When the run ends the canary
writes on briefly (bounded), stops, and the new primary is read back; the measurement
and the verdict are appended to the run's journal as a durable ``drill_measured`` event.
"""

from __future__ import annotations

import secrets as pysecrets
import time
from dataclasses import asdict, dataclass, replace

from drctl.compiler.compile import compile_runbook
from drctl.compiler.params import ParamInput
from drctl.drill.canary import CanaryError, PostgresCanary, read_back, resolve_dsn
from drctl.drill.measure import Measurement, Verdict, judge, measure
from drctl.drill.report import DRILL_MEASURED, first_mutation, mask_dsn
from drctl.engine.executor import GateDecider, Interrupts, Options, Outcome
from drctl.engine.runs import SinkFactory, start
from drctl.errors import RunNotFound
from drctl.state.base import Event, StateStore


@dataclass(frozen=True)
class CanarySpec:
    """Where the canary writes (the application's DSN) and where the drill reads back."""

    dsn: str
    dns_server: str | None = None
    verify_dsn: str | None = None
    interval: float = 0.02
    timeout: float = 1.0
    #: How long the canary keeps writing after the run ended (to see the new primary).
    settle: float = 2.0


@dataclass(frozen=True)
class DrillResult:
    run_id: str
    outcome: Outcome
    measurement: Measurement
    verdict: Verdict

    @property
    def exit_code(self) -> int:
        if self.outcome.exit_code != 0:
            return self.outcome.exit_code
        return 0 if self.verdict.passed else 1


def drill(
    path: str,
    given: ParamInput,
    options: Options,
    store: StateStore,
    sinks: SinkFactory,
    gate: GateDecider,
    interrupts: Interrupts,
    canary_spec: CanarySpec,
) -> DrillResult:
    """Run ``path`` as a drill; the result is journaled on the run before this returns."""
    compile_runbook(path, given)  # an invalid runbook fails before the canary writes anything
    drill_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + pysecrets.token_hex(3)
    canary = PostgresCanary(
        canary_spec.dsn, drill_id, dns_server=canary_spec.dns_server,
        interval=canary_spec.interval, timeout=canary_spec.timeout,
    )  # fmt: skip
    canary.prepare()
    canary.start()
    try:
        run_id, outcome = start(path, given, options, store, sinks, gate, interrupts)
        _settle(canary, canary_spec.settle)
    finally:
        canary.stop()
    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(f"run {run_id} vanished from {store.location}")
    events = store.events(run_id)
    acks = canary.acks()
    verify_dsn, address, read_error = canary_spec.verify_dsn or canary_spec.dsn, "", None
    try:
        if canary_spec.verify_dsn:
            verify_dsn, address = resolve_dsn(canary_spec.verify_dsn, None)
        else:
            verify_dsn, address = resolve_dsn(canary_spec.dsn, canary_spec.dns_server, 3.0)
        present = read_back(verify_dsn, drill_id)
    except CanaryError as exc:
        # The run happened: journal what was measured, and that RPO could not be.
        present, read_error = {a.seq for a in acks}, exc.message
    measured = measure(
        acks, present, started_at=canary.started_at, stopped_at=canary.stopped_at,
        first_mutation_at=first_mutation(record, events), new_primary_address=address,
        canary_errors=canary.errors,
    )  # fmt: skip
    objectives = _objectives(record.plan_json)
    verdict = judge(measured, objectives)
    if read_error is not None:
        verdict = replace(verdict, rpo_met=False)
    result = DrillResult(run_id, outcome, measured, verdict)
    store.append(
        run_id,
        Event(
            DRILL_MEASURED,
            time.time(),
            data={
                "drill_id": drill_id,
                "canary": {
                    "kind": "postgres",
                    "dsn": mask_dsn(canary_spec.dsn),
                    "dns_server": canary_spec.dns_server,
                    "verify_dsn": mask_dsn(verify_dsn),
                    "interval": canary_spec.interval,
                    "started_at": canary.started_at,
                    "stopped_at": canary.stopped_at,
                },
                "objectives": objectives,
                "measurement": measured.to_json(),
                "verdict": asdict(verdict),
                "read_back_error": read_error,
                "run_exit_code": outcome.exit_code,
                "run_message": outcome.message,
                "passed": outcome.exit_code == 0 and verdict.passed,
                "exit_code": result.exit_code,
            },
        ),
        None,
    )
    return result


def _settle(canary: PostgresCanary, seconds: float) -> None:
    """Let the canary write on for up to ``seconds`` after the run, until a fresh ack lands."""
    ended = time.time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        acks = canary.acks()
        if acks and acks[-1].at > ended + min(0.2, seconds):
            return
        time.sleep(0.02)


def _objectives(plan_json: str) -> dict[str, float | None]:
    import json

    raw = json.loads(plan_json).get("objectives") or {}
    return {k: (None if raw.get(k) is None else float(raw[k])) for k in ("rto", "rpo")}
