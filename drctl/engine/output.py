"""Output sinks: plain timestamped lines, JSON lines, and the live view on a TTY.

All sinks receive events only after they are journaled, and text already redacted.
What reaches a terminal passes through ``visible`` last, so a runbook string or a
server's error text cannot move the cursor or hide itself.
"""

from __future__ import annotations

import json
import threading
import time
from typing import IO, Any, ClassVar

from drctl.compiler.plan import Plan
from drctl.engine import events as ev
from drctl.engine import outcome
from drctl.engine.outcome import describe_event
from drctl.engine.status import StepStatus
from drctl.state.base import Event
from drctl.visible import visible


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


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


class LiveSink:
    """The live view on a TTY: every step with state, attempt, duration, and output tail."""

    _ICONS: ClassVar[dict[StepStatus, str]] = {
        StepStatus.PENDING: "·", StepStatus.RUNNING: "▶", StepStatus.SUCCEEDED: "✓",
        StepStatus.FAILED: "✗", StepStatus.SKIPPED: "–", StepStatus.RETRYING: "↻",
        StepStatus.RECOVERED: "✓", StepStatus.IGNORED: "!", StepStatus.WAITING: "?",
        StepStatus.UNDOING: "↺", StepStatus.UNDONE: "↺", StepStatus.CHECKED: "✓",
    }  # fmt: skip

    def __init__(self, plan: Plan, stream: IO[str], *, debug: bool = False) -> None:
        from rich.console import Console
        from rich.live import Live

        self.plan = plan
        self.debug = debug
        self.console = Console(file=stream)
        self.rows: dict[str, dict[str, Any]] = {
            s.id: {
                "state": StepStatus.PENDING,
                "attempt": 0,
                "started": None,
                "took": None,
                "text": s.description,
            }
            for s in plan.steps
        }
        self.current: str | None = None
        self.tail: list[str] = []
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self.live = Live(
            self._render(), console=self.console, refresh_per_second=8, transient=False
        )
        self.live.start()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("", width=1)
        table.add_column("step")
        table.add_column("state")
        table.add_column("try", justify="right")
        table.add_column("time", justify="right")
        table.add_column("does", overflow="ellipsis", no_wrap=True)
        now = time.time()
        for sid, row in self.rows.items():
            took = row["took"]
            if took is None and row["started"] is not None and row["state"] is StepStatus.RUNNING:
                took = now - row["started"]
            table.add_row(
                self._ICONS.get(row["state"], " "), visible(sid), row["state"],
                str(row["attempt"] or ""), f"{took:.1f}s" if took is not None else "",
                visible(row["text"]),
            )  # fmt: skip
        parts: list[Any] = [table]
        if self.current and self.tail:
            parts.append(Text(visible(f"── {self.current} output ──"), style="dim"))
            parts.extend(Text(visible(line), style="dim") for line in self.tail[-5:])
        parts.extend(Text(visible(n), style="yellow") for n in self.notes[-3:])
        return Group(*parts)

    def event(self, event: Event) -> None:
        fact = ev.decode(event)
        with self._lock:
            row = self.rows.get(fact.step_id or "")
            if row is not None:
                state = _ROW_STATE.get(type(fact))
                if isinstance(fact, ev.StepFailed) and not fact.final:
                    state = StepStatus.RETRYING
                elif isinstance(fact, ev.StepChecked) and not fact.ok:
                    state = StepStatus.FAILED
                if state is not None:
                    row["state"] = state
                if isinstance(fact, ev.StepStarted):
                    row.update(attempt=fact.attempt, started=event.ts, took=None)
                    self.current, self.tail = fact.step, []
                elif state is not None:
                    if isinstance(fact, ev.StepSucceeded) and fact.duration is not None:
                        row["took"] = fact.duration
                    # The step's outcome, in the words every other view uses.
                    row["text"] = outcome.line(fact, event.token) or row["text"]
            elif isinstance(fact, ev.RunFinished):
                self.notes.append(outcome.line(fact, event.token) or "")
            if self.debug and isinstance(fact, ev.StepFailed) and fact.traceback:
                self.console.print(visible(fact.traceback), markup=False, highlight=False)
            self.live.update(self._render())

    def log(self, step: str, line: str) -> None:
        with self._lock:
            if step == self.current:
                self.tail.append(line)
                del self.tail[:-20]
            self.live.update(self._render())

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(text)
            self.live.update(self._render())

    def pause(self) -> None:
        self.live.stop()

    def resume(self) -> None:
        self.live.start()

    def close(self) -> None:
        with self._lock:
            self.live.update(self._render())
            self.live.stop()


#: The live view's state of a step after each kind of event about it.
_ROW_STATE: dict[type[ev.JournalEvent], StepStatus] = {
    ev.StepStarted: StepStatus.RUNNING,
    ev.StepSucceeded: StepStatus.SUCCEEDED,
    ev.StepRecovered: StepStatus.RECOVERED,
    ev.StepFailed: StepStatus.FAILED,
    ev.StepSkipped: StepStatus.SKIPPED,
    ev.StepChecked: StepStatus.CHECKED,
    ev.ApprovalNeeded: StepStatus.WAITING,
    ev.UndoStarted: StepStatus.UNDOING,
    ev.UndoSucceeded: StepStatus.UNDONE,
    ev.UndoFailed: StepStatus.FAILED,
}
