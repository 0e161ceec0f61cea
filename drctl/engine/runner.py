"""The Runner: what every run needs around its plan, given once, and the runs it starts.

A run needs a state store, the output sinks, a gate decider, the Ctrl-C state, a clock
and the environment its secrets come from. The CLI decides how those look and tests
decide what is real; the Runner holds them, so ``start`` and ``resume`` (and a drill's,
``drill.run.DrillRunner``) take only what differs between runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from drctl import __version__
from drctl.compiler.compile import compile_runbook
from drctl.compiler.params import ParamInput
from drctl.compiler.plan import Plan
from drctl.engine import events as ev
from drctl.engine.approvals import identity
from drctl.engine.clock import Clock, SystemClock
from drctl.engine.cooldown import check_cooldown
from drctl.engine.executor import Controls, Executor, GateDecider, Interrupts, Options, Outcome
from drctl.engine.journal import Journal
from drctl.engine.lock import RunLock, live_holder
from drctl.engine.redact import Redactor
from drctl.engine.replay import RunState, replay
from drctl.engine.runs import (
    PlanChanged,
    SinkFactory,
    _params_as_flags,
    close_sinks,
    new_run_id,
    refuse_if_unfinished,
    who,
)
from drctl.engine.secrets import Secrets, resolve_plan_secrets
from drctl.engine.status import RunStatus
from drctl.engine.systems import run_lock_key
from drctl.errors import Frozen, LockHeld, ResumeRefused, StateError, UsageError
from drctl.runbook.targets import TargetModel
from drctl.state.base import RunRecord, StateStore, dumps

#: Called with the run id once the run holds its lock and is journaled, before its first step.
ReadyHook = Callable[[str], None]


@dataclass
class Runner:
    """Starts and resumes runs against one store, shown on its sinks, gated by its decider."""

    store: StateStore
    sinks: SinkFactory
    gate: GateDecider
    interrupts: Interrupts = field(default_factory=Interrupts)
    clock: Clock = field(default_factory=SystemClock)
    #: Where ``${env:…}`` secrets are read (None: the process environment).
    environ: Mapping[str, str] | None = None

    def start(  # noqa: PLR0915 (each refusal and warning before the first step, in order)
        self,
        path: str,
        given: ParamInput,
        options: Options,
        *,
        on_ready: ReadyHook | None = None,
        plan: Plan | None = None,
        override_cooldown: str | None = None,
    ) -> tuple[str, Outcome]:
        """Compile and run (or dry-run) a runbook; returns the run id and how it ended.

        ``on_ready`` is called once the run holds its lock and is journaled, just before
        its first step (a drill's canary hooks in there). ``plan``: the runbook already
        compiled with ``given`` (the caller needed its settings first).
        ``override_cooldown``: the reason to start within ``settings.cooldown`` (journaled).
        """
        store, clock = self.store, self.clock
        plan = plan or compile_runbook(path, given)
        redactor = Redactor()
        resolved = resolve_plan_secrets(plan, redactor, self.environ)
        lock_key = run_lock_key(plan, resolved)
        me = who()
        run_id = new_run_id(clock.now())
        record = RunRecord(
            id=run_id, runbook=os.path.abspath(path), name=plan.name, plan_hash=plan.hash,
            plan_json=_plan_json(plan), params_json=dumps(redactor.data(plan.params)),
            user=me.user, host=me.host, pid=me.pid, version=__version__, started_at=clock.now(),
            lock_key=lock_key, dry_run=options.dry_run, cwd=me.cwd,
        )  # fmt: skip
        header = ev.RunStarted(
            run_id=run_id, runbook=record.runbook, name=plan.name, plan_hash=plan.hash,
            params=plan.params, user=me.user, host=me.host, pid=me.pid,
            version=__version__, lock_key=lock_key, dry_run=options.dry_run, cwd=me.cwd,
            identity=identity(plan.settings, self.environ).name,
        )  # fmt: skip
        if options.dry_run:
            # A dry run changes nothing, so it neither takes nor waits for the lock.
            store.create_run(record)
            journal = Journal(store, run_id, None, redactor, clock, self.sinks(plan))
            try:
                journal.write(header)
                executor = Executor(plan, journal, RunState(), resolved, self._controls(options))
                return run_id, executor.dry_run()
            finally:
                close_sinks(journal)
        refuse_if_frozen(store, plan)
        # A dead holder's unfinished run is refused before its lease is touched: a refusal
        # after taking the lease over would leave that takeover journaled nowhere. A live
        # holder is left to acquire, which names it (exit 3).
        try:
            refuse_if_unfinished(store, plan.name, lock_key)
        except LockHeld:
            # Read after the runs: a run's record exists only once its lock was taken.
            if live_holder(store, lock_key, clock.now(), me.host) is None:
                raise
        lock = RunLock(store, clock)
        taken = lock.acquire(lock_key, run_id, me.user, me.host, me.pid)
        live: Journal | None = None
        try:
            # Again under the lock: a run may have stopped unfinished since the check above.
            refuse_if_unfinished(store, plan.name, lock_key)
            # Under the lock, so that of two racing runs the second sees the first's finish.
            overridden = check_cooldown(
                store, plan, clock.now(), override=override_cooldown, by=f"{me.user}@{me.host}"
            )
            store.create_run(record)
            live = Journal(store, run_id, lock, redactor, clock, self.sinks(plan))
            live.write(header)
            if taken.took_over is not None:
                live.write(ev.LockTakenOver(key=lock_key, previous=taken.took_over.describe()))
            if overridden is not None:
                live.write(overridden)
            _warn_about_store(live, store, plan, resolved)
            if on_ready is not None:
                on_ready(run_id)
            controls = self._controls(options, lock, lock_key, plan)
            return run_id, Executor(plan, live, RunState(), resolved, controls).run()
        except StateError as exc:
            if live is not None:  # the run exists: say how to go on with it
                raise _resumable(exc, run_id) from exc.__cause__
            raise
        finally:
            if live is not None:
                close_sinks(live)
            lock.release()

    def resume(
        self,
        run: RunRecord,
        options: Options,
        *,
        accept_plan_hash: str | None = None,
        on_ready: ReadyHook | None = None,
    ) -> Outcome:
        """Continue ``run`` where its journal says it stopped (``on_ready`` as for ``start``).

        Raises PlanChanged when the runbook no longer compiles to the run's plan (unless
        its new hash is ``accept_plan_hash``), ResumeRefused for a run that cannot go on.
        """
        store, clock = self.store, self.clock
        if run.dry_run:
            raise ResumeRefused(f"run {run.id} was a dry run; start a real one with drctl run")
        status = RunStatus(run.status)
        if status is RunStatus.SUCCEEDED:
            return Outcome(status, 0, f"run {run.id} already finished; nothing to do")
        if status.concluded:
            raise ResumeRefused(f"run {run.id} was {status.words}; start a new run")
        history = list(store.events(run.id))
        state = replay(history)
        if os.path.isdir(run.cwd):
            # Relative paths in steps mean what they meant when the run started.
            os.chdir(run.cwd)
        plan = compile_runbook(
            run.runbook, ParamInput(_params_as_flags(json.loads(run.params_json)))
        )
        if plan.hash not in (run.plan_hash, accept_plan_hash):
            raise PlanChanged(run, plan)
        check_decisions(plan, state, options)
        refuse_if_frozen(store, plan, run.lock_key)
        redactor = Redactor()
        resolved = resolve_plan_secrets(plan, redactor, self.environ)
        me = who()
        lock = RunLock(store, clock)
        taken = lock.acquire(run.lock_key, run.id, me.user, me.host, me.pid)
        journal = Journal(store, run.id, lock, redactor, clock, self.sinks(plan))
        for sink in journal.sinks:
            # A view that shows the whole run (the live table) starts from its journal.
            shows_history = getattr(sink, "history", None)
            if shows_history is not None:
                shows_history(history)
        try:
            journal.write(
                ev.RunResumed(
                    user=me.user, host=me.host, pid=me.pid, version=__version__,
                    plan_hash=plan.hash, previous_status=run.status,
                )
            )  # fmt: skip
            if taken.took_over is not None:
                journal.write(
                    ev.LockTakenOver(key=run.lock_key, previous=taken.took_over.describe())
                )
            store.set_status(run.id, RunStatus.RUNNING, None)
            _warn_about_store(journal, store, plan, resolved)
            if on_ready is not None:
                on_ready(run.id)
            controls = self._controls(options, lock, run.lock_key, plan)
            return Executor(plan, journal, state, resolved, controls).run()
        except StateError as exc:
            raise _resumable(exc, run.id) from exc.__cause__
        finally:
            close_sinks(journal)
            lock.release()

    def _controls(
        self,
        options: Options,
        lock: RunLock | None = None,
        lock_key: str | None = None,
        plan: Plan | None = None,
    ) -> Controls:
        store = self.store

        def brake() -> str | None:
            # Asked before every mutating step: a freeze set from any machine sharing
            # the store stops the run at its next step boundary, not at some later poll.
            held = store.freeze_for(lock_key) if lock_key is not None else None
            return None if held is None else held.describe()

        return Controls(
            options=options,
            gate=self.gate,
            clock=self.clock,
            interrupts=self.interrupts,
            lock_lost=lock.lost if lock is not None else None,
            brake=brake if lock_key is not None else None,
            identity=identity(plan.settings, self.environ) if plan is not None else None,
        )


def _plan_json(plan: Plan) -> str:
    """The plan as its run record keeps it: ``to_dict()`` as JSON.

    The hashed text with the hash and the source put first, when that text is ASCII as
    the store's JSON is: encoding a long plan a second time was a sizeable part of
    starting its run.
    """
    text = plan.text()
    if not text.isascii():
        return dumps(plan.to_dict())
    head = dumps({"hash": plan.hash, "source": plan.source})
    return f"{head[:-1]},{text[1:]}"


def refuse_if_frozen(store: StateStore, plan: Plan, lock_key: str | None = None) -> None:
    """Refuse (exit 3) a run that would change something while a freeze covers its lock key."""
    key = plan.lock_key if lock_key is None else lock_key
    held = store.freeze_for(key)
    if held is not None and any(s.mutates for s in (*plan.steps, *plan.fallbacks)):
        raise Frozen(
            f"lock key {key!r} is {held.describe()}",
            hint="no mutating run starts until it is lifted: drctl thaw"
            + (f" --lock {held.prefix}" if held.prefix else "")
            + " --reason '…'",
        )


def _resumable(exc: StateError, run_id: str) -> StateError:
    """``exc`` (the store failed, or the lease was lost) with how to resume the run."""
    how = (
        f"the run stopped: no step runs after its last journaled event. Once the state "
        f"store answers again (and no other run holds the lock), continue it with: "
        f"drctl resume {run_id}"
    )
    hint = f"{exc.hint}; {how}" if exc.hint and "drctl resume" not in exc.hint else how
    return type(exc)(exc.message, hint=hint)


def _warn_about_store(journal: Journal, store: StateStore, plan: Plan, secrets: Secrets) -> None:
    """Say once, before the first step, where the store stands against what the run acts on."""
    from drctl.engine.blast_radius import Endpoint, store_warnings

    def target(name: str) -> TargetModel | None:
        fields = plan.targets.get(name)
        if fields is None:
            return None
        try:
            return secrets.target(name, fields)
        except UsageError:
            return None  # the executor reports a target it cannot build

    endpoints = [Endpoint(host, port) for host, port in store.endpoints()]
    for line in store_warnings(plan, endpoints, store.machine_local, store.location, target):
        journal.note(line)


def check_decisions(plan: Plan, state: RunState, options: Options) -> None:
    """Refuse (before the lock is taken) an operator's decision that cannot mean anything.

    ``--mark-done`` settles only a step left in doubt, and is never silently ignored:
    a decision that would not be acted on is a usage error naming the step's state.
    """
    ids = {s.id for s in plan.steps}
    for flag, named in (("--mark-done", options.mark_done), ("--reapply", options.reapply)):
        for sid in sorted(named):
            if sid not in ids:
                raise UsageError(f"{flag} {sid}: the plan has no step {sid!r}")
    for sid in sorted(options.mark_done & options.reapply):
        raise UsageError(f"--mark-done {sid} and --reapply {sid}: choose one")
    for sid in sorted(options.mark_done):
        step = state.steps.get(sid)
        if step is None or not step.in_doubt:
            where = step.status.value if step is not None else "pending"
            raise UsageError(
                f"--mark-done {sid}: the step is {where}, not in doubt; --mark-done settles "
                "only a step that started and has no known outcome"
            )
    if options.reason and not options.mark_done:
        raise UsageError("--reason goes with --mark-done STEP")
