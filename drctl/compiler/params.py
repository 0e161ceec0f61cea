"""Binding runbook parameters from ``-p key=value`` flags and a ``--params-file``.

Flags win over the file, the file over defaults. Values are coerced to the declared
type; a value that does not fit is an error naming the flag or the file position. A
file's keys the runbook does not declare are one warning (the file may serve several
runbooks); an undeclared ``-p`` flag is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drctl.diagnostics import E_PARAM, W_PARAM_UNDECLARED, Diagnostic, Severity
from drctl.runbook.durations import parse_duration
from drctl.runbook.model import ParamSpec
from drctl.runbook.source import SourceMap, load_yaml, read_text
from drctl.runbook.suggest import did_you_mean

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class ParamInput:
    """Parameter values as the user gave them, before binding."""

    flags: tuple[str, ...] = ()
    params_file: str | None = None


@dataclass(frozen=True)
class _Given:
    """One parameter's value as given, and where from (a flag, the params file)."""

    value: Any
    raw_text: bool  # came from a flag: a string still to be parsed
    source: str
    srcmap: SourceMap | None = None


def bind_params(
    specs: Mapping[str, ParamSpec],
    given: ParamInput,
    runbook_path: str,
    spec_map: SourceMap,
    *,
    placeholders: bool = False,
) -> tuple[dict[str, Any], set[str], list[Diagnostic]]:
    """Bound values by name, the names that got placeholders, and the problems found.

    With ``placeholders`` (``drctl validate``), a required parameter nobody gave gets a
    stand-in of its type so the rest of the runbook can still be checked.
    """
    diags: list[Diagnostic] = []
    supplied: dict[str, _Given] = {}

    if given.params_file is not None:
        flagged = {flag.partition("=")[0].strip() for flag in given.flags}
        supplied.update(_from_file(given.params_file, specs, diags, flagged))
    for flag in given.flags:
        undecodable = _undecodable(flag)
        if undecodable is not None:
            # The OS hands Python undecodable argv bytes as lone surrogates; they
            # cannot be written anywhere (terminal, JSON, journal), so say where they are.
            raw = flag.encode("utf-8", "surrogateescape")
            shown = raw.decode("utf-8", "backslashreplace")
            diags.append(
                Diagnostic(
                    E_PARAM,
                    f"not UTF-8 text (invalid byte 0x{raw[undecodable]:02x} at offset {undecodable})",
                    f"-p {shown}",
                    hint="parameter values are UTF-8 text; pass binary data base64-encoded",
                )
            )
            continue
        # A value with a newline or control character would break the one-line diagnostic.
        source = f"-p {flag}" if flag.isprintable() else f"-p {flag!r}"
        key, sep, text = flag.partition("=")
        key = key.strip()
        if not sep or not key:
            diags.append(Diagnostic(E_PARAM, "expected -p NAME=VALUE", source))
            continue
        if key not in specs:
            diags.append(
                Diagnostic(
                    E_PARAM,
                    f"unknown parameter {key!r}",
                    source,
                    hint=did_you_mean(key, specs) or _declared(specs),
                )
            )
            continue
        supplied[key] = _Given(text, True, source)

    values: dict[str, Any] = {}
    placeholder_names: set[str] = set()
    for name in sorted(specs):
        spec = specs[name]
        if name in supplied:
            item = supplied[name]
            try:
                values[name] = coerce(spec, item.value, from_text=item.raw_text)
            except ValueError as exc:
                if item.srcmap is not None:
                    diags.append(item.srcmap.diagnostic(E_PARAM, f"{name}: {exc}", (name,)))
                else:
                    diags.append(Diagnostic(E_PARAM, f"{name}: {exc}", item.source))
            continue
        if spec.default is not None:
            try:
                values[name] = coerce(spec, spec.default, from_text=False)
            except ValueError as exc:
                diags.append(
                    spec_map.diagnostic(
                        E_PARAM, f"params.{name}.default: {exc}", ("params", name, "default")
                    )
                )
            continue
        if spec.required:
            if placeholders:
                values[name] = _placeholder(name, spec)
                placeholder_names.add(name)
            else:
                diags.append(
                    Diagnostic(
                        E_PARAM,
                        f"parameter {name!r} is required",
                        runbook_path,
                        spec_map.position(("params", name), key=True),
                        hint=f"pass -p {name}=VALUE" + _choices_hint(spec),
                    )
                )
            continue
        values[name] = None
    return values, placeholder_names, diags


