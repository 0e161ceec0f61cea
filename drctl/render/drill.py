"""Drill reports as markdown (a step table), HTML (a Gantt-style step timeline), JSON or
OpenMetrics figures (JUnit XML is in render/junit.py)."""

from __future__ import annotations

import html
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from drctl.drill.report import DrillReport, HistoryEntry
from drctl.engine.status import StepStatus
from drctl.render.openmetrics import Family, MetricType, Sample, exposition
from drctl.visible import visible


def _t(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if ts else "-"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _met(value: bool | None) -> str:
    return "no objective" if value is None else ("met" if value else "MISSED")


def _figures(r: DrillReport) -> list[tuple[str, str, str, str]]:
    m: dict[str, Any] = r.drill.measurement
    v: dict[str, Any] = r.drill.verdict
    rpo = f"{m['missing']} of {m['acknowledged']} acknowledged writes missing"
    if m["missing"]:
        rpo += f" (span {_s(m['missing_span'])}, first seq {m['missing_first_seq']})"
    if m.get("discarded_commits"):
        rpo += (
            f"; the RPO includes {m['discarded_bytes']} discarded bytes of WAL "
            f"({m['discarded_commits']} committed write transactions rewound away)"
        )
    if r.drill.read_back_error:
        rpo = f"unknown: {r.drill.read_back_error}"
    load = [("load", load_line(r.drill.load), "", "")] if r.drill.load else []
    return [
        ("RPO", rpo, _obj(v["rpo_objective"]), _met(v["rpo_met"])),
        ("RTO", _s(m["rto"]), _obj(v["rto_objective"]), _met(v["rto_met"])),
        ("longest window with no successful write", _s(m["longest_gap"]), "", ""),
        (
            "first mutation → first write on the new primary",
            _s(m["time_to_new_primary"])
            + (f" ({m['new_primary_address']})" if m["new_primary_address"] else ""),
            "",
            "",
        ),
        ("canary write errors", str(m["canary_errors"]), "", ""),
        *(("WAL the promote gave up", g.describe(), "", "") for g in r.promote_gaps),
        *load,
        *_regression(r),
    ]


def load_line(load: dict[str, Any]) -> str:
    """The pgbench load's figures in one line (drill report and summary)."""
    return (
        f"pgbench {load.get('clients')} clients for {_s(load.get('seconds'))}: "
        f"{load.get('transactions')} transactions ({load.get('tps')} tps), "
        f"{load.get('failed')} failed, {load.get('aborted')} clients cut off by the failover "
        f"({load.get('runs')} runs, {load.get('failed_starts')} starts refused)"
    )


def _regression(r: DrillReport) -> list[tuple[str, str, str, str]]:
    """The RTO against recent drills, when ``--max-rto-regression`` asked for it."""
    m, v = r.drill.measurement, r.drill.verdict
    allowed = v.get("rto_regression_allowed")
    if allowed is None:
        return []
    baseline = v.get("rto_baseline")
    label = "RTO against recent drills"
    limit = f"≤ +{float(allowed):.0%} of their median"
    if baseline is None:
        why = "the run has not concluded" if r.drill.paused else "no earlier completed drill"
        return [(label, why, limit, "not judged")]
    change = (float(m["rto"]) / baseline - 1) if baseline else float("inf")
    value = (
        f"{_s(m['rto'])} vs median {_s(baseline)} of {v.get('rto_baseline_drills')} drills "
        f"({change:+.0%})"
    )
    return [(label, value, limit, _met(v.get("rto_regression_met")))]


def _obj(value: float | None) -> str:
    return "-" if value is None else f"{value:g}s"


def _verdict(r: DrillReport, state_flag: str = "") -> str:
    """The report's headline; the CLI's summary line starts with the same words."""
    if r.drill.canary_failed:
        return f"FAILED: the canary writer stopped by surprise ({r.drill.canary_failed}): nothing after it was measured"
    if r.drill.paused:
        return (
            f"PAUSED: the run stopped {r.run_status} (exit {r.drill.run_exit_code}), measured "
            f"up to the pause; continue the drill with: drctl drill --resume {r.run_id}{state_flag}"
        )
    if r.drill.run_exit_code:
        return f"FAILED: the run ended {r.run_status} (exit {r.drill.run_exit_code}): {r.drill.run_message}"
    return "PASSED: objectives met" if r.passed else "FAILED: objectives missed"


def summary(r: DrillReport, state_flag: str = "") -> str:
    """One line for the terminal: the report's headline and its own figures."""
    m: dict[str, Any] = r.drill.measurement
    rpo = (
        f"RPO unknown ({r.drill.read_back_error})"
        if r.drill.read_back_error
        else f"RPO {m['missing']} of {m['acknowledged']} acknowledged writes missing"
    )
    return (
        f"drill {r.run_id}: {_verdict(r, state_flag)}: {rpo}; RTO {_s(m['rto'])} "
        f"(longest window with no successful write {_s(m['longest_gap'])})"
    )


def _windows(r: DrillReport, prefix: str) -> list[str]:
    """A line on a resumed drill's canary windows (none for a drill run in one go)."""
    windows = r.drill.windows
    if len(windows) < 2:
        return []
    return [
        f"{prefix}Resumed: the canary wrote in {len(windows)} windows; a pause after a "
        "mutating step had started counts as time with no successful write, and the time "
        "to the new primary spans the pauses"
    ]


def _history_rows(history: Sequence[HistoryEntry]) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            h.run_id,
            _t(h.started_at),
            "pass" if h.passed else "fail",
            f"{h.rto:.2f}s",
            str(h.missing),
        )
        for h in history
    ]


