"""Shared helpers for the benchmark scripts: timing statistics, machine facts, the doc.

Each script owns one section of docs/benchmarks.md, between its own marker comments,
and rewrites only that section, so the scripts can be rerun independently.
"""

from __future__ import annotations

import fcntl
import os
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
DRCTL = ROOT / ".venv" / "bin" / "drctl"
DOC = ROOT / "docs" / "benchmarks.md"

DOC_HEADER = """# Benchmarks

Every number below is written by a script in `benchmarks/` run with `--write`; none is
typed in. Each script replaces only its own section (between its marker comments), so
a section's machine and date are those of its own last run.
"""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def p90(samples: list[float]) -> float:
    """The 90th percentile (linear interpolation between closest ranks)."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[8]


def machine() -> dict[str, str]:
    """The facts a reader needs to compare these numbers with their own."""
    try:
        cpus = len(os.sched_getaffinity(0))  # what `nproc` prints
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 0
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    python = sys.version.split()[0]
    if VENV_PY.exists():
        python = subprocess.run(
            [str(VENV_PY), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return {
        "nproc": str(cpus),
        "cpu": model or "unknown",
        "uname -m": platform.machine(),
        "python": python,
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?",
    }


def machine_line(facts: dict[str, str]) -> str:
    return (
        f"Machine: {facts['nproc']} CPUs (`nproc`), {facts['cpu']}, `uname -m` {facts['uname -m']}, "
        f"Python {facts['python']}, {facts['os']}. Date: {facts['date']}; 1-minute load "
        f"average when the results were written: {facts['load']}."
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str) -> Path:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->``.

    Several benchmark scripts share the doc and may run at once, so the read-modify-write
    happens under an exclusive lock on the file itself.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    with DOC.open("a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read() or DOC_HEADER
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            text = head + block + tail
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        f.seek(0)
        f.truncate()
        f.write(text)
    return DOC


def clean_env() -> dict[str, str]:
    """This environment without drctl's test hooks or a state override."""
    env = dict(os.environ)
    for key in ("DRCTL_FAULT", "DRCTL_STATE"):
        env.pop(key, None)
    return env


_FANOUT = """\
apiVersion: drctl/v1
kind: Runbook
metadata:
  name: {name}
  description: {n} no-op steps fanned out from one for_each over a list param
params:
  ids:
    type: list
    default: {ids}
steps:
  - id: noop
    type: wait
    for_each: "{{{{ params.ids }}}}"
    as: id
    with: {{duration: 0s}}
"""


def fanout_runbook(name: str, ids: list[str]) -> str:
    """A runbook fanning one no-op ``wait`` step out over ``ids``."""
    import json

    return _FANOUT.format(name=name, n=len(ids), ids=json.dumps(ids))
