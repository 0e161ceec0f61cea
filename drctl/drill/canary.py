"""The canary writer every drill runs: numbered writes through the client path, acknowledged.

A background thread writes ``(drill_id, seq, at)`` every ``interval`` seconds through the
connection string an application would use. A write counts as acknowledged only after
the database confirmed it as durable; each acknowledgement keeps its sequence number,
wall time and the address of the server that confirmed it. On a failure the writer
reconnects the way that database's clients do (see each kind). Every connect and write
is bounded by ``timeout``, so stopping the canary is bounded too.

Kinds: ``postgres`` (drctl.drill.pg_canary) and ``mongo`` (drctl.drill.mongo_canary).
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from drctl.errors import DrctlError


class CanaryError(DrctlError):
    """Raised when the canary cannot write before the drill starts (exit 2: check the flags),
    or cannot resolve or read back the new primary after it (the drill journals that instead)."""

    exit_code = 2


@dataclass(frozen=True)
class Ack:
    """One acknowledged write: its sequence number, when it was confirmed, and by which server."""

    seq: int
    at: float
    address: str


@dataclass(frozen=True)
class CanarySpec:
    """Where the canary writes (the application's connection string) and where it reads back."""

    kind: str
    dsn: str
    dns_server: str | None = None
    verify_dsn: str | None = None
    interval: float = 0.02
    timeout: float = 1.0
    #: How long the canary keeps writing after the run ended (to see the new primary).
    settle: float = 2.0


class Canary(ABC):
    """Writes numbered records until stopped; keeps every acknowledgement.

    A kind supplies how to connect, write one record, react to a failure and read the
    records back; the writing loop, its pacing and its bookkeeping are shared.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        spec: CanarySpec,
        drill_id: str,
        *,
        first_seq: int = 1,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.drill_id = drill_id
        self._now = now
        self._next_seq = first_seq
        self._acks: list[Ack] = []
        self._errors = 0
        self._last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0

    # -- what a kind supplies ------------------------------------------------------------
    def prepare(self) -> None:  # noqa: B027 - most kinds need nothing before writing
        """Make the records' home exist through the client path; raises CanaryError if it cannot."""

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection (or client) to write through."""

    @abstractmethod
    def _write(self, conn: Any, seq: int) -> str:
        """Write record ``seq`` durably; the address of the server that confirmed it."""

    @abstractmethod
    def _failures(self) -> tuple[type[BaseException], ...]:
        """The exceptions a failed connect or write raises (the canary counts them and goes on)."""

    @abstractmethod
    def _after_failure(self, conn: Any) -> Any:
        """What to write through next after a failure: ``conn`` kept, or None to reconnect."""

    @abstractmethod
    def _close(self, conn: Any) -> None:
        """Release ``conn`` when the canary stops."""

    @abstractmethod
    def read_back(self) -> tuple[set[int], str, str]:
        """The seqs of this drill found on the new primary, its address, and the masked
        connection string read from; raises CanaryError if it cannot be read."""

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, first_ack_within: float | None = 5.0) -> None:
        """Start writing; returns after the first acknowledgement (CanaryError if none comes).

        With ``first_ack_within=None`` it returns at once: a drill resumed mid-failover
        may find writes impossible, and that is what it is there to measure.
        """
        self.started_at = self._now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="drctl-canary", daemon=True)
        self._thread.start()
        if first_ack_within is None:
            return
        deadline = time.monotonic() + first_ack_within
        while time.monotonic() < deadline:
            if self.acks():
                return
            time.sleep(0.01)
        self.stop()
        raise CanaryError(
            f"canary: no write acknowledged within {first_ack_within:g}s through {self.shown()}"
            + (f": {self._last_error}" if self._last_error else ""),
            hint="check --canary-dsn (and --canary-dns-server): the canary writes where the application does",
        )

    def stop(self) -> None:
        """Stop writing; bounded by one write's timeout."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.spec.timeout * 3 + 1)
        self.stopped_at = self._now()

    def acks(self) -> list[Ack]:
        with self._lock:
            return list(self._acks)

    @property
    def errors(self) -> int:
        return self._errors

    @property
    def next_seq(self) -> int:
        """The first sequence number never attempted: a later canary of the drill starts there.

        Not the last acknowledged one plus one: a write whose acknowledgement was lost may
        still have landed, and must not be confused with a new one.
        """
        return self._next_seq

    def shown(self) -> str:
        via = f" (resolved through {self.spec.dns_server})" if self.spec.dns_server else ""
        return mask_dsn(self.spec.dsn) + via

    # -- the writer ----------------------------------------------------------------------
    def _loop(self) -> None:
        failures = self._failures()
        conn: Any = None
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                if conn is None:
                    conn = self._connect()
                seq = self._next_seq
                self._next_seq += 1
                address = self._write(conn, seq)
                ack = Ack(seq, self._now(), address)
                with self._lock:
                    self._acks.append(ack)
            except failures as exc:
                self._errors += 1
                self._last_error = first_line(exc)
                conn = self._after_failure(conn)
            self._stop.wait(max(0.0, self.spec.interval - (time.monotonic() - began)))
        if conn is not None:
            self._close(conn)


def make_canary(spec: CanarySpec, drill_id: str, *, first_seq: int = 1) -> Canary:
    """The canary of ``spec.kind`` (its client library imported only now)."""
    if spec.kind == "mongo":
        from drctl.drill.mongo_canary import MongoCanary

        return MongoCanary(spec, drill_id, first_seq=first_seq)
    from drctl.drill.pg_canary import PostgresCanary

    return PostgresCanary(spec, drill_id, first_seq=first_seq)


def mask_dsn(dsn: str) -> str:
    """A connection string as it may be shown: any password replaced by ``***``."""
    dsn = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", dsn)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
