"""Standing readiness: the dry run as a check meant for cron, compared with the last one.

``drctl check`` dry-runs a runbook (read-only steps for real, mutating steps' checks),
reads what each step said from the journal, and appends a ``check_recorded`` event with
those readings to the dry run. The next check of the same runbook in the same store
finds it and reports the drift: a step whose state changed, a figure that grew or fell
("lag_bytes grew from 0 B to 40.0 MB"), a value that changed, a list whose order changed
(the candidate ranking).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drctl.compiler.plan import Plan
from drctl.engine import events as ev
from drctl.state.base import Event, RunRecord, StateStore

#: Output keys that change on every reading and say nothing about readiness.
_NOISE = ("_at", "duration", "elapsed", "took", "now", "timestamp")


@dataclass(frozen=True)
class Readiness:
    """One check: the readings, whether every one holds, and what changed since the last."""

    run_id: str
    name: str
    at: float
    readings: tuple[ev.CheckReading, ...]
    #: The check compared with (None: the first check of this runbook in the store).
    previous: str | None
    drift: tuple[str, ...]
    #: When the runbook's most recent passing drill started (None: none in the store).
    last_drill_success: float | None

    @property
    def ready(self) -> bool:
        return all(r.status != "failed" for r in self.readings)


def readings(plan: Plan, events: Sequence[Event]) -> tuple[ev.CheckReading, ...]:
    """What each plan step said in a dry run's journal, with how long it took."""
    types = {s.id: s.type for s in plan.steps}
    out: dict[str, ev.CheckReading] = {}
    last = events[0].ts if events else 0.0
    for event in events:
        fact = ev.decode(event)
        if isinstance(fact, ev.StepChecked) and fact.step in types:
            deferred = getattr(fact, "deferred", None)
            status = "deferred" if deferred else ("ok" if fact.ok else "failed")
            detail = str(deferred or (fact.would if fact.ok else fact.error) or "")
            values = _values(getattr(fact, "outputs", None) or {})
            out[fact.step] = ev.CheckReading(
                fact.step, types[fact.step], status, max(0.0, event.ts - last), detail, values
            )
        elif isinstance(fact, ev.StepSkipped) and fact.step in types:
            out[fact.step] = ev.CheckReading(
                fact.step, types[fact.step], "skipped", 0.0, fact.reason, {}
            )
        last = event.ts
    return tuple(out[s.id] for s in plan.steps if s.id in out)


def _values(outputs: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars and short lists of a step's outputs, flattened by dotted key."""
    flat: dict[str, Any] = {}
    for key, value in outputs.items():
        name = f"{prefix}{key}"
        if _noise(name):
            continue
        if isinstance(value, Mapping):
            flat.update(_values(value, name + "."))
        elif isinstance(value, bool | int | float | str) or value is None:
            flat[name] = value
        elif isinstance(value, list | tuple) and len(value) <= 50:
            flat[name] = [v if isinstance(v, bool | int | float | str) else str(v) for v in value]
    return flat


def previous_check(
    store: StateStore, name: str, before: str
) -> tuple[RunRecord, ev.CheckRecorded] | None:
    """The runbook's last check before run ``before`` in ``store``, with its readings."""
    for run in store.list_runs(limit=200, name=name):
        if run.id == before or not run.dry_run:
            continue
        for event in reversed(store.events(run.id)):
            if event.kind == ev.CHECK_RECORDED:
                return run, ev.CheckRecorded.read(event)
    return None


def drift(before: Sequence[ev.CheckReading], now: Sequence[ev.CheckReading]) -> tuple[str, ...]:
    """What changed between two checks, in words, step by step."""
    was = {r.step: r for r in before}
    out: list[str] = []
    for reading in now:
        old = was.get(reading.step)
        if old is None:
            out.append(f"{reading.step}: new step ({reading.status})")
            continue
        if old.status != reading.status:
            out.append(f"{reading.step}: was {old.status}, now {reading.status}: {reading.detail}")
        for key, value in reading.values.items():
            if key not in old.values or _noise(key):
                continue
            change = _change(key, old.values[key], value)
            if change:
                out.append(f"{reading.step}: {change}")
    out += [
        f"{step}: no longer in the runbook" for step in was if step not in {r.step for r in now}
    ]
    return tuple(out)


def _noise(key: str) -> bool:
    return any(key.endswith(n) for n in _NOISE)


def _change(key: str, old: Any, new: Any) -> str | None:
    if old == new:
        return None
    numbers = (int, float)
    if (
        isinstance(old, numbers)
        and isinstance(new, numbers)
        and not isinstance(old, bool)
        and not isinstance(new, bool)
    ):
        how = "grew" if new > old else "fell"
        return f"{key} {how} from {_show(key, old)} to {_show(key, new)}"
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and sorted(map(str, old)) == sorted(map(str, new))
    ):
        return f"{key} order changed from {old} to {new}"
    return f"{key} changed from {old!r} to {new!r}"


def _show(key: str, value: float) -> str:
    if key.endswith("bytes"):
        for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.1f} {unit}"
        return f"{value:g} B"
    return f"{value:g}"


def record(
    store: StateStore, run: RunRecord, plan: Plan, last_drill_success: float | None
) -> Readiness:
    """Read the dry run ``run``, compare it with the last check, and journal the readings."""
    events = store.events(run.id)
    now = readings(plan, events)
    found = previous_check(store, plan.name, run.id)
    changed = drift(found[1].readings, now) if found is not None else ()
    result = Readiness(
        run_id=run.id, name=plan.name, at=time.time(), readings=now,
        previous=found[0].id if found is not None else None, drift=changed,
        last_drill_success=last_drill_success,
    )  # fmt: skip
    fact = ev.CheckRecorded(ready=result.ready, readings=now, drift=changed)
    store.append(run.id, Event(fact.kind, result.at, None, None, fact.to_json()), None)
    return result
