"""A drill report as JUnit XML, so CI systems (GitHub, GitLab, Jenkins) show drills as tests.

One ``testsuite`` per drill: a test case per objective (RPO, RTO and, when asked for, the
RTO against recent drills) and one per plan step. An objective missed is a ``failure``;
one that could not be judged (the canary stopped by surprise, the read-back failed) is an
``error``; one the runbook does not set is ``skipped``. A step that failed is a
``failure``; one skipped, or never reached, is ``skipped``.
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from drctl.drill.report import DrillReport, StepSpan
from drctl.engine.status import StepStatus
from drctl.visible import visible


@dataclass(frozen=True)
class Case:
    """One test case: how it ended (``passed``, ``failure``, ``error``, ``skipped``) and why."""

    classname: str
    name: str
    seconds: float
    result: str
    message: str = ""
    detail: str = ""


def _objective_cases(r: DrillReport) -> list[Case]:
    m: dict[str, Any] = r.drill.measurement
    v: dict[str, Any] = r.drill.verdict
    cls = f"drill.{r.name}.objectives"
    broken = r.drill.canary_failed or r.drill.read_back_error
    rpo_text = f"{m.get('missing', 0)} of {m.get('acknowledged', 0)} acknowledged writes missing"
    rto_text = f"RTO {float(m.get('rto') or 0.0):.2f}s"
    cases = [
        _objective(cls, "RPO", v.get("rpo_objective"), v.get("rpo_met"), rpo_text, broken),
        _objective(cls, "RTO", v.get("rto_objective"), v.get("rto_met"), rto_text, broken),
    ]
    allowed = v.get("rto_regression_allowed")
    if allowed is not None:
        baseline = v.get("rto_baseline")
        if baseline is None:
            cases.append(
                Case(
                    cls,
                    "RTO regression",
                    0.0,
                    "skipped",
                    "no earlier drill of this runbook completed",
                )
            )
        else:
            text = (
                f"{rto_text} against the median {float(baseline):.2f}s of the last "
                f"{v.get('rto_baseline_drills')} drills (allowed +{float(allowed):.0%})"
            )
            met = v.get("rto_regression_met")
            cases.append(Case(cls, "RTO regression", 0.0, "passed" if met else "failure", text))
    return cases


def _objective(
    cls: str, name: str, objective: Any, met: Any, text: str, broken: str | None
) -> Case:
    if objective is None:
        return Case(cls, name, 0.0, "skipped", f"no {name} objective set; measured {text}")
    if broken:
        return Case(cls, name, 0.0, "error", f"could not be judged: {broken}")
    wanted = f"objective {float(objective):g}s"
    return Case(cls, name, 0.0, "passed" if met else "failure", f"{text} ({wanted})")


def _step_case(r: DrillReport, s: StepSpan) -> Case:
    cls = f"drill.{r.name}.steps"
    seconds = 0.0 if s.start is None or s.end is None else max(0.0, s.end - s.start)
    if s.status is StepStatus.FAILED:
        return Case(cls, s.id, seconds, "failure", f"step {s.id} failed", r.drill.run_message)
    if s.status is StepStatus.SKIPPED:
        return Case(cls, s.id, seconds, "skipped", f"step {s.id} was skipped")
    if s.status in (StepStatus.PENDING, StepStatus.WAITING, StepStatus.RUNNING):
        return Case(cls, s.id, seconds, "skipped", f"step {s.id} did not finish ({s.status})")
    return Case(cls, s.id, seconds, "passed")


def cases(r: DrillReport) -> list[Case]:
    """Every test case of drill ``r``: objectives first, then steps in plan order."""
    return _objective_cases(r) + [_step_case(r, s) for s in r.steps]


def as_junit(r: DrillReport) -> str:
    """Drill ``r`` as one JUnit XML ``testsuites`` document."""
    found = cases(r)
    counts = {k: sum(1 for c in found if c.result == k) for k in ("failure", "error", "skipped")}
    total = (r.finished_at or r.started_at) - r.started_at
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(r.started_at))
    attrs = {
        "name": f"drill: {r.name}",
        "tests": str(len(found)),
        "failures": str(counts["failure"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["skipped"]),
        "time": f"{max(0.0, total):.3f}",
    }
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(
        root,
        "testsuite",
        {**attrs, "id": "0", "timestamp": stamp, "hostname": socket.gethostname()},
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", r.run_id),
        ("runbook", r.runbook),
        ("run_status", r.run_status),
        ("canary", f"{r.drill.canary.kind} {r.drill.canary.dsn}"),
    ):
        ET.SubElement(props, "property", {"name": name, "value": visible(value)})
    for c in found:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": c.classname, "name": c.name, "time": f"{c.seconds:.3f}"},
        )
        if c.result in ("failure", "error"):
            el = ET.SubElement(case, c.result, {"message": visible(c.message), "type": c.result})
            el.text = visible(c.detail or c.message)
        elif c.result == "skipped":
            ET.SubElement(case, "skipped", {"message": visible(c.message)})
        elif c.message:
            ET.SubElement(case, "system-out").text = visible(c.message)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
