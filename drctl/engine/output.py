"""Output sinks: plain timestamped lines, JSON lines, and the live view on a TTY.

All sinks receive events only after they are journaled, and text already redacted.
"""

from __future__ import annotations

import json
import threading
import time
from typing import IO, Any, ClassVar

from drctl.compiler.plan import Plan
from drctl.engine import events as ev
from drctl.engine.status import StepStatus
from drctl.state.base import Event


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def describe_event(event: Event) -> str | None:
    """The one human line for an event (the same text in every text sink and in ``drctl log``)."""
    d = event.data
    s = event.step
    k = event.kind
    if k == ev.RUN_STARTED:
        return f"run {d.get('run_id')} started: {d.get('runbook')} (plan {str(d.get('plan_hash'))[:19]}, lock {d.get('lock_key')} token {event.token}){' [dry run]' if d.get('dry_run') else ''}"
    if k == ev.RUN_RESUMED:
        return f"run resumed by {d.get('user')}@{d.get('host')} (token {event.token})"
    if k == ev.STEP_STARTED:
        return f"{s}: started (attempt {event.attempt})"
    if k == ev.STEP_SUCCEEDED:
        return str(d.get("summary") or f"{s}: ok")
    if k == ev.STEP_FAILED:
        retry = f"; retrying in {d['retry_in']:g}s" if d.get("retry_in") is not None else ""
        tag = " (ignored: on_failure continue)" if d.get("ignored") else ""
        return f"{s}: FAILED (attempt {event.attempt}): {d.get('error')}{retry}{tag}"
    if k == ev.STEP_SKIPPED:
        return f"{s}: skipped ({d.get('reason')})"
    if k == ev.STEP_RECOVERED:
        return f"{s}: recovered by fallback {d.get('by')}"
    if k == ev.STEP_CHECKED:
        return (
            f"{s}: would {d.get('would')}"
            if d.get("ok")
            else f"{s}: CHECK FAILED: {d.get('error')}"
        )
    if k == ev.STEP_RECORDED:
        return None
    if k == ev.APPROVAL_NEEDED:
        return f"{s}: waiting for approval: {d.get('description')}"
    if k == ev.APPROVAL_GRANTED:
        return f"{s}: approved ({d.get('by')})"
    if k == ev.APPROVAL_DENIED:
        return f"{s}: approval denied ({d.get('by')})"
    if k == ev.UNDO_STARTED:
        return f"{s}: undoing"
    if k == ev.UNDO_SUCCEEDED:
        return f"{s}: undone"
    if k == ev.UNDO_FAILED:
        return f"{s}: UNDO FAILED: {d.get('error')}"
    if k == ev.RUN_INTERRUPTED:
        return "run interrupted"
    if k == ev.RUN_FINISHED:
        return f"run finished: {d.get('status')} (exit {d.get('exit_code')}): {d.get('message')}"
    if k == ev.RUN_ABORTED:
        return f"run aborted by {d.get('by')}: {d.get('reason')}"
    if k == ev.DRILL_MEASURED:
        verdict = "objectives met" if d.get("passed") else "objectives MISSED"
        m = d.get("measurement") or {}
        return f"drill measured: {verdict} (RPO {m.get('missing', '?')} writes lost, RTO {m.get('rto', '?')}s)"
    if k == ev.DRILL_PAUSED:
        acks = len((d.get("acks") or {}).get("rows") or [])
        return f"drill paused: {acks} canary writes acknowledged so far; drctl drill --resume continues it"
    if k == ev.LOCK_TAKEN_OVER:
        return f"lock {d.get('key')}: expired lease of {d.get('previous')} taken over"
    if k == ev.LOCK_FORCE_RELEASED:
        return f"lock {d.get('key')} force-released by {d.get('by')}: {d.get('reason')}"
    return f"{k} {s or ''}".strip()


class PlainSink:
    """Timestamped lines, for logs and pipes."""

    def __init__(self, stream: IO[str], show_output: bool = True) -> None:
        self.stream = stream
        self.show_output = show_output

    def event(self, event: Event) -> None:
        line = describe_event(event)
        if line is not None:
            self.stream.write(f"{_stamp(event.ts)} {line}\n")
            self.stream.flush()

    def log(self, step: str, line: str) -> None:
        if self.show_output:
            self.stream.write(f"{_stamp(time.time())} {step} | {line}\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(f"{_stamp(time.time())} {text}\n")
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
        self._write({"type": "event", **event.to_json()})

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

    def __init__(self, plan: Plan, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.plan = plan
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
                self._ICONS.get(row["state"], " "), sid, row["state"],
                str(row["attempt"] or ""), f"{took:.1f}s" if took is not None else "", row["text"],
            )  # fmt: skip
        parts: list[Any] = [table]
        if self.current and self.tail:
            parts.append(Text(f"── {self.current} output ──", style="dim"))
            parts.extend(Text(line, style="dim") for line in self.tail[-5:])
        parts.extend(Text(n, style="yellow") for n in self.notes[-3:])
        return Group(*parts)

    def event(self, event: Event) -> None:
        with self._lock:
            row = self.rows.get(event.step or "")
            k = event.kind
            if row is not None:
                if k == ev.STEP_STARTED:
                    row.update(
                        state=StepStatus.RUNNING, attempt=event.attempt, started=event.ts, took=None
                    )
                    self.current, self.tail = event.step, []
                elif k in (ev.STEP_SUCCEEDED, ev.STEP_RECOVERED):
                    row["state"] = (
                        StepStatus.SUCCEEDED if k == ev.STEP_SUCCEEDED else StepStatus.RECOVERED
                    )
                    row["took"] = event.data.get("duration", row["took"])
                elif k == ev.STEP_FAILED:
                    row["state"] = (
                        StepStatus.RETRYING
                        if not event.data.get("final", True)
                        else StepStatus.FAILED
                    )
                    row["text"] = str(event.data.get("error"))
                elif k == ev.STEP_SKIPPED:
                    row["state"] = StepStatus.SKIPPED
                elif k == ev.STEP_CHECKED:
                    row["state"] = StepStatus.CHECKED if event.data.get("ok") else StepStatus.FAILED
                    row["text"] = str(event.data.get("would") or event.data.get("error"))
                elif k == ev.APPROVAL_NEEDED:
                    row["state"] = StepStatus.WAITING
                elif k == ev.UNDO_SUCCEEDED:
                    row["state"] = StepStatus.UNDONE
            elif k == ev.RUN_FINISHED:
                self.notes.append(describe_event(event) or "")
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