def as_markdown(r: DrillReport) -> str:
    out = [
        f"# Drill: {r.name}",
        "",
        f"**{_verdict(r)}**",
        "",
        f"- Run: `{r.run_id}` ({r.run_status}), started {_t(r.started_at)}, finished {_t(r.finished_at)}",
        f"- Runbook: `{r.runbook}`",
        f"- Canary: {r.drill.canary.kind} `{r.drill.canary.dsn}`"
        + (f" via DNS {r.drill.canary.dns_server}" if r.drill.canary.dns_server else "")
        + f", read back from `{r.drill.canary.verify_dsn}`",
        *_windows(r, "- "),
        "",
        "## Figures",
        "",
        "| measure | value | objective | result |",
        "| --- | --- | --- | --- |",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _figures(r)]
    out += ["", "## Steps", "", "| step | status | start | end | duration | mutates |"]
    out.append("| --- | --- | --- | --- | --- | --- |")
    for s in r.steps:
        duration = None if s.start is None or s.end is None else s.end - s.start
        out.append(
            f"| {s.id} | {s.status} | {_s(s.start)} | {_s(s.end)} | {_s(duration)} | {'yes' if s.mutates else ''} |"
        )
    out += ["", "## History", "", "| run | started | result | RTO | missing writes |"]
    out.append("| --- | --- | --- | --- | --- |")
    out += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in _history_rows(r.history)]
    return visible("\n".join(out) + "\n")


def as_json(r: DrillReport) -> str:
    return json.dumps(r.to_json(), indent=2, sort_keys=True, default=str) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
