"""The one redaction layer: every resolved secret is masked in every sink.

Secrets are registered as they are resolved; the journal, the terminal, JSON
events and step output all pass through the same Redactor before leaving memory.
"""

from __future__ import annotations

import threading
from typing import Any

from drctl.runbook.secrets import MASK

#: Shorter values would mask ordinary words and digits everywhere; secrets this short
#: are refused at resolution time instead (see engine.secrets).
MIN_SECRET_LENGTH = 4


class Redactor:
    """Masks registered secret values in text and in nested data."""

    def __init__(self) -> None:
        self._secrets: list[str] = []
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value not in self._secrets:
                # Longest first, so a secret containing another is masked whole.
                self._secrets = sorted({*self._secrets, value}, key=len, reverse=True)

    def text(self, value: str) -> str:
        if not self._secrets:
            return value
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def data(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value
