"""A readiness check (``drctl check``) as text, JSON or OpenMetrics."""

from __future__ import annotations

import json
import time

from drctl.engine.readiness import Readiness
from drctl.render.openmetrics import Family, MetricType, Sample, exposition
from drctl.visible import visible

_MARK = {"ok": "✓", "failed": "✗", "deferred": "…", "skipped": "–"}


def _t(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def as_text(r: Readiness) -> str:
    out = [f"check {r.name} (dry run {r.run_id}): {'READY' if r.ready else 'NOT READY'}"]
    width = max((len(x.step) for x in r.readings), default=4)
    for x in r.readings:
        out.append(
            f"  {_MARK.get(x.status, ' ')} {x.step:<{width}}  {x.seconds:6.2f}s  {x.status}: {x.detail}"
        )
    if r.previous is None:
        out.append("First check of this runbook in this store: nothing to compare with.")
    elif r.drift:
        out.append(f"Changed since check {r.previous}:")
        out += [f"  - {d}" for d in r.drift]
    else:
        out.append(f"Nothing changed since check {r.previous}.")
    if r.last_drill_success is None:
        out.append("No passing drill of this runbook in this store.")
    else:
        hours = (r.at - r.last_drill_success) / 3600
        out.append(f"Last passing drill: {_t(r.last_drill_success)} ({hours:.1f} h ago).")
    return visible("\n".join(out) + "\n")


def as_json(r: Readiness) -> str:
    data = {
        "run_id": r.run_id, "name": r.name, "at": r.at, "ready": r.ready,
        "readings": [x.to_json() for x in r.readings], "previous": r.previous,
        "drift": list(r.drift), "last_drill_success": r.last_drill_success,
    }  # fmt: skip
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def as_openmetrics(r: Readiness) -> str:
    """For node_exporter's textfile collector: readiness, each check's state, duration
    and figures, drift, and the time since the runbook's last passing drill."""
    base = (("runbook", r.name),)

    def each(x_step: str, x_type: str) -> tuple[tuple[str, str], ...]:
        return (*base, ("step", x_step), ("type", x_type))

    values = [
        Sample(float(v), (*each(x.step, x.type), ("key", k)))
        for x in r.readings
        for k, v in sorted(x.values.items())
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    since = None if r.last_drill_success is None else r.at - r.last_drill_success
    families = [
        Family("drctl_check_ready", MetricType.gauge, "1 when every check of the runbook holds.",
               samples=(Sample(1 if r.ready else 0, base),)),
        Family("drctl_check_step_ok", MetricType.gauge,
               "1 when the step's check holds (or is deferred until earlier steps take effect).",
               samples=tuple(Sample(0 if x.status == "failed" else 1, each(x.step, x.type)) for x in r.readings)),
        Family("drctl_check_step_duration_seconds", MetricType.gauge, "How long each check took.",
               "seconds", tuple(Sample(x.seconds, each(x.step, x.type)) for x in r.readings)),
        Family("drctl_check_value", MetricType.gauge, "Each check's published figures, by output key.",
               samples=values),
        Family("drctl_check_drift", MetricType.gauge, "How many things changed since the last check.",
               samples=(Sample(len(r.drift), base),)),
        Family("drctl_check_timestamp_seconds", MetricType.gauge, "When the check ran.", "seconds",
               (Sample(r.at, base),)),
        Family("drctl_drill_last_success_timestamp_seconds", MetricType.gauge,
               "When the runbook's most recent passing drill started.", "seconds",
               () if r.last_drill_success is None else (Sample(r.last_drill_success, base),)),
        Family("drctl_check_since_last_drill_success_seconds", MetricType.gauge,
               "Seconds from the runbook's most recent passing drill to this check.", "seconds",
               () if since is None else (Sample(since, base),)),
    ]  # fmt: skip
    return exposition(families)
