"""Commands that execute: run, resume, abort."""

from __future__ import annotations

import os
import signal
import sys
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Any

import typer

from drctl.cli.formats import chosen, format_option, legacy_output_option
from drctl.cli.review import PARAM_HELP, PARAMS_FILE_HELP
from drctl.engine.status import GateVerdict, RunStatus
from drctl.visible import visible

if TYPE_CHECKING:
    from drctl.compiler.params import ParamInput
    from drctl.compiler.plan import CompiledStep, Plan
    from drctl.engine.executor import Interrupts, Options, Outcome
    from drctl.engine.journal import Sink
    from drctl.state.base import StateStore


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


STATE_HELP = (
    "State store: a SQLite path (default ~/.local/state/drctl/state.db, or under "
    "$XDG_STATE_HOME), a postgresql:// URL or "
    "etcd://HOST:PORT[,HOST:PORT…]/PREFIX (env DRCTL_STATE)."
)


class Terminal:
    """How this invocation talks to its operator: sinks, the approval prompt, Ctrl-C."""

    def __init__(self, output: OutputFormat, yes: bool, approve: list[str]) -> None:
        self.output = output
        self.yes = yes
        self.approve = set(approve)
        self.interactive = (
            output is OutputFormat.text and sys.stdin.isatty() and sys.stdout.isatty()
        )
        self.sinks: list[Any] = []

    def make_sinks(self, plan: Plan) -> list[Sink]:
        from drctl.engine.output import JsonSink, LiveSink, PlainSink

        debug = bool(os.environ.get("DRCTL_DEBUG"))
        if self.output is OutputFormat.json:
            self.sinks = [JsonSink(sys.stdout)]
        elif self.interactive:
            self.sinks = [LiveSink(plan, sys.stdout, debug=debug)]
        else:
            self.sinks = [PlainSink(sys.stdout, debug=debug)]
        return self.sinks

    def gate(self, step: CompiledStep) -> tuple[GateVerdict, str]:
        from drctl.engine.runs import who

        me = who()
        if self.yes:
            return GateVerdict.GRANTED, f"--yes by {me.user}@{me.host}"
        if step.id in self.approve or step.base_id in self.approve:
            return GateVerdict.GRANTED, f"--approve {step.id} by {me.user}@{me.host}"
        if not self.interactive:
            return GateVerdict.NEEDED, ""
        return self._prompt(step, f"{me.user}@{me.host}")

    def _prompt(self, step: CompiledStep, who: str) -> tuple[GateVerdict, str]:
        from drctl.engine.output import LiveSink

        text = _gate_text(step)
        live = next((s for s in self.sinks if isinstance(s, LiveSink)), None)
        try:
            if live is not None:
                answer = live.ask(step.id, step.description, text, _ask)
            else:
                *lines, question = text.split("\n")
                sys.stdout.write(visible("\n".join(lines) + "\n"))
                answer = _ask(visible(question))
        except KeyboardInterrupt:
            return GateVerdict.INTERRUPTED, f"Ctrl-C at the prompt by {who}"
        except EOFError:
            answer = ""
        if answer.strip().lower() in ("y", "yes"):
            return GateVerdict.GRANTED, f"prompt by {who}"
        return GateVerdict.DENIED, f"prompt by {who}"


def _gate_text(step: CompiledStep) -> str:
    """What a gate shows, rendered as it stands (the executor rendered the step), and its question.

    An ``approve`` step's message is shown once, whole; any other gated step shows its
    description and the inputs it will run with.
    """
    from drctl.render.values import flatten, inline

    target = f" → {step.target.name}" if step.target else ""
    lines = [f"Approval needed: {step.id} ({step.type}{target})"]
    message = step.inputs.get("message") if step.type == "approve" else None
    if isinstance(message, str):
        lines.extend(f"  {line}" for line in message.splitlines() or [""])
    else:
        lines.append(f"  {step.description}")
        lines.extend(f"  with.{k}: {inline(v)}" for k, v in flatten(step.inputs).items())
    lines.append(f"Approve {step.id}? [y/N] ")
    return "\n".join(lines)


def _ask(question: str) -> str:
    """``input`` that Ctrl-C ends (KeyboardInterrupt), where the run's handler only counts it."""
    previous = signal.getsignal(signal.SIGINT)

    def interrupt(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)  # the run counts the press: it stops as interrupted
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        return _read_line(question) if sys.stdin.isatty() else input(question)
    finally:
        signal.signal(signal.SIGINT, previous)


