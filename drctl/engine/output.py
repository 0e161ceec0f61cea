"""Output sinks: plain timestamped lines, JSON lines, and the live view on a TTY.

All sinks receive events only after they are journaled, and text already redacted.
What reaches a terminal passes through ``visible`` last, so a runbook string or a
server's error text cannot move the cursor or hide itself.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any, ClassVar

from drctl.compiler.plan import Plan
from drctl.compiler.templating import is_template
from drctl.engine import events as ev
from drctl.engine import outcome, shown
from drctl.engine.outcome import describe_event
from drctl.engine.status import StepStatus
from drctl.state.base import Event
from drctl.visible import visible


def _stamp(ts: float) -> str:
    return _second(math.floor(ts))


# Formatted once a second: a run of fast steps prints many lines in each.
@lru_cache(maxsize=2)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


class PlainSink:
    """Timestamped lines, for logs and pipes."""

    def __init__(self, stream: IO[str], show_output: bool = True, *, debug: bool = False) -> None:
        self.stream = stream
        self.show_output = show_output
        #: Print the traceback of a bug in a step type (``DRCTL_DEBUG=1``).
        self.debug = debug

    def event(self, event: Event) -> None:
        fact = ev.decode(event)
        line = outcome.line(fact, event.token)
        if line is not None:
            self.stream.write(visible(f"{_stamp(event.ts)} {line}\n"))
        if self.debug and isinstance(fact, ev.StepFailed) and fact.traceback:
            self.stream.write(visible(fact.traceback))
        self.stream.flush()

    def log(self, step: str, line: str) -> None:
        if self.show_output:
            self.stream.write(visible(f"{_stamp(time.time())} {step} | {line}\n"))
            self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(visible(f"{_stamp(time.time())} {text}\n"))
        self.stream.flush()

    def close(self) -> None:
        return None


class JsonSink:
    """One JSON object per line: every event, step output lines and notes."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def _write(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
        self.stream.flush()

    def event(self, event: Event) -> None:
        self._write({"type": "event", **event.to_json(), "line": describe_event(event)})

    def log(self, step: str, line: str) -> None:
        self._write({"type": "output", "ts": time.time(), "step": step, "line": line})

    def note(self, text: str) -> None:
        self._write({"type": "note", "ts": time.time(), "text": text})

    def close(self) -> None:
        return None


@dataclass
class _Row:
    """One step's line in the live view."""

    state: StepStatus = StepStatus.PENDING
    attempt: int = 0
    started: float | None = None
    took: float | None = None
    text: str = ""
    #: The plan's description while it holds templates: rendered again as outputs arrive.
    template: str | None = None
    #: The steps whose outputs that description reads.
    reads: frozenset[str] = frozenset()


