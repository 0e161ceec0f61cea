"""Executing a plan: the scheduler, attempts, retries, fallbacks, rollback, dry-run.

The executor owns everything a step type must not be able to skip: the journal
entry before each action, timeouts, retries, the approval gate, verification after
apply, and the decision on resume (a step started with no outcome is probed with
``verify`` before anything is applied again).

Threads: the scheduler runs in the caller's thread and starts each step in a
worker pool (``--concurrency``). Each call into a step type runs in its own daemon
thread bounded by the step's deadline, so a hung call cannot hang the run; a type whose
calls bound themselves (``returns_in_time``: a fixed wait, a local command killed at
its deadline) is called in the worker thread, saving the hop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import heapq
import queue
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from drctl.compiler.plan import (
    ApprovalPolicy,
    CompiledGuard,
    CompiledStep,
    FailurePolicy,
    Plan,
    TripAction,
    expression_text,
)
from drctl.compiler.secret_scan import mask
from drctl.compiler.templating import TemplateProblem, analyze, is_template, render
from drctl.engine import events as ev
from drctl.engine import faults, shown
from drctl.engine.approvals import Identity, gate_digest, identity, starter, tally, who_may
from drctl.engine.clock import Clock
from drctl.engine.context import StepRun, facts_of, fences_before, waits_for
from drctl.engine.journal import Journal
from drctl.engine.replay import RunState, StepState
from drctl.engine.secrets import Secrets
from drctl.engine.status import GateVerdict, RunStatus, StepStatus, StopReason
from drctl.errors import (
    Cancelled,
    StateError,
    StepError,
    StepTimeout,
    StepTypeError,
    Unreachable,
    VerifyFailed,
)
from drctl.runbook.durations import format_duration
from drctl.runbook.targets import TargetModel
from drctl.steps.base import Role, StepInputs, StepType
from drctl.steps.registry import get_step_type

if TYPE_CHECKING:
    # Imported where a runbook has guards: most have none.
    from drctl.engine.guards import Guardian, Reading, Trip

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    #: Steps run at once; None: the runbook's ``settings.concurrency`` (default 8).
    concurrency: int | None = None
    dry_run: bool = False
    yes: bool = False
    approve: frozenset[str] = frozenset()
    reapply: frozenset[str] = frozenset()
    mark_done: frozenset[str] = frozenset()
    #: Why a ``mark_done`` step whose verify does not confirm it is marked done anyway.
    reason: str | None = None


@dataclass(frozen=True)
class Outcome:
    status: RunStatus
    exit_code: int
    message: str


class Interrupts:
    """Ctrl-C state: the first press stops launching steps, the second cancels in-flight ones."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.cancel = threading.Event()
        self._presses = 0
        self._lock = threading.Lock()

    def press(self) -> int:
        with self._lock:
            self._presses += 1
            if self._presses == 1:
                self.stop.set()
            else:
                self.cancel.set()
            return self._presses


#: Decides a gate: its verdict, and how or by whom (``--approve promote``, a name).
GateDecider = Callable[[CompiledStep], tuple[GateVerdict, str]]


class Halt(StrEnum):
    """How a step ended that is no step status: the scheduler stops on each."""

    CANCELLED = "cancelled"  # Ctrl-C twice: left in doubt, resume verifies it
    IN_DOUBT = "in_doubt"  # interrupted earlier, and it cannot verify itself
    LOCK_LOST = "lock_lost"  # the run lost its lock while the step ran


@dataclass
class _Result:
    step: str
    status: StepStatus | Halt
    message: str = ""
    #: The last attempt made, for a step that failed.
    attempt: int | None = None


@dataclass
class _Ctx:
    plan: Plan
    journal: Journal
    secrets: Secrets
    clock: Clock
    interrupts: Interrupts
    targets: dict[str, TargetModel]
    template_targets: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    finish_order: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Controls:
    """What steers a run from outside its plan: options, the gate, Ctrl-C, the clock, the lock."""

    options: Options
    gate: GateDecider
    clock: Clock
    interrupts: Interrupts
    #: Set when the run's lock was lost (None: a dry run, which holds none).
    lock_lost: threading.Event | None = None
    #: Asked before each mutating step is launched: why the run must halt (a freeze), or
    #: None to go on.
    brake: Callable[[], str | None] | None = None
    #: Whoever runs drctl here, as approvals name people (None: the OS user and host).
    identity: Identity | None = None


