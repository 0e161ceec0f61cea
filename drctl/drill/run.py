"""Running a drill: the canary, the runbook run, the read-back, the measurement, the journal.

A drill is a normal run (same journal, lock and gates — with no prompt: a gate needs
``--yes`` or ``--approve``) wrapped by a canary writer. When the run ends the canary
writes on briefly (bounded), stops, and the new primary is read back; the measurement
and the verdict are appended to the run's journal as a durable ``drill_measured`` event.

A drill whose run did not finish (stopped at a gate, failed, interrupted) also journals
``drill_paused``: the drill id, the canary's settings (connection strings masked), every
acknowledgement so far and the next sequence number. ``resume_drill`` starts the canary
again from there, resumes the run, and measures the whole drill: RPO over every write
acknowledged in any window, read back once at the end.
"""

from __future__ import annotations

import secrets as pysecrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from drctl.compiler.compile import compile_runbook
from drctl.compiler.params import ParamInput
from drctl.compiler.plan import Plan
from drctl.drill.canary import Ack, Canary, CanaryError, CanarySpec, make_canary
from drctl.drill.conninfo import mask_dsn
from drctl.drill.load import LoadFigures, LoadSpec, PgbenchLoad
from drctl.drill.measure import Measurement, RegressionLimit, Verdict, judge, measure
from drctl.drill.report import first_mutation, history
from drctl.engine import events as ev
from drctl.engine.executor import Options, Outcome
from drctl.engine.runner import ReadyHook, Runner
from drctl.engine.runs import last_pause
from drctl.engine.status import RunStatus
from drctl.errors import RunNotFound, UsageError
from drctl.state.base import Event, RunRecord, StateStore


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


@dataclass(frozen=True)
class _Earlier:
    """What earlier windows of a resumed drill left in the journal."""

    acks: tuple[Ack, ...] = ()
    windows: tuple[tuple[float, float], ...] = ()
    errors: int = 0
    fatal: str | None = None


class DrillRunner(Runner):
    """A Runner whose runs can be drills: a canary writes through them and they are measured."""

    def drill(
        self,
        path: str,
        given: ParamInput,
        options: Options,
        spec: CanarySpec,
        plan: Plan | None = None,
        load: LoadSpec | None = None,
        *,
        regression: RegressionLimit | None = None,
    ) -> DrillResult:
        """Run ``path`` as a drill; the result is journaled on the run before this returns.

        ``plan``: the runbook already compiled with ``given``, if the caller has it;
        ``load``: a pgbench load to run beside the canary (its tables set up first).
        ``regression``: also judge the RTO against the runbook's recent drills.
        """
        # An invalid runbook fails before the canary writes anything.
        plan = plan or compile_runbook(path, given)
        drill_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + pysecrets.token_hex(3)
        canary = make_canary(spec, drill_id)
        canary.warm()
        canary.check()
        canary.prepare()
        bench = PgbenchLoad(load, drill_id) if load is not None else None
        if bench is not None:
            bench.prepare()
        canary.start()
        if bench is not None:
            bench.start()

        def run(ready: ReadyHook) -> tuple[str, Outcome]:
            return self.start(path, given, options, on_ready=ready, plan=plan)

        return _window(
            self.store, canary, run, _Earlier(), start_canary=False, load=bench,
            regression=regression,
        )  # fmt: skip

    def resume_drill(
        self,
        run: RunRecord,
        options: Options,
        *,
        dsn: str | None = None,
        dns_server: str | None = None,
        verify_dsn: str | None = None,
        accept_plan_hash: str | None = None,
        regression: RegressionLimit | None = None,
    ) -> DrillResult:
        """Continue drill ``run`` with its canary writing again; measure the whole drill.

        The journal keeps connection strings masked, so one that held a password must be
        given again (``dsn``, ``verify_dsn``); the others default to what the drill used.
        The canary starts once the run holds its lock again, and does not wait for a first
        acknowledgement: the drill may have stopped with the old primary already fenced.
        """
        events = self.store.events(run.id)
        paused = last_pause(events) if RunStatus(run.status).unfinished else None
        if paused is None:
            raise UsageError(
                f"run {run.id} is not a paused drill: it was no drill, it is {RunStatus(run.status).words}, "
                "its drill concluded, or it went on without its canary",
                hint="drctl log shows its events; drctl resume continues a run that is not a drill",
            )
        saved = paused.canary
        if dns_server is not None and dns_server != saved.dns_server:
            raise UsageError(
                f"--canary-dns-server is not the one the drill started with "
                f"({saved.dns_server or 'none'})",
                hint="a drill is measured through one client path from start to end",
            )
        spec = CanarySpec(
            kind=saved.kind,
            dsn=_given_again(dsn, saved.dsn, True, saved.dsn_masked, "--canary-dsn") or "",
            dns_server=saved.dns_server,
            verify_dsn=_given_again(
                verify_dsn, saved.verify_dsn, saved.verify_dsn_given, saved.verify_dsn_masked,
                "--verify-dsn",
            ),
            interval=saved.interval,
            timeout=saved.timeout,
            settle=saved.settle,
        )  # fmt: skip
        earlier = _earlier(events)
        canary = make_canary(spec, paused.drill_id, first_seq=paused.next_seq)
        canary.warm()
        canary.check()

        def go_on(ready: ReadyHook) -> tuple[str, Outcome]:
            outcome = self.resume(run, options, accept_plan_hash=accept_plan_hash, on_ready=ready)
            return run.id, outcome

        return _window(self.store, canary, go_on, earlier, start_canary=True, regression=regression)