class LiveSink:
    """The live view on a TTY: the run, its elapsed time, and every step with its state.

    A fan-out (``for_each``) is one row with a progress bar, its failed shards listed
    under it by id. The view is drawn from its state at each refresh (so the clock
    ticks); events only change the state.
    """

    _ICONS: ClassVar[dict[StepStatus, str]] = {
        StepStatus.PENDING: "·", StepStatus.RUNNING: "▶", StepStatus.SUCCEEDED: "✓",
        StepStatus.FAILED: "✗", StepStatus.SKIPPED: "–", StepStatus.RETRYING: "↻",
        StepStatus.RECOVERED: "✓", StepStatus.IGNORED: "!", StepStatus.WAITING: "?",
        StepStatus.UNDOING: "↺", StepStatus.UNDONE: "↺", StepStatus.CHECKED: "✓",
        StepStatus.INTERRUPTED: "‖",
    }  # fmt: skip
    #: Failed shards listed under a fan-out's row; the rest are counted.
    FAILED_SHOWN = 5
    BAR = 20

    def __init__(self, plan: Plan, stream: IO[str], *, debug: bool = False) -> None:
        from rich.console import Console

        self.plan = plan
        self.debug = debug
        self.console = Console(file=stream)
        self.run_id = ""
        self.resumed = False
        #: Elapsed counts from this invocation: what the operator has been waiting for.
        self.began = time.time()
        self.outputs: dict[str, dict[str, Any]] = {}
        context = shown.plan_context(plan)
        self.rows: dict[str, _Row] = {}
        #: Fan-outs: base id → its shards' ids, in plan order.
        self.groups: dict[str, list[str]] = {}
        for s in plan.steps:
            templated = is_template(s.description)
            text = shown.text(s.description, context) if templated else s.description
            self.rows[s.id] = _Row(
                text=text,
                template=s.description if templated else None,
                reads=shown.reads(s.description) if templated else frozenset(),
            )
            if s.loop_var is not None:
                self.groups.setdefault(s.base_id, []).append(s.id)
        self.current: str | None = None
        self.tail: list[str] = []
        self.notes: list[str] = []
        #: Each guard's last reading, in the words every view uses (by owner and id).
        self.guards: dict[tuple[str, str], str] = {}
        self._lock = threading.RLock()
        self._frozen: Any = None
        self.live = self._new_live()
        self.live.start()

    def _new_live(self) -> Any:
        from rich.live import Live

        return Live(
            console=self.console, refresh_per_second=8, transient=False,
            get_renderable=self._renderable,
        )  # fmt: skip

    def _renderable(self) -> Any:
        return self._frozen if self._frozen is not None else self._render()

    # -- drawing -------------------------------------------------------------------

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            now = time.time()
            header = Text(visible(self.header(now)), style="bold")
            table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
            # The narrow columns keep their width; "does" takes what is left, cut short.
            ids = max((len(s) for s in self._names()), default=4)
            step_w = min(max(ids, 4), 48)
            does_w = max(20, self.console.width - (1 + step_w + 11 + 3 + 8) - 10)
            table.add_column("", width=1, no_wrap=True)
            table.add_column("step", width=step_w, no_wrap=True, overflow="ellipsis")
            table.add_column("state", width=11, no_wrap=True)
            table.add_column("try", width=3, justify="right", no_wrap=True)
            table.add_column("time", width=8, justify="right", no_wrap=True)
            table.add_column("does", max_width=does_w, overflow="ellipsis", no_wrap=True)
            grouped: set[str] = set()
            for s in self.plan.steps:
                if s.loop_var is not None:
                    if s.base_id not in grouped:
                        grouped.add(s.base_id)
                        self._group_rows(table, s.base_id, now)
                    continue
                row = self.rows[s.id]
                took = row.took
                if took is None and row.started is not None and row.state in _ACTIVE:
                    took = now - row.started
                _add(
                    table, self._ICONS.get(row.state, " "), s.id, row.state,
                    str(row.attempt or ""), f"{took:.1f}s" if took is not None else "", row.text,
                )  # fmt: skip
            parts: list[Any] = [header, table]
            if self.current and self.tail:
                parts.append(Text(visible(f"── {self.current} output ──"), style="dim"))
                parts.extend(Text(visible(line), style="dim") for line in self.tail[-5:])
            parts.extend(Text(visible(g), style="cyan") for g in self.guards.values())
            parts.extend(Text(visible(n), style="yellow") for n in self.notes[-3:])
            return Group(*parts)

    def _names(self) -> list[str]:
        """What the step column shows: step ids, a fan-out's name and its failed shards."""
        names = [s.id for s in self.plan.steps if s.loop_var is None]
        for base, ids in self.groups.items():
            names.append(f"{base} ×{len(ids)}")
            names.extend(f"  {sid}" for sid in ids if self.rows[sid].state in _FAILED)
        return names

    def header(self, now: float) -> str:
        """The line above the table: which run, of what, and for how long."""
        run = f"run {self.run_id}" if self.run_id else "run (starting)"
        resumed = " (resumed)" if self.resumed else ""
        return f"{run}{resumed} · {self.plan.name} · elapsed {_elapsed(now - self.began)}"

    def group_counts(self, base: str) -> tuple[int, int, int, int]:
        """A fan-out's shards: (done, running, failed, all)."""
        rows = [self.rows[sid] for sid in self.groups[base]]
        failed = sum(1 for r in rows if r.state in _FAILED)
        done = sum(1 for r in rows if r.state.done or r.state is StepStatus.CHECKED) - sum(
            1 for r in rows if r.state is StepStatus.IGNORED
        )
        running = sum(1 for r in rows if r.state in _ACTIVE)
        return done, running, failed, len(rows)

    def _group_rows(self, table: Any, base: str, now: float) -> None:
        done, running, failed, total = self.group_counts(base)
        if failed and not running:
            ignored = all(
                self.rows[sid].state is not StepStatus.FAILED for sid in self.groups[base]
            )
            state = StepStatus.IGNORED if ignored else StepStatus.FAILED
        elif running:
            state = StepStatus.RUNNING
        elif any(self.rows[sid].state is StepStatus.WAITING for sid in self.groups[base]):
            state = StepStatus.WAITING
        elif done == total:
            state = StepStatus.SUCCEEDED
        else:
            state = StepStatus.PENDING
        rows = [self.rows[sid] for sid in self.groups[base]]
        starts = [r.started for r in rows if r.started is not None]
        took = ""
        if starts:
            ends = [r.started + r.took for r in rows if r.started is not None and r.took]
            end = now if running or not ends else max(ends)
            took = f"{end - min(starts):.1f}s"
        filled = (self.BAR * done) // total if total else 0
        bar = "█" * filled + "░" * (self.BAR - filled)
        counts = f"{done}/{total} done · {running} running · {failed} failed"
        _add(
            table,
            self._ICONS.get(state, " "),
            f"{base} ×{total}",
            state,
            "",
            took,
            f"{counts} {bar}",
        )
        failures = [sid for sid in self.groups[base] if self.rows[sid].state in _FAILED]
        for sid in failures[: self.FAILED_SHOWN]:
            _add(table, "", f"  {sid}", self.rows[sid].state, "", "", self.rows[sid].text)
        if len(failures) > self.FAILED_SHOWN:
            more = len(failures) - self.FAILED_SHOWN
            _add(table, "", f"  … {more} more failed", "", "", "", "drctl status lists them")

    # -- sink ----------------------------------------------------------------------

    def history(self, events: Sequence[Event]) -> None:
        """What a resumed run's journal already says, so its rows start where it stopped."""
        with self._lock:
            self.resumed = True
            for event in events:
                self._apply(event)
            for row in self.rows.values():
                if row.state in _ACTIVE:
                    # Started and never finished, before this resume: resume decides.
                    row.state, row.took = StepStatus.INTERRUPTED, None
                    row.text = "interrupted earlier; resume checks whether it took effect"

    def event(self, event: Event) -> None:
        fact = self._apply(event)
        if self.debug and isinstance(fact, ev.StepFailed) and fact.traceback:
            self.console.print(visible(fact.traceback), markup=False, highlight=False)

    def _apply(self, event: Event) -> ev.JournalEvent:
        fact = ev.decode(event)
        with self._lock:
            row = self.rows.get(fact.step_id or "")
            if isinstance(fact, ev.RunStarted):
                self.run_id = fact.run_id
            elif row is not None:
                state = _ROW_STATE.get(fact.kind)
                if isinstance(fact, ev.StepFailed) and not fact.final:
                    state = StepStatus.RETRYING
                elif isinstance(fact, ev.StepFailed) and fact.ignored:
                    state = StepStatus.IGNORED
                elif isinstance(fact, ev.StepChecked) and not fact.ok:
                    state = StepStatus.FAILED
                if state is not None:
                    row.state = state
                if isinstance(fact, ev.StepStarted):
                    row.attempt, row.started, row.took = fact.attempt or 0, event.ts, None
                    self.current, self.tail = fact.step, []
                elif state is not None and isinstance(fact, ev.StepSucceeded):
                    if fact.duration is not None:
                        row.took = fact.duration
                    self.outputs[fact.step] = fact.outputs
                    self._rerender(fact.step)
                elif state is not None and row.started is not None and row.took is None:
                    row.took = event.ts - row.started
                if state is not None:
                    # The step's outcome, in the words every other view uses.
                    row.text = outcome.line(fact, event.token) or row.text
                    row.template = None
            elif isinstance(fact, ev.RunFinished):
                self.notes.append(outcome.line(fact, event.token) or "")
            elif fact.kind in (ev.GUARD_READING, ev.GUARD_TRIPPED) and isinstance(
                fact, ev.GuardReading | ev.GuardTripped
            ):
                # Kind first: the guard classes are imported only when a guard reports.
                self.guards[(fact.for_step or "", fact.guard)] = outcome.line(fact) or ""
        return fact

    def _rerender(self, done: str) -> None:
        """Pending rows whose description reads ``done``'s outputs: shown with them now."""
        base = done.split("[", 1)[0]
        waiting = [
            r
            for r in self.rows.values()
            if r.template is not None and (done in r.reads or base in r.reads)
        ]
        if not waiting:
            return
        context = shown.plan_context(self.plan, self.outputs)
        for row in waiting:
            row.text = shown.text(row.template or "", context)

    def log(self, step: str, line: str) -> None:
        with self._lock:
            if step == self.current:
                self.tail.append(line)
                del self.tail[:-20]

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(text)

    # -- prompts -------------------------------------------------------------------

    def ask(self, step: str, description: str, text: str, read: Callable[[str], str]) -> str:
        """Ask the operator about ``step`` under a fresh table, then go on in its place.

        ``text`` is shown under the table and ``read`` asks the last line of it; after
        the answer (or Ctrl-C, which ``read`` raises as KeyboardInterrupt) the table and
        the prompt are erased and the live view is drawn again where the table was, so
        no second table appears under the first.
        """
        with self._lock:
            row = self.rows.get(step)
            if row is not None:
                row.state, row.template = StepStatus.WAITING, None
                row.text = f"{step}: waiting for approval: {description}"
            self._frozen = self._render()
            height = len(self.console.render_lines(self._frozen, self.console.options))
        self.live.stop()  # draws the frozen table, fresh, and leaves it on screen
        self._frozen = None
        *lines, question = text.split("\n")
        answer = ""
        try:
            for line in lines:
                self.console.file.write(visible(line) + "\n")
            self.console.file.flush()
            answer = read(visible(question))
        except (KeyboardInterrupt, EOFError):
            self.console.file.write("\n")  # the terminal echoed no newline after ^C or ^D
            raise
        finally:
            width = max(1, self.console.width)
            used = height + sum(_rows(line, width) for line in lines)
            used += _rows(question + answer, width)
            # Line by line back up to the table's first line, clearing each: a clear of the
            # screen's rest would push it into some terminals' scrollback (tmux does).
            self.console.file.write("\r" + "\x1b[2K\x1b[1A" * used + "\x1b[2K")
            self.console.file.flush()
            self.live = self._new_live()
            self.live.start(refresh=True)
        return answer

    def close(self) -> None:
        self.live.stop()