class Executor:
    """Runs (or dry-runs) one plan against its journal."""

    def __init__(
        self, plan: Plan, journal: Journal, state: RunState, secrets: Secrets, controls: Controls
    ) -> None:
        clock, interrupts = controls.clock, controls.interrupts
        targets = {name: secrets.target(name, t) for name, t in plan.targets.items()}
        view = shown.targets_view(plan)
        self.x = _Ctx(plan, journal, secrets, clock, interrupts, targets, view)
        _warm_up([s.type for s in (*plan.steps, *plan.fallbacks)])
        self.state = state
        self.options = controls.options
        self.gate = controls.gate
        self.lock_lost = controls.lock_lost or threading.Event()
        self.brake = controls.brake
        self.me = controls.identity or identity(plan.settings)
        #: The exit code of a halt: 3 for a freeze (a refusal), 1 for a tripped guard.
        self._halt_code = 3
        #: Inputs validated lately, by (type, rendered inputs): see _prepare.
        self._validated: dict[tuple[str, str], StepInputs] = {}
        #: Each step's state as the scheduler knows it, read by a promote (``ctx.fences()``).
        self._status: dict[str, StepStatus | Halt] = {}
        #: Targets decided at run time, by step id, once rendered (see _target_of).
        self._chosen: dict[str, str] = {}
        #: Promote-role steps whose preflight this process ran (before their first fence).
        self._preflighted: set[str] = set()
        #: Step types by name, each looked up (an import, a new instance) once.
        self._types: dict[str, StepType[Any, Any]] = {}
        for sid, s in state.steps.items():
            if s.done:
                self.x.outputs[sid] = s.outputs
                self.x.finish_order.append(sid)

    # -- entry points ------------------------------------------------------------

    def run(self) -> Outcome:  # noqa: PLR0915 (the scheduler loop is one state machine)
        plan, x = self.x.plan, self.x
        # What the journal says is done stays done; everything else is scheduled again
        # (an in-doubt step is probed with verify in _execute before any re-apply).
        status: dict[str, StepStatus | Halt] = {
            s.id: self.state.step(s.id).status if self.state.step(s.id).done else StepStatus.PENDING
            for s in plan.steps
        }
        # --reapply names a step to apply again whatever the journal says: a fence that
        # succeeded earlier and was lifted since is re-applied before what depends on it.
        for sid in self.options.reapply:
            if status.get(sid) == StepStatus.SUCCEEDED:
                status[sid] = StepStatus.PENDING
                self.x.outputs.pop(sid, None)
        self._status = status
        index = {s.id: i for i, s in enumerate(plan.steps)}
        waiting_on = {
            s.id: sum(1 for d in s.requires if not _done(status.get(d))) for s in plan.steps
        }
        dependents: dict[str, list[str]] = {}
        for s in plan.steps:
            for d in s.requires:
                dependents.setdefault(d, []).append(s.id)
        # Ready steps in plan order: a heap of plan positions, so launching is O(log n).
        ready = [
            index[s.id]
            for s in plan.steps
            if status[s.id] == StepStatus.PENDING and waiting_on[s.id] == 0
        ]
        heapq.heapify(ready)
        limit = self.options.concurrency or plan.settings.concurrency
        # A SimpleQueue: its get waits in C, with no Condition built around each wait.
        results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
        stop: StopReason | None = None
        stop_message = ""
        running = 0
        announced = False
        with (
            self._guarded() as guardian,
            _StepThreads(limit) as pool,
        ):
            while True:
                if stop is None and guardian is not None and guardian.tripped is not None:
                    stop, stop_message = self._tripped(guardian.tripped)
                if stop is None and x.interrupts.stop.is_set():
                    stop = StopReason.INTERRUPTED
                if stop is None and self.lock_lost.is_set():
                    stop, stop_message = (
                        StopReason.FAILED,
                        "the run lost its lock; stopped launching steps",
                    )
                while stop is None and ready and running < limit:
                    step = plan.steps[heapq.heappop(ready)]
                    held = self.brake() if step.mutates and self.brake is not None else None
                    if held is not None:
                        heapq.heappush(ready, index[step.id])
                        stop, stop_message, self._halt_code = StopReason.HALTED, held, 3
                        break
                    decision = self._preflights(step) or self._gate(step)
                    if decision is not None:
                        stop, stop_message = decision
                        break
                    if step.guards and guardian is not None:
                        # Read once before it starts: a guard that trips at once stops it.
                        guardian.arm(step.guards, step.id)
                        if guardian.tripped is not None:
                            guardian.disarm(step.id)
                            heapq.heappush(ready, index[step.id])
                            stop, stop_message = self._tripped(guardian.tripped)
                            break
                    status[step.id] = StepStatus.RUNNING
                    running += 1
                    pool.submit(
                        functools.partial(
                            self._execute_to, results, step, self.state.step(step.id)
                        ),
                        running,
                    )
                if stop is StopReason.INTERRUPTED and not announced and running:
                    announced = True
                    x.journal.note(
                        f"stopping: no new steps; waiting for {running} in-flight "
                        f"step{'s' if running != 1 else ''} (Ctrl-C again to cancel them)"
                    )
                if not running:
                    break
                try:
                    result = results.get(timeout=0.1)
                except queue.Empty:
                    x.journal.flush()  # queued outcomes reach the journal within 0.1 s
                    continue
                x.journal.flush_due()
                running -= 1
                sid = result.step
                status[sid] = result.status
                if guardian is not None:
                    guardian.disarm(sid)
                if _done(result.status):
                    for child in dependents.get(sid, ()):
                        waiting_on[child] -= 1
                        if waiting_on[child] == 0 and status[child] == StepStatus.PENDING:
                            heapq.heappush(ready, index[child])
                elif result.status in (StepStatus.FAILED, Halt.IN_DOUBT) and stop is None:
                    policy = plan.step(sid).on_failure.policy
                    stop = (
                        StopReason.ROLLBACK
                        if policy is FailurePolicy.ROLLBACK and result.status is StepStatus.FAILED
                        else StopReason.FAILED
                    )
                    stop_message = result.message
                elif result.status == Halt.CANCELLED and stop is None:
                    stop = StopReason.INTERRUPTED
                elif result.status == Halt.LOCK_LOST:
                    stop, stop_message = StopReason.FAILED, result.message
        return self._conclude(stop, stop_message, status)

    def _conclude(
        self, stop: StopReason | None, stop_message: str, status: dict[str, StepStatus | Halt]
    ) -> Outcome:
        plan, x = self.x.plan, self.x
        if stop is None and all(_done(status[s.id]) for s in plan.steps):
            return self._finish(RunStatus.SUCCEEDED, 0, f"all {len(plan.steps)} steps done")
        if stop is StopReason.ROLLBACK:
            self._rollback()
            return self._finish(RunStatus.ROLLED_BACK, 1, f"{stop_message}; rolled back")
        if stop is StopReason.INTERRUPTED:
            x.journal.write(ev.RunInterrupted())
            return self._finish(RunStatus.INTERRUPTED, 130, "interrupted; resume with drctl resume")
        if stop is StopReason.HALTED:
            x.journal.write(ev.RunHalted(reason=stop_message))
            if self._halt_code == 3:
                message = (
                    f"halted before a mutating step: {stop_message}; once thawed, resume "
                    f"with drctl resume {x.journal.run_id}"
                )
            else:
                message = (
                    f"halted: {stop_message}; no new step was launched. When it is safe, "
                    f"resume with drctl resume {x.journal.run_id} (its guards are armed again)"
                )
            return self._finish(RunStatus.HALTED, self._halt_code, message)
        if stop in (StopReason.APPROVAL, StopReason.DENIED):
            code_status = (
                RunStatus.WAITING_APPROVAL if stop is StopReason.APPROVAL else RunStatus.DENIED
            )
            return self._finish(code_status, 4, stop_message)
        if stop is None:
            stop_message = "some steps could not run"  # unreachable with a valid plan
        return self._finish(RunStatus.FAILED, 1, stop_message)

    def dry_run(self) -> Outcome:
        """Run every read-only step for real and every mutating step's ``check``.

        Nothing is changed. A step that cannot be judged before earlier steps take effect
        is reported as deferred, not failed, by two rules (docs/state-and-locking.md,
        "Dry runs"): its inputs or ``when`` read outputs of a step the dry run did not run
        for real; or its check (or its read-only run) fails and a mutating step it waits
        for acts on its target.
        """
        x = self.x
        failures = deferred = 0
        #: Steps with no outputs in this dry run, and why (for the deferred lines).
        not_run: dict[str, str] = {}
        for step in x.plan.steps:
            if x.interrupts.stop.is_set():
                x.journal.write(ev.RunInterrupted())
                return self._finish(RunStatus.INTERRUPTED, 130, "interrupted")
            if step.when is False:
                x.journal.write(ev.StepSkipped(step=step.id, reason="when is false"))
                continue
            if step.target_from is not None or step.item_from is not None:
                decided = (
                    f"its target is {step.target_text()}"
                    if step.target_from is not None
                    else f"it runs only if {step.item} is in {expression_text(step.item_from or '')}"
                )
                would = f"{step.description} (not checked: {decided})"
                not_run[step.id] = "has its target decided at run time"
                x.journal.write(ev.StepChecked(step=step.id, ok=True, would=would))
                continue
            missing = _reads_outputs_of(step, not_run)
            if missing:
                deferred += 1
                not_run[step.id] = "is deferred"
                why = "; ".join(f"{sid}, which {not_run[sid]}" for sid in missing)
                x.journal.write(
                    ev.StepChecked(step=step.id, ok=True, deferred=f"reads outputs of {why}")
                )
                continue
            try:
                verdict = self._dry_step(step, not_run)
            except (StepError, StepTypeError) as exc:
                not_run[step.id] = "failed in the dry run"
                effect = self._earlier_effect_on(step)
                if effect is None:
                    failures += 1
                    x.journal.write(ev.StepChecked(step=step.id, ok=False, error=exc.message))
                else:
                    deferred += 1
                    x.journal.write(
                        ev.StepChecked(step=step.id, ok=True, deferred=effect, error=exc.message)
                    )
                continue
            except Cancelled:
                x.journal.write(ev.RunInterrupted())
                return self._finish(RunStatus.INTERRUPTED, 130, "interrupted")
            x.journal.write(verdict)
        later = f"; {deferred} deferred until earlier steps take effect" if deferred else ""
        if failures:
            return self._finish(
                RunStatus.DRY_RUN_FAILED,
                1,
                f"{failures} check{'s' if failures != 1 else ''} failed{later}; nothing was changed",
            )
        return self._finish(
            RunStatus.DRY_RUN_OK, 0, f"all checks passed{later}; nothing was changed"
        )

    def _dry_step(self, step: CompiledStep, not_run: dict[str, str]) -> ev.JournalEvent:
        """One step of a dry run: read-only ones run for real, mutating ones only checked."""
        when = self._when(step)
        if when is not True:
            self._done(step.id, {})
            return ev.StepSkipped(step=step.id, reason=str(when))
        step_type, inputs = self._prepare(step, {})
        ctx = self._context(step, 0, inputs, {}, dry_run=True)
        if not step.mutates and step_type.runs_in_dry_run(inputs):
            self._bounded(
                functools.partial(_check_apply_verify, step_type),
                ctx,
                inline=step_type.returns_in_time(inputs),
            )
            self._done(step.id, ctx.outputs)
            does = shown.text(step.description, self._template_context(step))
            return ev.StepChecked(
                step=step.id, ok=True, ran=True, would=does, outputs=dict(ctx.outputs)
            )
        would = self._bounded(step_type.check, ctx) or shown.text(
            step.description, self._template_context(step)
        )
        not_run[step.id] = "a dry run does not apply" if step.mutates else "a dry run does not run"
        return ev.StepChecked(step=step.id, ok=True, would=would)

    def _earlier_effect_on(self, step: CompiledStep) -> str | None:
        """The nearest mutating step ``step`` waits for that acts on a target ``step`` uses.

        The targets a step uses: its ``target``, and every target its inputs name (a
        wait's ``until.target``, a promote's ``old_primary``).
        """
        names = set(_strings(step.inputs)) & set(self.x.plan.targets)
        if step.target is not None:
            names.add(step.target.name)
        if not names:
            return None
        by_id = {s.id: s for s in self.x.plan.steps}
        path: set[str] = set()
        todo = list(step.requires)
        while todo:
            sid = todo.pop()
            if sid not in path and sid in by_id:
                path.add(sid)
                todo.extend(by_id[sid].requires)
        for earlier in reversed(self.x.plan.steps):
            target = earlier.target
            if (
                earlier.id in path
                and earlier.mutates
                and target is not None
                and target.name in names
            ):
                return f"{earlier.id} acts on {target.name} first"
        return None

    # -- scheduling helpers ------------------------------------------------------

    def _gate(self, step: CompiledStep) -> tuple[StopReason, str] | None:
        if not _is_gate(step) or step.id in self.state.approved:
            return None
        if step.when is False:
            return None
        step = self._shown(step)  # the gate shows what will run, as it stands now
        if step.approval is not None and step.approval.needs_others:
            return self._gate_by_others(step, step.approval)
        journal = self.x.journal
        journal.flush()  # every outcome so far is shown before anyone is asked
        verdict, how = self.gate(step)
        if verdict == GateVerdict.GRANTED:
            journal.write(ev.ApprovalGranted(step=step.id, by=how, description=step.description))
            self.state.approved.add(step.id)
            return None
        if verdict == GateVerdict.DENIED:
            journal.write(ev.ApprovalDenied(step=step.id, by=how, description=step.description))
            return StopReason.DENIED, f"approval for {step.id} denied"
        if verdict == GateVerdict.INTERRUPTED:
            # Nobody decided: the gate asks again on resume.
            return StopReason.INTERRUPTED, f"interrupted at the approval for {step.id}"
        journal.write(ev.ApprovalNeeded(step=step.id, description=step.description))
        return (
            StopReason.APPROVAL,
            f"step {step.id} needs approval: resume with --approve {step.id} (or --yes)",
        )

    def _preflights(self, step: CompiledStep) -> tuple[StopReason, str] | None:
        """Before a fence-role step starts: the preflight of each promote that waits for it.

        A fence is the point of no return: a promote that would refuse for a reason the
        fence cannot change (lag past its own limit, another timeline, an unreachable
        candidate) must say so while the old primary still takes writes. Once per
        promote per process, so a resumed run asks again before a fence it has not run.
        """
        if Role.FENCE.value not in step.roles:
            return None
        plan = self.x.plan
        for promote in plan.steps:
            if (
                Role.PROMOTE.value not in promote.roles
                or promote.id in self._preflighted
                or _done(self._status.get(promote.id))
                or step.id not in waits_for(plan, promote.id)
            ):
                continue
            self._preflighted.add(promote.id)
            refused = self._preflight(promote)
            if refused is not None:
                return refused
        return None

    def _preflight(self, step: CompiledStep) -> tuple[StopReason, str] | None:
        """Run one promote's preflight, journaled; the stop it means, if it refuses."""
        journal = self.x.journal
        if type(get_step_type(step.type)).preflight is StepType.preflight:
            return None  # nothing to ask, and nothing journaled
        try:
            if self._when(step) is not True:
                return None
            step_type, inputs = self._prepare(step, {})
        except StepError as exc:  # its inputs or condition need outputs not there yet
            journal.write(
                ev.StepPreflighted(step=step.id, ok=True, found=f"not checked yet: {exc.message}")
            )
            return None
        ctx = self._context(step, 0, inputs, {})
        try:
            found = self._bounded(step_type.preflight, ctx)
        except Cancelled:
            return StopReason.INTERRUPTED, "interrupted"
        except (StepError, StepTypeError) as exc:
            journal.write(ev.StepPreflighted(step=step.id, ok=False, error=exc.message))
            return StopReason.FAILED, f"{step.id}: {exc.message}"
        journal.write(ev.StepPreflighted(step=step.id, ok=True, found=found or "passed"))
        return None

    def _gate_by_others(
        self, step: CompiledStep, policy: ApprovalPolicy
    ) -> tuple[StopReason, str] | None:
        """A gate other people open: count their approvals in the journal (any machine's)."""
        x, me = self.x, self.me
        journal = x.journal
        description = step.description
        digest = gate_digest(step.id, description, step.masked_inputs(), x.plan.hash)
        events = journal.store.events(journal.run_id)
        started_by = starter(events)
        count = tally(events, step.id, x.plan.hash, digest, policy, x.clock.now())
        mine_counts = me.name not in count.approvers and not (
            policy.not_by_starter and me.name == started_by
        )
        if not count.enough and mine_counts and len(count.approvers) + 1 >= policy.count:
            # Whoever runs drctl here may cast the last vote (a prompt, --yes, --approve).
            verdict, how = self.gate(step)
            if verdict == GateVerdict.DENIED:
                journal.write(ev.ApprovalDenied(step=step.id, by=how))
                return StopReason.DENIED, f"approval for {step.id} denied"
            if verdict == GateVerdict.GRANTED:
                journal.write(
                    ev.ApprovalGiven(
                        step=step.id, by=me.name, host=me.host, plan_hash=x.plan.hash,
                        digest=digest, how=how,
                    )
                )  # fmt: skip
                count = tally(
                    journal.store.events(journal.run_id), step.id, x.plan.hash, digest, policy,
                    x.clock.now(),
                )  # fmt: skip
        if count.enough:
            journal.write(ev.ApprovalGranted(step=step.id, by=count.words()))
            self.state.approved.add(step.id)
            return None
        needs = (
            f"needs {who_may(policy, started_by)}; {count.words()}; approve with: drctl approve "
            f"{journal.run_id} {step.id} [--comment …], then drctl resume {journal.run_id}"
        )
        journal.write(
            ev.ApprovalNeeded(
                step=step.id, description=description, plan_hash=x.plan.hash, digest=digest,
                needs=needs,
            )
        )  # fmt: skip
        return StopReason.APPROVAL, f"step {step.id} {needs}"

    def _finish(self, status: RunStatus, code: int, message: str) -> Outcome:
        journal = self.x.journal
        message = journal.redactor.text(message)
        journal.write(ev.RunFinished(status=status, exit_code=code, message=message))
        journal.store.set_status(journal.run_id, status, journal.clock.now())
        return Outcome(status, code, message)

    # -- one step ----------------------------------------------------------------

    def _execute_to(
        self, results: queue.SimpleQueue[_Result], step: CompiledStep, prior: StepState
    ) -> None:
        results.put(self._execute(step, prior))

    def _execute(self, step: CompiledStep, prior: StepState) -> _Result:
        """Everything about one step, in a worker thread; never raises."""
        try:
            return self._execute_inner(step, prior)
        except StateError as exc:  # the lease lost, or the store failed: the run must stop
            return _Result(step.id, Halt.LOCK_LOST, exc.message)
        except Cancelled:
            return _Result(step.id, Halt.CANCELLED)
        except Exception as exc:  # never let a worker die silently: the scheduler waits on it
            return _Result(
                step.id, StepStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}"
            )

    def _execute_inner(self, step: CompiledStep, prior: StepState) -> _Result:
        x = self.x
        if step.item_from is not None:
            try:
                listed = self._fan_out_list(step)
            except StepError as exc:
                x.journal.write(
                    ev.StepFailed(step=step.id, attempt=prior.attempts + 1, error=exc.message)
                )
                return _Result(step.id, StepStatus.FAILED, f"{step.id}: {exc.message}")
            if step.item not in listed:
                reason = (
                    f"{step.item} is not among {expression_text(step.item_from)} "
                    f"({', '.join(listed) or 'none'})"
                )
                x.journal.write(ev.StepSkipped(step=step.id, reason=reason))
                self._done(step.id, {})
                return _Result(step.id, StepStatus.SKIPPED)
        when = self._when(step)
        if when is not True:
            x.journal.write(ev.StepSkipped(step=step.id, reason=str(when)))
            self._done(step.id, {})
            return _Result(step.id, StepStatus.SKIPPED)
        start_attempt = prior.attempts + 1
        if prior.in_doubt:
            verdict = self._probe(step, prior)
            if verdict is not None:
                return verdict
        result = self._attempts(step, start_attempt)
        if result.status != StepStatus.FAILED:
            return result
        on_failure = step.on_failure
        if on_failure.policy is FailurePolicy.CONTINUE:
            error = result.message.removeprefix(f"{step.id}: ")
            x.journal.write(
                ev.StepFailed(step=step.id, attempt=result.attempt, ignored=True, error=error)
            )
            self._done(step.id, {})
            return _Result(step.id, StepStatus.IGNORED, result.message)
        if on_failure.run is not None:
            fallback = x.plan.step(on_failure.run)
            x.journal.note(f"{step.id} failed; running fallback {fallback.id}")
            fb = self._attempts(fallback, self.state.step(fallback.id).attempts + 1)
            if fb.status == StepStatus.SUCCEEDED:
                x.journal.write(ev.StepRecovered(step=step.id, by=fallback.id))
                self._done(step.id, {})
                return _Result(step.id, StepStatus.RECOVERED)
            return _Result(
                step.id,
                StepStatus.FAILED,
                f"{step.id} failed ({result.message}) and fallback {fallback.id} failed ({fb.message})",
            )
        return result

    def _probe(self, step: CompiledStep, prior: StepState) -> _Result | None:
        """A step started but never finished: decide from the world, not from hope."""
        x = self.x
        step_type, inputs = self._prepare(step, prior.recorded)
        if step.id in self.options.mark_done:
            return self._mark_done(step, prior, step_type, inputs)
        if step_type.verifies(inputs):
            ctx = self._context(step, prior.attempts, inputs, dict(prior.recorded))
            # Its verify may wait (up to the step's timeout): say what the run waits for.
            x.journal.note(
                f"{step.id}: interrupted earlier; checking whether it took effect "
                f"(its verify may wait up to {format_duration(step.timeout)})"
            )
            try:
                applied = self._bounded(step_type.verify, ctx)
            except StepError as exc:
                applied = False
                x.journal.note(f"{step.id}: verify on resume failed: {exc.message}")
            if applied:
                x.journal.write(
                    ev.StepSucceeded(
                        step=step.id, attempt=prior.attempts, outputs=ctx.outputs,
                        verified_on_resume=True,
                    )
                )  # fmt: skip
                self._done(step.id, ctx.outputs)
                return _Result(step.id, StepStatus.SUCCEEDED)
            x.journal.note(f"{step.id}: interrupted earlier and not in effect; applying again")
            return None
        if not step.mutates or step.id in self.options.reapply:
            return None
        message = (
            f"step {step.id} was interrupted after it started and cannot verify whether it took "
            f"effect; check by hand, then resume with --reapply {step.id} or --mark-done {step.id}"
        )
        x.journal.write(
            ev.StepFailed(step=step.id, attempt=prior.attempts, error=message, in_doubt=True)
        )
        return _Result(step.id, Halt.IN_DOUBT, message)

    def _mark_done(
        self, step: CompiledStep, prior: StepState, step_type: StepType, inputs: StepInputs
    ) -> _Result:
        """``--mark-done``: the step's verify is asked first, and its answer shown and kept.

        Against a verify that does not confirm it, only the operator's ``--reason`` marks
        it done (journaled as unverified): a step killed mid-way is never taken as done
        on a bare flag when the world says otherwise. A step that cannot verify is marked
        done on the operator's word, journaled as unverified.
        """
        x = self.x
        outputs: dict[str, Any] = {}
        confirmed = False
        can_verify = step_type.verifies(inputs)
        if can_verify:
            ctx = self._context(step, prior.attempts, inputs, dict(prior.recorded))
            try:
                confirmed = bool(self._bounded(step_type.verify, ctx))
                verdict = (
                    "verify says it is in effect"
                    if confirmed
                    else "verify says it is NOT in effect"
                )
            except StepError as exc:
                verdict = f"verify could not tell: {exc.message}"
            outputs = ctx.outputs if confirmed else {}
        else:
            verdict = f"{step.type} cannot verify this step"
        x.journal.note(f"{step.id}: --mark-done: {verdict}")
        reason = self.options.reason
        if can_verify and not confirmed and not reason:
            message = (
                f"--mark-done {step.id} refused: {verdict}; if you know it took effect, resume "
                f"with --mark-done {step.id} --reason '…' (journaled as unverified), or apply "
                f"it again with --reapply {step.id}"
            )
            x.journal.write(
                ev.StepFailed(step=step.id, attempt=prior.attempts, error=message, in_doubt=True)
            )
            return _Result(step.id, Halt.IN_DOUBT, message)
        x.journal.write(
            ev.StepSucceeded(
                step=step.id, attempt=prior.attempts, outputs=outputs, marked_done=True,
                verified_on_resume=confirmed, unverified=not confirmed,
                reason=None if confirmed else reason, verdict=verdict,
            )
        )  # fmt: skip
        self._done(step.id, outputs)
        return _Result(step.id, StepStatus.SUCCEEDED)

    def _attempts(self, step: CompiledStep, first: int) -> _Result:
        x = self.x
        retries = step.retries
        message, trace = "", None
        description, shown_inputs = self._view(step)
        for n in range(retries.attempts):
            attempt = first + n
            final = n == retries.attempts - 1
            started = x.clock.monotonic()
            chosen, unknown = None, None
            if step.target_from is not None:
                try:
                    chosen = self._target_of(step)
                except StepError as exc:
                    unknown = exc
            # A read-only step's intent may share its outcome's commit (or a later one):
            # lost in a crash, it only means resume runs again a step that changed nothing.
            # A gate's is kept at once: the run passing a gate is part of its record.
            deferred = not step.mutates and not _is_gate(step)
            (x.journal.write_later if deferred else x.journal.write)(
                ev.StepStarted(
                    step=step.id, attempt=attempt, target=chosen, description=description,
                    inputs=shown_inputs,
                )
            )  # fmt: skip
            faults.after_started(step.id)
            unverifiable = False
            try:
                if unknown is not None:
                    raise unknown
                step_type, inputs = self._prepare(step, {})
                unverifiable = step.mutates and not step_type.verifies(inputs)
                ctx = self._context(step, attempt, inputs, {})
                # One bounded call for check → apply → verify: one thread hop per attempt,
                # none for a type whose calls bound themselves.
                try:
                    self._bounded(
                        functools.partial(_check_apply_verify, step_type),
                        ctx,
                        inline=step_type.returns_in_time(inputs),
                    )
                finally:
                    # What apply recorded (durably) is what a rollback later in this run
                    # needs for undo, as a resume would have it from the journal.
                    self.state.step(step.id).recorded.update(ctx.recorded)
                # A step that can verify itself may have its outcome synced with the next
                # intent; one that cannot must be durable now or resume could not decide.
                later = step_type.verifies(inputs) or deferred
                record = x.journal.write_later if later else x.journal.write
                record(
                    ev.StepSucceeded(
                        step=step.id, attempt=attempt, outputs=ctx.outputs,
                        duration=x.clock.monotonic() - started, description=description,
                    )
                )  # fmt: skip
                self._done(step.id, ctx.outputs)
                return _Result(step.id, StepStatus.SUCCEEDED)
            except Cancelled:
                raise  # journal nothing: the step stays in doubt and resume verifies it
            except StepTimeout as exc:
                if unverifiable:
                    # Cut off mid-way, it may have taken effect (a POST sent, a command
                    # run): neither a retry nor a resume may apply it again unasked.
                    return self._timed_out_in_doubt(step, attempt, exc.message, started)
                message, trace = exc.message, None
            except (StepError, StepTypeError) as exc:
                message, trace = exc.message, None
            except Exception as exc:  # a bug in a step type must not kill the run unjournaled
                message = f"internal error in step type {step.type}: {type(exc).__name__}: {exc}"
                # Kept (redacted, as all event data) so the bug can be found from the journal.
                trace = "".join(traceback.format_exception(exc))
            # Waits count from this series' first attempt: a resumed step starts afresh.
            wait_for = None if final else retries.delay_before(n + 2)
            x.journal.write(
                ev.StepFailed(
                    step=step.id, attempt=attempt, error=message, final=final, retry_in=wait_for,
                    duration=x.clock.monotonic() - started, traceback=trace,
                )
            )  # fmt: skip
            if final:
                break
            if x.clock.sleep(wait_for or 0.0, x.interrupts.cancel):
                raise Cancelled("cancelled while waiting to retry")
            if x.interrupts.stop.is_set():
                return _Result(step.id, Halt.CANCELLED)
        return _Result(step.id, StepStatus.FAILED, f"{step.id}: {message}", attempt)

    def _timed_out_in_doubt(
        self, step: CompiledStep, attempt: int, error: str, started: float
    ) -> _Result:
        """A mutating step that cannot verify timed out: in doubt, for the operator to settle."""
        x = self.x
        message = (
            f"step {step.id} timed out ({error}) and cannot verify whether it took effect; "
            f"check by hand, then resume with --reapply {step.id} or --mark-done {step.id}"
        )
        x.journal.write(
            ev.StepFailed(
                step=step.id, attempt=attempt, error=message, in_doubt=True,
                duration=x.clock.monotonic() - started,
            )
        )  # fmt: skip
        return _Result(step.id, Halt.IN_DOUBT, message, attempt)

    def _done(self, sid: str, outputs: dict[str, Any]) -> None:
        self.x.outputs[sid] = outputs
        self.x.finish_order.append(sid)

    # -- inputs, contexts, deadlines ---------------------------------------------

    def _template_context(self, step: CompiledStep) -> dict[str, Any]:
        context: dict[str, Any] = {
            "params": self.x.plan.params,
            "targets": self.x.template_targets,
            "steps": shown.steps_view(self.x.outputs),
        }
        if step.loop_var:
            context[step.loop_var] = step.item
        return context

    def _target_of(self, step: CompiledStep) -> str | None:
        """The step's target; one decided at run time is rendered, checked and kept.

        The rendered name must be one of the plan's choices for the step and of a type
        the step type acts on; else a StepError says which and why.
        """
        if step.target_from is None:
            return None if step.target is None else step.target.name
        known = self._chosen.get(step.id)
        if known is not None:
            return known
        source = expression_text(step.target_from)
        try:
            value = render(step.target_from, self._template_context(step))
        except TemplateProblem as exc:
            raise StepError(f"target: {exc.message}") from None
        name = str(value).strip() if isinstance(value, str | int) else None
        if not name:
            raise StepError(f"target: {source} gave {value!r}, not a target name")
        if name not in step.target_choices:
            raise StepError(
                f"target: {source} named {name!r}, which is not one of the targets this step "
                f"may take ({', '.join(step.target_choices)})"
            )
        kinds = get_step_type(step.type).target_types
        kind = self.x.plan.targets.get(name, {}).get("type")
        if kind not in kinds:
            raise StepError(
                f"target: {source} named {name!r}, a {kind} target; {step.type} acts on "
                f"{' or '.join(sorted(kinds))} targets"
            )
        self._chosen[step.id] = name
        return name

    def _fan_out_list(self, step: CompiledStep) -> list[str]:
        """The target names a run-time fan-out's list gives now (each one of the choices)."""
        source = expression_text(step.item_from or "")
        try:
            value = render(step.item_from or "", self._template_context(step))
        except TemplateProblem as exc:
            raise StepError(f"for_each: {exc.message}") from None
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise StepError(f"for_each: {source} gave {value!r}, not a list of target names")
        names = [str(v) for v in value]
        strangers = [n for n in names if n not in step.target_choices]
        if strangers:
            raise StepError(
                f"for_each: {source} named {', '.join(strangers)}, not among the targets this "
                f"step may take ({', '.join(step.target_choices)})"
            )
        return names

    def _when(self, step: CompiledStep) -> bool | str:
        if step.when is None or step.when is True:
            return True
        if step.when is False:
            return "its when condition is false for this run's params"
        try:
            value = render(step.when, self._template_context(step))
        except TemplateProblem as exc:
            raise StepError(f"when: {exc.message}") from None
        truthy = (
            value
            if isinstance(value, bool)
            else str(value).strip().lower() not in ("", "false", "0", "none")
        )
        return True if truthy else shown.condition(step.when, self._template_context(step))

    def _shown(self, step: CompiledStep) -> CompiledStep:
        """The step as a person is shown it now (see ``_view``), for a gate's prompt."""
        description, inputs = self._view(step)
        return dataclasses.replace(step, inputs=inputs, description=description)

    def _view(self, step: CompiledStep) -> tuple[str, dict[str, Any]]:
        """The description and inputs a person is shown now: rendered with the values
        known at this moment (earlier steps' outputs), secrets masked. Two values, not a
        copy of the step: every attempt's events carry them."""
        if not step.deferred and not is_template(step.description):
            return step.description, step.masked_inputs()
        context = self._template_context(step)
        inputs = shown.value(step.inputs, context)
        # Outputs may hold a resolved secret, and a prompt is written past the journal.
        redactor = self.x.journal.redactor
        return (
            redactor.text(self._describe(step, inputs, context)),
            redactor.data(mask(None, inputs)),
        )

    def _describe(self, step: CompiledStep, inputs: Any, context: dict[str, Any]) -> str:
        step_type = get_step_type(step.type)
        target = step.target.name if step.target else None
        try:
            derived = step.description == step_type.describe(
                step_type.Inputs.model_validate(step.inputs), target
            )
        except ValidationError:
            derived = False
        if derived and step.deferred:
            # Worded by the step type: word it again from what it will really be given.
            try:
                return step_type.describe(step_type.Inputs.model_validate(inputs), target)
            except ValidationError:
                pass
        return shown.text(step.description, context)

    def _type(self, name: str) -> StepType[Any, Any]:
        """The step type called ``name`` (StepTypeError if unknown or broken)."""
        found = self._types.get(name)
        if found is None:
            # Step types keep no state of their own: one instance serves every step.
            found = self._types[name] = get_step_type(name)
        return found

    def _prepare(
        self, step: CompiledStep, recorded: Mapping[str, Any]
    ) -> tuple[StepType, StepInputs]:
        step_type = self._type(step.type)
        raw: Any = step.inputs
        if step.deferred:
            context = self._template_context(step)
            raw = _render_paths(raw, set(step.deferred), context, "with")
        raw = self.x.secrets.apply(raw)
        # Shards of one runbook step, and steps written alike, often have the same
        # inputs: validate those once. Inputs models are frozen, so sharing one between
        # concurrent steps is safe. Emptied when full (one atomic clear, whatever other
        # workers do meanwhile): a run of distinct inputs keeps no more than that.
        key = (step.type, repr(raw))
        known = self._validated.get(key)
        if known is not None:
            return step_type, known
        try:
            inputs = step_type.Inputs.model_validate(raw)
            if len(self._validated) >= _VALIDATED_KEPT:
                self._validated.clear()
            self._validated[key] = inputs
            return step_type, inputs
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise StepError(f"inputs after run-time rendering: {where}: {first['msg']}") from None

    def _context(
        self,
        step: CompiledStep,
        attempt: int,
        inputs: StepInputs,
        recorded: dict[str, Any],
        *,
        dry_run: bool = False,
        journal: Journal | None = None,
    ) -> StepRun[Any, Any]:
        x = self.x
        # The step's first call waits for its own type's warm-up: never import beside it.
        self._type(step.type).warm()
        target = self._target_of(step)
        return StepRun(
            step_id=step.id, attempt=attempt, inputs=inputs,
            target=x.targets.get(target) if target else None, targets=x.targets,
            recorded=recorded, journal=journal or x.journal, clock=x.clock,
            deadline=x.clock.monotonic() + step.timeout, cancel=x.interrupts.cancel,
            dry_run=dry_run, run_id=x.journal.run_id, runbook=x.plan.name,
            fences=functools.partial(fences_before, x.plan, step.id, self._status),
            target_name=step.target,
            facts=functools.partial(facts_of, x.plan, x.finish_order, x.outputs),
        )  # fmt: skip

    def _bounded(
        self, fn: Callable[[StepRun[Any, Any]], T], ctx: StepRun[Any, Any], *, inline: bool = False
    ) -> T:
        """Call into a step type on a call thread, bounded by the step's deadline.

        ``inline``: the step type says the call returns in time by itself
        (``StepType.returns_in_time``), so it is made here, without the hop.
        """
        if inline:
            return fn(ctx)
        done = threading.Event()
        box: dict[str, Any] = {}

        def job() -> None:
            try:
                box["value"] = fn(ctx)
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        _CALLERS.run(job)
        # A step type that honours ctx.remaining() returns on its own; the grace covers
        # its clean-up (killing a process group) before we give up on it.
        if not done.wait(timeout=ctx.remaining() + 10.0):
            ctx.abandoned.set()
            raise StepTimeout(f"{ctx.step_id} did not return within its timeout; abandoned")
        if "error" in box:
            raise box["error"]
        return box.get("value")  # type: ignore[return-value]

    # -- guards ------------------------------------------------------------------

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[Guardian | None]:
        """The guards read from here (the runbook's once before any step) until the block ends."""
        plan = self.x.plan
        if not plan.guards and not any(s.guards for s in plan.steps):
            yield None
            return
        from drctl.engine.guards import Guardian

        guardian = Guardian(self._read_guard, self.x.journal)
        try:
            guardian.arm(plan.guards)
            yield guardian
        finally:
            guardian.stop()

    def _tripped(self, trip: Trip) -> tuple[StopReason, str]:
        """How the run stops for a tripped guard (a halt exits 1: the run failed a guard)."""
        self._halt_code = 1
        rollback = trip.action is TripAction.ROLLBACK
        return (StopReason.ROLLBACK if rollback else StopReason.HALTED), trip.words()

    def _read_guard(self, guard: CompiledGuard) -> Reading:
        """One reading of ``guard``: its read-only step run through check, apply, verify."""
        from drctl.engine.guards import Reading

        step = guard.step
        try:
            step_type, inputs = self._prepare(step, {})
            ctx = self._context(step, 0, inputs, {}, journal=self.x.journal.quiet())
            self._bounded(functools.partial(_check_apply_verify, step_type), ctx)
        except (Unreachable, StepTimeout) as exc:
            return Reading(None, exc.message)
        except (StepError, StepTypeError) as exc:
            return Reading(False, exc.message)
        except Cancelled:
            return Reading(None, "cancelled")
        except Exception as exc:  # a bug in a step type is no reading either way
            return Reading(None, f"internal error in step type {step.type}: {exc}")
        return Reading(True, _reading_text(ctx.outputs) or "ok")

    # -- rollback ----------------------------------------------------------------

    def _rollback(self) -> None:
        x = self.x
        x.journal.note("rolling back completed steps in reverse order")
        for sid in reversed(list(dict.fromkeys(x.finish_order))):
            step = x.plan.step(sid)
            if not step.mutates or self.state.step(sid).status == StepStatus.UNDONE:
                continue
            if step.rollback is None and not step.can_undo:
                x.journal.note(f"{sid}: cannot be undone; left as it is")
                continue
            x.journal.write(ev.UndoStarted(step=sid))
            try:
                if step.rollback is not None:
                    rb = step.rollback
                    rb_type = get_step_type(rb.type)
                    inputs = rb_type.Inputs.model_validate(x.secrets.apply(rb.inputs))
                    rb_step = dataclasses.replace(
                        step, type=rb.type, target=rb.target, timeout=rb.timeout or step.timeout,
                        target_from=None,
                    )  # fmt: skip
                    ctx = self._context(rb_step, 0, inputs, dict(self.state.step(sid).recorded))
                    self._bounded(rb_type.apply, ctx)
                else:
                    step_type, inputs = self._prepare(step, {})
                    ctx = self._context(step, 0, inputs, dict(self.state.step(sid).recorded))
                    self._bounded(step_type.undo, ctx)
                x.journal.write(ev.UndoSucceeded(step=sid))
            except (StepError, StepTypeError) as exc:
                x.journal.write(ev.UndoFailed(step=sid, error=exc.message))
            except Cancelled:
                x.journal.note("rollback cancelled")
                return