def _read_line(question: str) -> str:
    """One line from the terminal, given up when a signal arrives.

    ``input`` blocks in read(2) until a line comes; the kernel may hand SIGINT to any of
    the run's threads, and then the main thread's read is not interrupted and the
    Python handler never runs: Ctrl-C would be echoed and ignored. The handler's
    wakeup fd is written whichever thread took the signal, so waiting on it beside the
    terminal lets the main thread return to Python, where the handler runs (and raises).
    """
    import select

    sys.stdout.write(question)
    sys.stdout.flush()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    earlier = signal.set_wakeup_fd(wake_w)
    try:
        while True:
            ready, _, _ = select.select([sys.stdin.fileno(), wake_r], [], [])
            if wake_r in ready:
                os.read(wake_r, 512)  # the handler runs at the next bytecode
            if sys.stdin.fileno() in ready:
                # A terminal in canonical mode hands over one whole line per read.
                data = os.read(sys.stdin.fileno(), 4096)
                if not data:
                    raise EOFError
                return data.decode(errors="replace").rstrip("\r\n")
    finally:
        signal.set_wakeup_fd(earlier)
        os.close(wake_r)
        os.close(wake_w)


def _signals(interrupts: Interrupts) -> None:
    def handler(signum: int, frame: Any) -> None:
        interrupts.press()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _store(
    state: str | None,
    settings_state: str | None = None,
    *,
    read_only: bool = False,
    create: bool = True,
) -> StateStore:
    """The store a command uses; ``create=False``: one that must hold its runs already."""
    from drctl.state.open import legacy_note, open_store, state_spec

    spec = state_spec(state, settings_state)
    note = legacy_note(spec)
    if note is not None:
        sys.stderr.write(visible(f"drctl: {note}\n"))
    return open_store(spec, read_only=read_only, create=create)


def _options(
    concurrency: int | None,
    dry_run: bool,
    yes: bool,
    approve: list[str],
    reapply: list[str] | None = None,
    mark_done: list[str] | None = None,
    reason: str | None = None,
) -> Options:
    from drctl.engine.executor import Options

    if concurrency is not None and not 1 <= concurrency <= 1024:
        from drctl.errors import UsageError

        raise UsageError("--concurrency: give a number from 1 to 1024")
    return Options(
        concurrency=concurrency, dry_run=dry_run, yes=yes, approve=frozenset(approve),
        reapply=frozenset(reapply or ()), mark_done=frozenset(mark_done or ()), reason=reason,
    )  # fmt: skip


def _finish(outcome: Outcome, run_id: str, state_flag: str = "") -> None:
    if outcome.exit_code not in (0,):
        sys.stderr.write(
            visible(f"drctl: run {run_id} {outcome.status.words}: {outcome.message}\n")
        )
        if outcome.exit_code in (1, 4, 130) and outcome.status not in (
            RunStatus.ROLLED_BACK,
            RunStatus.DRY_RUN_FAILED,
        ):
            sys.stderr.write(f"    resume with: drctl resume {run_id}{state_flag}\n")
    raise typer.Exit(outcome.exit_code)


def _store_for_runbook(
    state: str | None, file: str, given: ParamInput
) -> tuple[StateStore, Plan, str]:
    """The store a new run of ``file`` uses: --state, DRCTL_STATE, the runbook's
    ``settings.state``, or the default, first found.

    Returns the compiled plan (so it is not compiled twice), and the ``--state`` flag later commands need when the store came from the
    runbook (connection string masked), else "".
    """
    import os

    from drctl.compiler.compile import compile_runbook
    from drctl.render.diagnostics import as_text

    # Compiled here, once, so the compiler's warnings (a params file's undeclared keys,
    # a stale acknowledge) are on the operator's screen before anything runs.
    plan = compile_runbook(file, given)
    sys.stderr.write(as_text(plan.warnings))
    if state or os.environ.get("DRCTL_STATE"):
        return _store(state), plan, ""
    from drctl.drill.conninfo import mask_dsn

    from_runbook = plan.settings.state or ""
    shown = f" --state '{mask_dsn(from_runbook)}'" if from_runbook else ""
    return _store(None, from_runbook or None), plan, shown