def _rows(text: str, width: int) -> int:
    """Terminal rows ``text`` takes at ``width`` columns."""
    from rich.cells import cell_len

    return max(1, -(-cell_len(visible(text)) // width))


def _elapsed(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def _add(table: Any, *cells: str) -> None:
    """A table row of plain text: a step id like ``promote[shard-07]`` is not markup."""
    from rich.text import Text

    table.add_row(*(Text(visible(str(c))) for c in cells))


#: Row states of a fan-out's shard that failed (ignored or not).
_FAILED = frozenset({StepStatus.FAILED, StepStatus.IGNORED})
#: Row states of a step that is under way.
_ACTIVE = frozenset({StepStatus.RUNNING, StepStatus.RETRYING, StepStatus.UNDOING})


#: The live view's state of a step after each kind of event about it (by kind: the
#: rarer event classes are imported only when such an event is written or read).
_ROW_STATE: dict[str, StepStatus] = {
    ev.STEP_STARTED: StepStatus.RUNNING,
    ev.STEP_SUCCEEDED: StepStatus.SUCCEEDED,
    ev.STEP_RECOVERED: StepStatus.RECOVERED,
    ev.STEP_FAILED: StepStatus.FAILED,
    ev.STEP_SKIPPED: StepStatus.SKIPPED,
    ev.STEP_CHECKED: StepStatus.CHECKED,
    ev.APPROVAL_NEEDED: StepStatus.WAITING,
    ev.UNDO_STARTED: StepStatus.UNDOING,
    ev.UNDO_SUCCEEDED: StepStatus.UNDONE,
    ev.UNDO_FAILED: StepStatus.FAILED,
}