def _reading_text(outputs: Mapping[str, Any]) -> str:
    """A guard's outputs in one short line, for its journaled reading."""
    import json

    text = ", ".join(
        f"{k}={json.dumps(v, default=str, ensure_ascii=False)}" for k, v in sorted(outputs.items())
    )
    return text if len(text) <= 200 else text[:199] + "…"


def _done(status: StepStatus | Halt | None) -> bool:
    return isinstance(status, StepStatus) and status.done


#: The most validated inputs an executor keeps for steps to share (see _prepare).
_VALIDATED_KEPT = 256


class _StepThreads:
    """The run's step workers, fed through one queue; at most ``limit`` of them, each
    started when more steps run at once than there are workers.

    A ThreadPoolExecutor builds a Future, its Condition and a work item for every step:
    a run of short steps paid for them on each one, and the scheduler needs none (each
    step hands its result back itself). Leaving waits for the steps handed out.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._inbox: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, job: Callable[[], None], running: int) -> None:
        """Hand ``job`` (which never raises) to a worker; ``running``: the steps
        handed out and not yet finished, this one included."""
        if running > len(self._threads) and len(self._threads) < self._limit:
            worker = threading.Thread(target=self._serve, name=f"step_{len(self._threads)}")
            self._threads.append(worker)
            worker.start()
        self._inbox.put(job)

    def _serve(self) -> None:
        while (job := self._inbox.get()) is not None:
            job()

    def __enter__(self) -> _StepThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in self._threads:
            self._inbox.put(None)  # after every job handed out: they run first
        for worker in self._threads:
            worker.join()


class _CallThreads:
    """Daemon threads that run calls into step types, reused between calls.

    A call that never returns keeps its thread (the step was abandoned); the next call
    then gets a new thread, so a hung provider can never block the run or its exit.
    """

    def __init__(self) -> None:
        self._idle: list[queue.SimpleQueue[Callable[[], None]]] = []
        self._lock = threading.Lock()

    def run(self, job: Callable[[], None]) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=self._serve, args=(inbox,), name="step-call", daemon=True
            ).start()
        inbox.put(job)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            inbox.get()()
            with self._lock:
                self._idle.append(inbox)


_CALLERS = _CallThreads()


def _warm_up(type_names: list[str]) -> None:
    """Import the plan's client libraries in the background while the run starts.

    Through ``StepType.warm``: one import at a time, and a step waits for its own, so
    types go in plan order (the first step's first).
    """

    def load() -> None:
        for name in dict.fromkeys(type_names):
            # Only a head start: an unknown or broken type is reported by its step.
            with contextlib.suppress(StepTypeError):
                get_step_type(name).warm()

    threading.Thread(target=load, name="warm-up", daemon=True).start()


def _is_gate(step: CompiledStep) -> bool:
    return step.approve or "gate" in step.roles


def _check_apply_verify(step_type: StepType[Any, Any], ctx: StepRun[Any, Any]) -> None:
    step_type.check(ctx)
    step_type.apply(ctx)
    faults.after_apply(ctx.step_id)
    if not step_type.verify(ctx):
        raise VerifyFailed("applied, but verify says the effect is not in place")


def _reads_outputs_of(step: CompiledStep, not_run: Mapping[str, str]) -> list[str]:
    """The steps in ``not_run`` whose outputs ``step``'s inputs or ``when`` read."""
    if not not_run or not (step.deferred or isinstance(step.when, str)):
        return []
    texts = [step.when] if isinstance(step.when, str) else []
    texts += [t for t in _strings(step.inputs) if "{" in t]
    named: set[str] = set()
    for text in texts:
        try:
            info = analyze(text)
        except TemplateProblem:
            continue  # the run reports it; the dry run only asks what it reads
        named |= {r.parts[1] for r in info.references if r.parts[0] == "steps" and len(r.parts) > 1}
    return [sid for sid in not_run if sid in named or sid.split("[", 1)[0] in named]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []


def _render_paths(value: Any, paths: set[str], context: dict[str, Any], at: str) -> Any:
    if at in paths and isinstance(value, str):
        try:
            return render(value, context)
        except TemplateProblem as exc:
            raise StepError(f"{at}: {exc.message}") from None
    if isinstance(value, dict):
        return {k: _render_paths(v, paths, context, f"{at}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render_paths(v, paths, context, f"{at}.{i}") for i, v in enumerate(value)]
    return value