def coerce(spec: ParamSpec, value: Any, *, from_text: bool) -> Any:
    """``value`` as the declared type; raises ValueError saying what was expected."""
    kind = spec.type
    if from_text and kind in ("list", "map"):
        value = _parse_structured(value, kind)
    if kind == "str":
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(f"expected text, got {_kind(value)}")
        out: Any = str(value)
    elif kind == "int":
        out = _to_int(value)
    elif kind == "float":
        out = _to_float(value)
    elif kind == "bool":
        out = _to_bool(value)
    elif kind == "duration":
        out = parse_duration(value)
    elif kind == "list":
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_kind(value)}")
        out = value
    else:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {_kind(value)}")
        out = value
    if spec.choices is not None and out not in spec.choices:
        hint = did_you_mean(str(out), [str(c) for c in spec.choices])
        choices = ", ".join(repr(c) for c in spec.choices)
        raise ValueError(f"{out!r} is not one of {choices}" + (f" ({hint})" if hint else ""))
    return out


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_structured(text: Any, kind: str) -> Any:
    if not isinstance(text, str):
        return text
    stripped = text.strip()
    if stripped[:1] in "[{":
        try:
            return json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            # Not JSON, or nested past the JSON decoder's stack: the YAML loader reads
            # JSON too, and reports nesting past its limit as E102.
            doc = load_yaml(stripped, "-p")
            return doc.data
    if kind == "list":
        return [part.strip() for part in stripped.split(",") if part.strip()] if stripped else []
    raise ValueError("expected a mapping like {key: value}")


def _from_file(
    path: str, specs: Mapping[str, ParamSpec], diags: list[Diagnostic], flags: set[str]
) -> dict[str, _Given]:
    doc = load_yaml(read_text(path), path)
    diags.extend(doc.problems)
    if not isinstance(doc.data, dict):
        diags.append(Diagnostic(E_PARAM, "a params file is a mapping of NAME: VALUE", path))
        return {}
    out = {}
    undeclared: list[str] = []
    for key, value in doc.data.items():
        if key not in specs:
            undeclared.append(str(key))
            continue
        out[str(key)] = _Given(value, False, path, doc.map)
    if undeclared:
        # One shared file often serves several runbooks (the sandbox's does): keys a
        # runbook does not declare are ignored with one warning, as Terraform does for
        # a .tfvars file, never one error each.
        first = doc.map.position((undeclared[0],), key=True)
        unset = {name for name in specs if name not in out and name not in flags}
        diags.append(
            Diagnostic(
                W_PARAM_UNDECLARED,
                f"{_count(len(undeclared), 'key')} this runbook does not declare, ignored: "
                + ", ".join(undeclared),
                path,
                first,
                severity=Severity.WARNING,
                hint=_misspelt(undeclared, unset) or _declared(specs),
            )
        )
    return out


def _misspelt(undeclared: list[str], unset: set[str]) -> str | None:
    """ "did you mean …" for undeclared keys close to a declared param the file left unset.

    A declared param the file (or a flag) gives already is not what a neighbouring
    key was meant to be: ``primary_host`` is no typo of ``primary_dsn`` in a file that
    sets both.
    """
    guesses = []
    for key in undeclared:
        hint = did_you_mean(key, unset)
        if hint is not None:
            guesses.append(f"{key}: {hint}")
    return "; ".join(guesses) or None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _undecodable(flag: str) -> int | None:
    """The byte offset of the first byte the OS could not decode in ``flag``, if any."""
    try:
        flag.encode("utf-8")
    except UnicodeEncodeError as exc:
        return len(flag[: exc.start].encode("utf-8", "surrogateescape"))
    return None


def _placeholder(name: str, spec: ParamSpec) -> Any:
    if spec.choices:
        return spec.choices[0]
    return {
        "str": f"<{name}>",
        "int": 0,
        "float": 0.0,
        "bool": False,
        "duration": 0.0,
        "list": [f"<{name}>"],
        "map": {},
    }[spec.type]


def _declared(specs: Mapping[str, ParamSpec]) -> str:
    return "declared: " + ", ".join(sorted(specs)) if specs else "this runbook declares no params"


def _choices_hint(spec: ParamSpec) -> str:
    return f" (one of: {', '.join(str(c) for c in spec.choices)})" if spec.choices else ""


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )
