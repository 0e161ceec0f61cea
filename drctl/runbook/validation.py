"""Pydantic validation errors, translated once into positioned diagnostics."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from drctl.diagnostics import E_SCHEMA, E_UNKNOWN_FIELD, Diagnostic
from drctl.runbook.source import Loc, SourceMap
from drctl.runbook.suggest import did_you_mean


def validate_model(
    model: type[BaseModel], data: Any, srcmap: SourceMap, prefix: Loc, *, code: str = E_SCHEMA
) -> tuple[BaseModel | None, list[Diagnostic]]:
    """Validate ``data`` (found at ``prefix`` in the document) as ``model``."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, to_diagnostics(exc, model, data, srcmap, prefix, code=code)


def to_diagnostics(
    exc: ValidationError,
    model: type[BaseModel],
    data: Any,
    srcmap: SourceMap,
    prefix: Loc,
    *,
    code: str = E_SCHEMA,
) -> list[Diagnostic]:
    grouped: dict[Loc, list[dict[str, Any]]] = {}
    for err in exc.errors(include_url=False):
        loc = _real_loc(data, tuple(err["loc"]))
        grouped.setdefault(loc, []).append(dict(err))
    out = []
    for loc, errs in grouped.items():
        full = (*prefix, *loc)
        where = _dotted(full)
        first = errs[0]
        if first["type"] == "extra_forbidden":
            allowed = allowed_keys(model, loc[:-1])
            hint = did_you_mean(str(loc[-1]), allowed) if allowed else None
            if hint is None and allowed:
                hint = "allowed here: " + ", ".join(sorted(allowed))
            out.append(
                srcmap.diagnostic(
                    E_UNKNOWN_FIELD, f"{where}: unknown field", full, key=True, hint=hint
                )
            )
            continue
        if first["type"] == "missing":
            parent = full[:-1]
            out.append(
                srcmap.diagnostic(
                    code, f"{_dotted(parent) or 'runbook'}: missing field {loc[-1]!r}", parent
                )
            )
            continue
        messages = []
        for detail in errs:
            msg = _message(detail)
            if msg not in messages:
                messages.append(msg)
        text = "; or ".join(messages) if len(messages) > 1 else messages[0]
        out.append(srcmap.diagnostic(code, f"{where or 'runbook'}: {text}", full))
    return out


def _message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err["type"] == "string_pattern_mismatch":
        return f"{err['input']!r} is not a valid name (letters, digits, '_', '-', '.')"
    if err["type"] == "model_type" or err["type"] == "dict_type":
        return "expected a mapping"
    if err["type"] == "list_type":
        return "expected a list"
    return msg[0].lower() + msg[1:] if msg else msg


def _real_loc(data: Any, loc: Loc) -> Loc:
    """Drop the parts of a pydantic loc that name union members, not document keys."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:  # noqa: SIM114 (merged, mypy loses the narrowing)
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not _is_union_tag(part):
            out.append(part)  # a missing or unknown key: keep it, it is the subject
            node = None
        else:
            continue
    return tuple(out)


def _is_union_tag(part: str) -> bool:
    return "[" in part or part[:1].isupper() or part in {"str", "int", "float", "bool", "list"}


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types an annotation may hold (through Annotated, unions, Optional)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        found: list[Any] = []
        for arg in typing.get_args(tp):
            found.extend(_unwrap(arg))
        return found
    return [tp]


def allowed_keys(model: type[BaseModel], loc: Loc) -> list[str] | None:
    """The field names a mapping at ``loc`` (inside ``model``) may have, if it is a model."""
    candidates: list[Any] = [model]
    for part in loc:
        nxt: list[Any] = []
        for tp in candidates:
            for t in _unwrap(tp):
                origin = typing.get_origin(t)
                if isinstance(t, type) and issubclass(t, BaseModel):
                    for name, field in t.model_fields.items():
                        if part in (name, field.alias):
                            nxt.append(field.annotation)
                elif origin in (list, tuple) and isinstance(part, int):
                    nxt.append(typing.get_args(t)[0])
                elif origin is dict:
                    nxt.append(typing.get_args(t)[1])
        candidates = nxt
    for tp in candidates:
        for t in _unwrap(tp):
            if isinstance(t, type) and issubclass(t, BaseModel):
                return [f.alias or n for n, f in t.model_fields.items()]
    return None
