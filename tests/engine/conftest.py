"""Running the engine in-process against a real SQLite store in tmp_path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drctl.compiler.params import ParamInput
from drctl.engine.executor import Interrupts, Options, Outcome
from drctl.engine.replay import RunState, replay
from drctl.engine.runner import Runner
from drctl.engine.runs import find_run
from drctl.engine.status import GateVerdict
from drctl.state.base import Event
from drctl.state.sqlite import SqliteStore


class RecordingSink:
    """Keeps what a run showed, to assert on."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lines: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def event(self, event: Event) -> None:
        self.events.append(event)

    def log(self, step: str, line: str) -> None:
        self.lines.append((step, line))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def close(self) -> None:
        return None


class FakeClock:
    """Real time, but sleeps return at once and are remembered (retry delays)."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, interrupt: threading.Event) -> bool:
        self.slept.append(round(seconds, 3))
        return interrupt.is_set()


@dataclass
class Harness:
    tmp: Path
    store: SqliteStore
    sink: RecordingSink = field(default_factory=RecordingSink)
    clock: FakeClock = field(default_factory=FakeClock)
    gate_answers: dict[str, str] = field(default_factory=dict)

    def write(self, text: str, name: str = "rb.yaml") -> str:
        path = self.tmp / name
        path.write_text(text.replace("{tmp}", str(self.tmp)))
        return str(path)

    def gate(self, step: Any) -> tuple[GateVerdict, str]:
        verdict = self.gate_answers.get(step.id, GateVerdict.NEEDED)
        return GateVerdict(verdict), "test"

    def runner(self) -> Runner:
        """A Runner on this harness's store, sink, gate answers and clock."""
        return Runner(self.store, lambda plan: [self.sink], self.gate, Interrupts(), self.clock)

    def run(self, path: str, *flags: str, **options: Any) -> tuple[str, Outcome]:
        return self.runner().start(path, ParamInput(tuple(flags)), Options(**options))

    def resume(self, run_id: str, **options: Any) -> Outcome:
        return self.runner().resume(find_run(self.store, run_id), Options(**options))

    def state(self, run_id: str) -> RunState:
        return replay(self.store.events(run_id))

    def kinds(self, run_id: str) -> list[tuple[str, str | None]]:
        return [(e.kind, e.step) for e in self.store.events(run_id)]


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.chdir(tmp_path)
    return Harness(tmp_path, SqliteStore(tmp_path / "state.db"))


HEAD = """apiVersion: drctl/v1
kind: Runbook
metadata: {name: t}
"""

WriteFn = Callable[[str], str]


@pytest.fixture
def http_server() -> Any:
    """A real HTTP server on loopback: /health answers JSON, /hook records POSTed JSON."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                body = json.dumps({"status": "ok"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
