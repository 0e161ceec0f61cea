"""Rendering input values compactly and stably for plans and diffs."""

from __future__ import annotations

import json
from typing import Any


def inline(value: Any) -> str:
    """A value on one line: strings bare, everything else as compact sorted JSON."""
    if isinstance(value, str):
        return (
            value
            if value and "\n" not in value and value.strip() == value
            else json.dumps(value, ensure_ascii=False)
        )
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested inputs as ``{"a.b": 1, "c[0]": "x"}``, for line-by-line display and diffs."""
    out: dict[str, Any] = {}
    if not prefix and value == {}:
        return out  # no inputs at all: nothing to show (not a line "with.: {}")
    if isinstance(value, dict) and value:
        for k in sorted(value, key=str):
            out.update(flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def md_cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