def _window(
    store: StateStore,
    canary: Canary,
    body: Callable[[Callable[[str], None]], tuple[str, Outcome]],
    earlier: _Earlier,
    *,
    start_canary: bool,
    load: PgbenchLoad | None = None,
    regression: RegressionLimit | None = None,
) -> DrillResult:
    """One window of a drill: the run (``body``) with the canary writing, then the conclusion.

    ``body`` gets the hook the run calls once it holds its lock (there the canary starts,
    when ``start_canary``). Whatever happens after that, an unfinished run gets its
    ``drill_paused``, so that no acknowledgement of this window is lost to a resume.
    """
    run_ids: list[str] = []

    def ready(run_id: str) -> None:
        run_ids.append(run_id)
        if start_canary:
            canary.start(first_ack_within=None)

    try:
        run_id, outcome = body(ready)
        if canary.started_at:
            _settle(canary, canary.spec.settle)
    except BaseException:
        if load is not None:
            load.stop()
        canary.stop()
        if run_ids and _unfinished(store, run_ids[0]):
            _journal_pause(store, run_ids[0], canary)
        raise
    figures = load.stop() if load is not None else None
    canary.stop()
    return _conclude(store, run_id, outcome, canary, earlier, figures, regression)


def _unfinished(store: StateStore, run_id: str) -> bool:
    record = store.get_run(run_id)
    return record is not None and not RunStatus(record.status).concluded


def _earlier(events: Sequence[Event]) -> _Earlier:
    """The windows, acknowledgements and errors of a drill's earlier ``drill_paused`` events."""
    acks: list[Ack] = []
    windows: list[tuple[float, float]] = []
    errors = 0
    fatal: str | None = None
    for event in events:
        if event.kind != ev.DRILL_PAUSED:
            continue
        paused = ev.DrillPaused.read(event)
        acks += _acks_from(paused.acks)
        if paused.window is not None:  # none when the canary of that attempt never started
            windows.append(paused.window)
        errors += paused.canary_errors
        fatal = fatal or paused.canary_failed
    return _Earlier(tuple(acks), tuple(windows), errors, fatal)


