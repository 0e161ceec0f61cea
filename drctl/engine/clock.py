"""Time, injected, so retries and timeouts are testable without sleeping."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (for the journal)."""

    def monotonic(self) -> float:
        """Seconds for measuring durations and deadlines."""

    def sleep(self, seconds: float, interrupt: threading.Event) -> bool:
        """Sleep, waking early when ``interrupt`` is set; True if interrupted."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, interrupt: threading.Event) -> bool:
        if seconds <= 0:
            # The same answer without wait's lock, which every shard of a fan-out shares.
            return interrupt.is_set()
        return interrupt.wait(seconds)
