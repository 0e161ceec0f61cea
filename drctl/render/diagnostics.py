"""Diagnostics as ``path:line:col: error CODE: message``, JSON, or GitHub annotations."""

from __future__ import annotations

import json
from collections.abc import Sequence

from drctl.diagnostics import Diagnostic
from drctl.visible import visible


def as_text(diags: Sequence[Diagnostic]) -> str:
    lines = []
    for d in diags:
        lines.append(f"{d.location}: {d.severity.value} {d.code}: {d.message}")
        if d.hint:
            lines.append(f"    hint: {d.hint}")
    return visible("\n".join(lines) + ("\n" if lines else ""))


def as_json(diags: Sequence[Diagnostic], files: Sequence[str]) -> str:
    payload = {
        "valid": not any(d.severity.value == "error" for d in diags),
        "files": list(files),
        "diagnostics": [
            {
                "source": d.source,
                "line": d.position.line if d.position else None,
                "column": d.position.column if d.position else None,
                "severity": d.severity.value,
                "code": d.code,
                "message": d.message,
                "hint": d.hint,
            }
            for d in diags
        ],
    }
    return visible(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def as_github(diags: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands, one ``::error file=…,line=…,col=…`` per problem."""
    lines = []
    for d in diags:
        props = [f"file={_prop(d.source)}"]
        if d.position is not None:
            props += [f"line={d.position.line}", f"col={d.position.column}"]
        props.append(f"title={_prop('drctl ' + d.code)}")
        text = d.message + (f" ({d.hint})" if d.hint else "")
        lines.append(f"::{d.severity.value} {','.join(props)}::{_data(text)}")
    return visible("\n".join(lines) + ("\n" if lines else ""))


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")
