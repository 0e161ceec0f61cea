"""Durations as runbooks write them: ``500ms``, ``30s``, ``2m``, ``1h30m``, or plain seconds."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


#: About 31,700 years: longer is a typo, and would overflow when shown in milliseconds.
MAX_SECONDS = 1e12


def parse_duration(value: object) -> float:
    """Seconds in ``value``; raises ValueError with a message fit for a runbook author."""
    seconds = _parse(value)
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"{value!r} is not a finite duration of at most {MAX_SECONDS:g} seconds")
    return seconds


def _parse(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '30s', '2m', '1h30m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration is a number of seconds or text like '30s', '2m', '1h30m'")
    text = value.strip().replace(" ", "")
    if text.replace(".", "", 1).isdigit():
        return float(text)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (use e.g. '500ms', '30s', '2m', '1h30m')")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact text for ``seconds``: ``90`` → ``1m30s``, ``0.5`` → ``500ms``."""
    if seconds == 0:
        return "0s"
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms" if millis < 1000 else f"{seconds:g}s"
    rest = millis // 1000
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)