def _settings(
    canary: Canary, windows: Sequence[tuple[float, float]], read_from: str
) -> ev.CanarySettings:
    """The canary's settings as journaled: connection strings masked, and whether they were."""
    spec = canary.spec
    return ev.CanarySettings(
        kind=canary.kind,
        dsn=mask_dsn(spec.dsn),
        dsn_masked=mask_dsn(spec.dsn) != spec.dsn,
        dns_server=spec.dns_server,
        verify_dsn=read_from,
        verify_dsn_given=spec.verify_dsn is not None,
        verify_dsn_masked=spec.verify_dsn is not None
        and mask_dsn(spec.verify_dsn) != spec.verify_dsn,
        interval=spec.interval,
        timeout=spec.timeout,
        settle=spec.settle,
        started_at=windows[0][0] if windows else None,
        stopped_at=windows[-1][1] if windows else None,
    )


def _journal_pause(store: StateStore, run_id: str, canary: Canary) -> None:
    """Journal this window of an unfinished drill, so that a resume can measure it whole.

    Each ``drill_paused`` holds its own window's acknowledgements; a resume reads them all.
    """
    window = (canary.started_at, canary.stopped_at) if canary.started_at else None
    spec = canary.spec
    store.append(
        run_id,
        Event(
            ev.DRILL_PAUSED,
            time.time(),
            data=ev.DrillPaused(
                drill_id=canary.drill_id,
                canary=_settings(
                    canary, [window] if window else [], mask_dsn(spec.verify_dsn or spec.dsn)
                ),
                next_seq=canary.next_seq,
                window=window,
                acks=_acks_to(canary.acks()),
                canary_errors=canary.errors,
                canary_failed=canary.fatal,
            ).to_json(),
        ),
        None,
    )


def _conclude(
    store: StateStore,
    run_id: str,
    outcome: Outcome,
    canary: Canary,
    earlier: _Earlier,
    load: LoadFigures | None = None,
    regression: RegressionLimit | None = None,
) -> DrillResult:
    """Read back, measure the drill's every window, and journal it (and a pause, if any)."""
    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(f"run {run_id} vanished from {store.location}")
    events = store.events(run_id)
    acks = [*earlier.acks, *canary.acks()]
    windows = [*earlier.windows]
    if canary.started_at:
        windows.append((canary.started_at, canary.stopped_at))
    errors = earlier.errors + canary.errors
    spec = canary.spec
    paused = not RunStatus(record.status).concluded
    if paused:
        # First: whatever fails below, a resume must find this window's acknowledgements.
        _journal_pause(store, run_id, canary)
    address, read_error = "", None
    read_from = mask_dsn(spec.verify_dsn or spec.dsn)
    try:
        present, address, read_from = canary.read_back()
    except CanaryError as exc:
        # The run happened: journal what was measured, and that RPO could not be.
        present, read_error = {a.seq for a in acks}, exc.message
    measured = measure(
        acks, present, windows=windows, first_mutation_at=first_mutation(record, events),
        # A paused drill has no new primary yet: the one read back may be the old one.
        new_primary_address="" if paused else address, canary_errors=errors,
        discarded=_discarded(events),
    )  # fmt: skip
    objectives = _objectives(record)
    verdict = judge(measured, objectives)
    if read_error is not None:
        verdict = replace(verdict, rpo_met=False)
    fatal = canary.fatal or earlier.fatal
    if fatal is not None:
        # The writer stopped by surprise: the gap after it measured drctl, not the database.
        verdict = replace(verdict, rto_met=False, rpo_met=False)
    if regression is not None:
        # A paused drill's RTO is not final yet; the drill that concludes it is judged.
        rtos = [] if paused else _earlier_rtos(store, record)
        verdict = regression.judge(verdict, measured.rto, rtos)
    result = DrillResult(run_id, outcome, measured, verdict)
    store.append(
        run_id,
        Event(
            ev.DRILL_MEASURED,
            time.time(),
            data=ev.DrillMeasured(
                drill_id=canary.drill_id,
                canary=_settings(canary, windows, read_from),
                windows=tuple(windows),
                objectives=objectives,
                measurement=measured.to_json(),
                verdict=asdict(verdict),
                read_back_error=read_error,
                canary_failed=fatal,
                run_exit_code=outcome.exit_code,
                run_message=outcome.message,
                paused=paused,
                passed=outcome.exit_code == 0 and verdict.passed,
                exit_code=result.exit_code,
                load=load.to_json() if load is not None else None,
            ).to_json(),
        ),
        None,
    )
    return result


def _discarded(events: Sequence[Event]) -> tuple[int, int]:
    """Bytes and committed writes the run's rewinds discarded, from their journaled ranges.

    The last range each step journaled (before its pg_rewind ran), for a step that then
    succeeded (a refused one discarded nothing), counted only where it held committed
    writes: a range of checkpoints alone loses nothing.
    """
    ranges: dict[str, tuple[int, int]] = {}
    succeeded: set[str] = set()
    for event in events:
        if event.kind == ev.STEP_SUCCEEDED and event.step is not None:
            succeeded.add(event.step)
        fact = ev.decode(event) if event.kind == ev.STEP_RECORDED else None
        if isinstance(fact, ev.StepRecorded) and fact.key == "discarded":
            value = fact.value if isinstance(fact.value, dict) else {}
            ranges[fact.step] = (int(value.get("bytes") or 0), int(value.get("commits") or 0))
            succeeded.discard(fact.step)
    held = [r for step, r in ranges.items() if r[1] > 0 and step in succeeded]
    return sum(r[0] for r in held), sum(r[1] for r in held)


def _given_again(value: str | None, saved: str, given: bool, masked: bool, flag: str) -> str | None:
    """A connection string for a resumed drill: as saved (masked ``saved``), or given again.

    One given again must mask to what the drill journaled, so a typo or another database
    cannot make the second window measure something else. ``given``: the drill started
    with one (the canary's own DSN always is).
    """
    if value is None:
        if not given:
            return None
        if masked:
            raise UsageError(
                f"the drill's {flag} held a password, which drctl does not keep",
                hint=f"give {flag} again to resume the drill",
            )
        return saved
    if not given:
        raise UsageError(f"the drill was started without {flag}; resume it without one too")
    if mask_dsn(value) != saved:
        raise UsageError(
            f"{flag} is not the one the drill started with ({saved})",
            hint="a drill is measured through one connection string from start to end",
        )
    return value


def _acks_to(acks: Sequence[Ack]) -> ev.AckLog:
    """Acknowledgements in a compact form for the journal: addresses listed once."""
    addresses: dict[str, int] = {}
    rows = tuple(
        (a.seq, round(a.at, 6), addresses.setdefault(a.address, len(addresses))) for a in acks
    )
    return ev.AckLog(tuple(addresses), rows)


def _acks_from(saved: ev.AckLog) -> tuple[Ack, ...]:
    return tuple(Ack(seq, at, saved.addresses[i]) for seq, at, i in saved.rows)


def _settle(canary: Canary, seconds: float) -> None:
    """Let the canary write on for up to ``seconds`` after the run, until a fresh ack lands."""
    ended = time.time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        acks = canary.acks()
        if acks and acks[-1].at > ended + min(0.2, seconds):
            return
        time.sleep(0.02)


def _earlier_rtos(store: StateStore, record: RunRecord) -> list[float]:
    """RTOs of the runbook's earlier drills whose run succeeded, newest first.

    A drill whose run failed or paused measured a failover that did not happen (or not
    yet), so its RTO says nothing about how long one takes.
    """
    return [
        entry.rto
        for entry in history(store, record.name)
        if entry.run_id != record.id and entry.run_status == RunStatus.SUCCEEDED
    ]


def _objectives(record: RunRecord) -> dict[str, float | None]:
    raw = record.plan().objectives
    return {k: raw.get(k) for k in ("rto", "rpo")}
