"""OpenMetrics text exposition (what node_exporter's textfile collector and Prometheus read).

One small writer for every drctl figure exported this way: a family has a name, a type,
help, an optional unit, and samples with labels. Names with a unit end in it, as the
format requires; label values are escaped; the text ends with ``# EOF``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class MetricType(StrEnum):
    gauge = "gauge"
    info = "info"


@dataclass(frozen=True)
class Sample:
    """One value of a family, with its labels in the order given."""

    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Family:
    """A metric family: what one ``# TYPE`` line announces."""

    name: str
    type: MetricType
    help: str
    unit: str = ""
    samples: Sequence[Sample] = field(default_factory=tuple)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _sample_line(name: str, sample: Sample) -> str:
    if not sample.labels:
        return f"{name} {_number(sample.value)}"
    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
    return f"{name}{{{labels}}} {_number(sample.value)}"


def exposition(families: Iterable[Family]) -> str:
    """The OpenMetrics text of ``families`` (a family with no sample is left out)."""
    out: list[str] = []
    for family in families:
        if not family.samples:
            continue
        if family.unit and not family.name.endswith("_" + family.unit):
            raise ValueError(f"metric {family.name} must end in its unit {family.unit}")
        out.append(f"# TYPE {family.name} {family.type}")
        if family.unit:
            out.append(f"# UNIT {family.name} {family.unit}")
        out.append(f"# HELP {family.name} {_escape(family.help)}")
        # An info family's samples carry the _info suffix on the wire.
        wire = family.name + ("_info" if family.type is MetricType.info else "")
        out += [_sample_line(wire, s) for s in family.samples]
    out.append("# EOF")
    return "\n".join(out) + "\n"
