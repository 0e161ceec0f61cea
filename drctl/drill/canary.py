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

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from drctl.drill.conninfo import mask_dsn, secret_values
from drctl.errors import DrctlError, first_line


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
        self.fatal: str | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0

    # -- what a kind supplies ------------------------------------------------------------
    def warm(self) -> None:  # noqa: B027 - a kind without a client library needs nothing
        """Import the kind's client library through the steps' one import lock.

        Called before the run starts: the writer thread must not import the library while
        the run's warm-up thread imports it (a half-initialised module either side).
        """

    @abstractmethod
    def check(self) -> None:
        """Raise CanaryError (naming the flag, never the string) if a connection string is malformed."""

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

    def describe_error(self, exc: BaseException) -> str:
        """One line on a failed write, as the kind's client words it, with no secret in it."""
        return self.scrub(self._error_line(exc))

    def _error_line(self, exc: BaseException) -> str:
        return first_line(exc)

    def scrub(self, text: str) -> str:
        """``text`` with the connection strings' secret values replaced by ``***``."""
        for dsn in (self.spec.dsn, self.spec.verify_dsn or ""):
            for secret in secret_values(dsn):
                text = text.replace(secret, "***")
        return text

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
        while time.monotonic() < deadline and self._thread.is_alive():
            if self.acks():
                return
            time.sleep(0.01)
        self.stop()
        if self.fatal is not None:
            raise CanaryError(f"canary: the writer stopped by surprise: {self.fatal}")
        raise CanaryError(
            f"canary: no write acknowledged within {first_ack_within:g}s through {self.shown()}"
            + (f": {self._last_error}" if self._last_error else ""),
            hint="check --canary-dsn (and --canary-dns-server): the canary writes where the application does",
        )

    def stop(self) -> None:
        """Stop writing; bounded by one write's timeout.

        From the moment this is called no new sequence number is handed out, so
        ``next_seq`` is final even if a write still in flight outlives the wait.
        """
        with self._lock:  # with _take_seq: once set, no sequence number is handed out
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.spec.timeout * 3 + 1)
        self.stopped_at = self._now()

    def acks(self) -> list[Ack]:
        with self._lock:
            return list(self._acks)

    @property
    def errors(self) -> int:
        with self._lock:
            return self._errors

    @property
    def next_seq(self) -> int:
        """The first sequence number never handed out: a later canary of the drill starts there.

        Not the last acknowledged one plus one: a write whose acknowledgement was lost may
        still have landed, and must not be confused with a new one.
        """
        with self._lock:
            return self._next_seq

    def shown(self) -> str:
        via = f" (resolved through {self.spec.dns_server})" if self.spec.dns_server else ""
        return mask_dsn(self.spec.dsn) + via

    # -- the writer ----------------------------------------------------------------------
    def _take_seq(self) -> int | None:
        with self._lock:
            if self._stop.is_set():
                return None
            seq = self._next_seq
            self._next_seq += 1
            return seq

    def _loop(self) -> None:
        failures = self._failures()
        conn: Any = None
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    if conn is None:
                        conn = self._connect()
                    seq = self._take_seq()
                    if seq is None:
                        break
                    address = self._write(conn, seq)
                    ack = Ack(seq, self._now(), address)
                    with self._lock:
                        self._acks.append(ack)
                except failures as exc:
                    with self._lock:
                        self._errors += 1
                        self._last_error = self.describe_error(exc)
                    conn = self._after_failure(conn)
                self._stop.wait(max(0.0, self.spec.interval - (time.monotonic() - began)))
        except Exception as exc:  # a canary that stopped by surprise must not pass for an outage
            self.fatal = f"{type(exc).__name__}: {self.describe_error(exc)}"
            self._last_error = self.fatal
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):  # releasing a broken client: nothing to do
                    self._close(conn)


def make_canary(spec: CanarySpec, drill_id: str, *, first_seq: int = 1) -> Canary:
    """The canary of ``spec.kind`` (its client library imported only now)."""
    if spec.kind == "mongo":
        from drctl.drill.mongo_canary import MongoCanary

        return MongoCanary(spec, drill_id, first_seq=first_seq)
    from drctl.drill.pg_canary import PostgresCanary

    return PostgresCanary(spec, drill_id, first_seq=first_seq)