def run(
    file: str = typer.Argument(..., metavar="FILE", help="The runbook."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    params_file: str | None = typer.Option(None, "--params-file", help=PARAMS_FILE_HELP),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Run read-only steps for real and mutating steps' checks; change nothing.",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Approve every gate."),
    approve: list[str] | None = typer.Option(
        None, "--approve", help="Approve one gate by step id (repeatable)."
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", help="Steps run at once (default: settings.concurrency or 8)."
    ),
    fmt: str | None = format_option(
        None, "text", "json", what="Output (text: a live view on a TTY)"
    ),
    legacy: str | None = legacy_output_option("text", "json"),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
    override_cooldown: bool = typer.Option(
        False,
        "--override-cooldown",
        help="Start although the lock key's last run finished within settings.cooldown "
        "(needs --reason; journaled).",
    ),
    reason: str | None = typer.Option(
        None, "--reason", help="Why the cooldown is overridden (kept in the journal)."
    ),
) -> None:
    """Execute a runbook with a durable journal; exit 0 done, 1 failed, 3 locked, 4 gate, 130 interrupted."""
    from drctl.compiler.params import ParamInput
    from drctl.engine.executor import Interrupts
    from drctl.engine.runner import Runner

    override = _cooldown_reason(override_cooldown, reason)
    output = OutputFormat(chosen(fmt, legacy, "text"))
    terminal = Terminal(output, yes, approve or [])
    interrupts = Interrupts()
    _signals(interrupts)
    given = ParamInput(tuple(param or ()), params_file)
    store, plan, state_flag = _store_for_runbook(state, file, given)
    options = _options(concurrency, dry_run, yes, approve or [])
    runner = Runner(store, terminal.make_sinks, terminal.gate, interrupts)
    run_id, outcome = runner.start(file, given, options, plan=plan, override_cooldown=override)
    _finish(outcome, run_id, state_flag)


def _cooldown_reason(override: bool, reason: str | None) -> str | None:
    """The journaled reason for --override-cooldown; the two flags go together."""
    from drctl.errors import UsageError

    if override and not (reason or "").strip():
        raise UsageError("--override-cooldown needs --reason TEXT (it is journaled)")
    if reason is not None and not override:
        raise UsageError("--reason goes with --override-cooldown")
    return reason.strip() if override and reason is not None else None


def resume(
    run_id: str | None = typer.Argument(
        None, metavar="RUN_ID", help="The run (an id prefix is enough)."
    ),
    last: bool = typer.Option(False, "--last", help="Resume the most recent run."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Approve every gate (and a changed plan)."),
    approve: list[str] | None = typer.Option(
        None, "--approve", help="Approve one gate by step id (repeatable)."
    ),
    allow_changed_plan: bool = typer.Option(
        False, "--allow-changed-plan", help="Show the plan diff and ask instead of refusing."
    ),
    reapply: list[str] | None = typer.Option(
        None,
        "--reapply",
        help="Apply a step again: one left in doubt, or one that succeeded and was undone "
        "since (a lifted fence) (repeatable).",
    ),
    mark_done: list[str] | None = typer.Option(
        None,
        "--mark-done",
        help="Record a step left in doubt as done; its verify runs first, and if it does not "
        "confirm, --reason is needed (repeatable).",
    ),
    reason: str | None = typer.Option(
        None, "--reason", help="Why a --mark-done step is done although verify does not say so."
    ),
    unmeasured: bool = typer.Option(
        False,
        "--unmeasured",
        help="Finish a paused drill without its canary (it stays measured up to the pause).",
    ),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Steps run at once."),
    fmt: str | None = format_option(None, "text", "json", what="Output (json: one event per line)"),
    legacy: str | None = legacy_output_option("text", "json"),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Continue a run: skip what succeeded, verify what was interrupted, retry what failed."""
    from drctl.engine.executor import Interrupts
    from drctl.engine.runner import Runner
    from drctl.engine.runs import PlanChanged, find_run
    from drctl.errors import UsageError

    if run_id is None and not last:
        raise UsageError("give a RUN_ID or --last")
    store = _store(state, create=False)
    record = find_run(store, run_id, last=last)
    if not unmeasured:
        from drctl.engine.runs import paused_drill

        if paused_drill(store, record.id) is not None:
            raise UsageError(
                f"run {record.id} is a drill: resuming it here would leave the rest unmeasured",
                hint=f"continue it with: drctl drill --resume {record.id} (or pass --unmeasured)",
            )
    terminal = Terminal(OutputFormat(chosen(fmt, legacy, "text")), yes, approve or [])
    interrupts = Interrupts()
    _signals(interrupts)
    options = _options(concurrency, False, yes, approve or [], reapply, mark_done, reason)
    runner = Runner(store, terminal.make_sinks, terminal.gate, interrupts)
    try:
        outcome = runner.resume(record, options)
    except PlanChanged as changed:
        if not allow_changed_plan:
            raise
        accept = _confirm_changed_plan(changed, terminal)
        outcome = runner.resume(record, options, accept_plan_hash=accept)
    _finish(outcome, record.id)


def _confirm_changed_plan(changed: Any, terminal: Terminal, out: IO[str] | None = None) -> str:
    """Show how the plan changed (on ``out``, default stdout); the new hash if accepted."""
    from drctl.compiler.diff import diff_plans
    from drctl.errors import ResumeRefused
    from drctl.render.diff import as_text

    old = changed.run.plan()
    (out or sys.stdout).write(
        as_text(diff_plans(old, changed.new_plan), "run's plan", changed.run.runbook)
    )
    if terminal.yes:
        return str(changed.new_plan.hash)
    if not terminal.interactive:
        raise ResumeRefused(
            "the plan changed; confirm on a terminal or pass --yes with --allow-changed-plan"
        )
    try:
        answer = _ask("Resume with the changed plan? [y/N] ")
    except (KeyboardInterrupt, EOFError):
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return str(changed.new_plan.hash)
    raise ResumeRefused("resume with the changed plan declined")


def abort(
    run_id: str = typer.Argument(..., metavar="RUN_ID", help="The run to give up."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the journal)."),
    state: str | None = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Give up an unfinished run (journaled), so a new run of the runbook may start."""
    from drctl.engine.runs import abort as do_abort
    from drctl.engine.runs import find_run

    store = _store(state, create=False)
    record = find_run(store, run_id)
    do_abort(record, reason, store)
    sys.stdout.write(f"run {record.id} aborted\n")


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(resume)
    app.command()(abort)