.pass{color:#176117}.fail{color:#a11}
.gantt{position:relative;border-left:1px solid #999;margin:1em 0}
.row{display:flex;align-items:center;height:1.6em}
.label{width:14em;font-family:monospace;font-size:.9em}
.track{position:relative;flex:1;height:1.1em;background:#f4f4f4}
.bar{position:absolute;height:100%;background:#4a7fc1}
.bar.mutates{background:#d08a2c}.bar.failed{background:#c33}
.gap{position:absolute;height:100%;background:rgba(200,0,0,.25)}
"""


def as_html(r: DrillReport) -> str:
    e = html.escape
    ok = "pass" if r.passed and not r.drill.run_exit_code else "fail"
    m = r.drill.measurement
    ends = [s.end for s in r.steps if s.end is not None] + [
        (r.finished_at or r.started_at) - r.started_at,
        (r.drill.canary.stopped_at or r.started_at) - r.started_at,
    ]
    total = max([*ends, 0.001])
    out = [
        "<!doctype html>",
        f"<html><head><meta charset='utf-8'><title>Drill: {e(r.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Drill: {e(r.name)}</h1>",
        f"<p class='{ok}'><strong>{e(_verdict(r))}</strong></p>",
        f"<p>Run <code>{e(r.run_id)}</code> ({e(r.run_status)}), started {_t(r.started_at)}, "
        f"finished {_t(r.finished_at)}; runbook <code>{e(r.runbook)}</code>; canary "
        f"<code>{e(r.drill.canary.dsn)}</code></p>",
        *(f"<p>{e(line)}</p>" for line in _windows(r, "")),
        "<h2>Figures</h2><table><tr><th>measure</th><th>value</th><th>objective</th><th>result</th></tr>",
    ]
    for a, b, c, d in _figures(r):
        cls = "fail" if d == "MISSED" else ("pass" if d == "met" else "")
        out.append(
            f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{e(c)}</td><td class='{cls}'>{e(d)}</td></tr>"
        )
    out.append("</table><h2>Step timeline</h2><div class='gantt'>")
    if m.get("gap_from") is not None and m.get("gap_to") is not None:
        left = 100 * max(0.0, m["gap_from"] - r.started_at) / total
        width = 100 * max(0.0, m["gap_to"] - m["gap_from"]) / total
        out.append(
            f"<div class='row'><span class='label'>no writes (longest)</span><div class='track'>"
            f"<div class='gap' style='left:{left:.2f}%;width:{max(width, 0.3):.2f}%' "
            f"title='{m['longest_gap']:.2f}s'></div></div></div>"
        )
    for s in r.steps:
        bar = ""
        if s.start is not None:
            end = s.end if s.end is not None else total
            left = 100 * max(0.0, s.start) / total
            width = max(0.3, 100 * max(0.0, end - s.start) / total)
            classes = (
                "bar"
                + (" mutates" if s.mutates else "")
                + (" failed" if s.status is StepStatus.FAILED else "")
            )
            bar = (
                f"<div class='{classes}' style='left:{left:.2f}%;width:{width:.2f}%' "
                f"title='{e(s.id)}: {e(s.status)} {_s(s.start)} → {_s(s.end)}'></div>"
            )
        out.append(
            f"<div class='row'><span class='label'>{e(s.id)}</span><div class='track'>{bar}</div></div>"
        )
    out.append(f"</div><p>0s … {total:.2f}s after the run started</p>")
    out.append(
        "<h2>History</h2><table><tr><th>run</th><th>started</th><th>result</th><th>RTO</th><th>missing writes</th></tr>"
    )
    for row in _history_rows(r.history):
        out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    out.append("</table></body></html>")
    return visible("\n".join(out) + "\n")


def drills_table(rows: Sequence[tuple[Any, HistoryEntry]]) -> str:
    if not rows:
        return "no drills\n"
    lines = [f"{'RUN':<23} {'RESULT':<7} {'RTO':>8} {'MISSING':>8} {'STARTED':<21} RUNBOOK"]
    for run, h in rows:
        lines.append(
            f"{h.run_id:<23} {'pass' if h.passed else 'fail':<7} {h.rto:>7.2f}s {h.missing:>8} {_t(h.started_at):<21} {run.name}"
        )
    return visible("\n".join(lines) + "\n")


def drills_json(rows: Sequence[tuple[Any, HistoryEntry]], window: int = 10) -> str:
    """The drills as JSON, each with its trend: the median RTO of the earlier completed
    drills of its runbook listed (up to ``window``), and the change against it."""
    data = []
    for i, (run, h) in enumerate(rows):
        earlier = [
            e.rto for r2, e in rows[i + 1 :] if r2.name == run.name and e.run_status == "succeeded"
        ][:window]
        baseline = statistics.median(earlier) if earlier else None
        data.append(
            {"id": h.run_id, "name": run.name, "status": h.run_status, "passed": h.passed,
             "rto": h.rto, "missing": h.missing, "started_at": h.started_at,
             "rto_baseline": baseline, "rto_baseline_drills": len(earlier),
             "rto_change": (h.rto / baseline - 1) if baseline else None}
        )  # fmt: skip
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def as_openmetrics(r: DrillReport) -> str:
    """The drill's figures as OpenMetrics text (for a textfile collector or a push)."""
    m: dict[str, Any] = r.drill.measurement
    v: dict[str, Any] = r.drill.verdict
    base = (("runbook", r.name),)

    def gauge(name: str, help: str, value: float | None, unit: str = "") -> Family:
        samples = () if value is None else (Sample(float(value), base),)
        return Family(name, MetricType.gauge, help, unit, samples)

    last_pass = max((h.started_at for h in r.history if h.passed), default=None)
    steps = [
        Sample(s.end - s.start, (*base, ("step", s.id)))
        for s in r.steps
        if s.start is not None and s.end is not None
    ]
    families = [
        Family(
            "drctl_drill_run",
            MetricType.info,
            "The drill's run.",
            samples=(Sample(1, (*base, ("run_id", r.run_id), ("status", r.run_status))),),
        ),
        gauge("drctl_drill_passed", "1 when the drill met its objectives and its run succeeded.",
              1 if r.passed and not r.drill.run_exit_code else 0),
        gauge("drctl_drill_rto_seconds", "Longest time the application could not write.",
              m.get("rto"), "seconds"),
        gauge("drctl_drill_rto_objective_seconds", "The runbook's RTO objective.",
              v.get("rto_objective"), "seconds"),
        gauge("drctl_drill_rpo_objective_seconds", "The runbook's RPO objective.",
              v.get("rpo_objective"), "seconds"),
        gauge("drctl_drill_missing_writes", "Acknowledged writes missing on the new primary.",
              m.get("missing")),
        gauge("drctl_drill_acknowledged_writes", "Writes the canary had acknowledged.",
              m.get("acknowledged")),
        gauge("drctl_drill_time_to_new_primary_seconds",
              "From the first mutating step to the first write on the new primary.",
              m.get("time_to_new_primary"), "seconds"),
        gauge("drctl_drill_rto_baseline_seconds", "Median RTO of the recent drills judged against.",
              v.get("rto_baseline"), "seconds"),
        gauge("drctl_drill_started_timestamp_seconds", "When the drill's run started.",
              r.started_at, "seconds"),
        gauge("drctl_drill_last_success_timestamp_seconds",
              "When the runbook's most recent passing drill started.", last_pass, "seconds"),
        Family("drctl_drill_step_duration_seconds", MetricType.gauge,
               "How long each step of the drill's run took.", "seconds", steps),
    ]  # fmt: skip
    return exposition(families)
