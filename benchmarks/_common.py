"""Shared helpers for the benchmark scripts: timing statistics, machine facts, the doc.

Each script owns one section of docs/benchmarks.md, between its own marker comments,
and rewrites only that section, so the scripts can be rerun independently.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
DRCTL = ROOT / ".venv" / "bin" / "drctl"
DOC = ROOT / "docs" / "benchmarks.md"
#: The peer tools live in a venv of their own, never in the project's .venv.
PEERS_VENV = Path("/tmp/drctl-bench-peers")
ANSIBLE = PEERS_VENV / "bin" / "ansible-playbook"
CHAOS = PEERS_VENV / "bin" / "chaos"
PIP_TIMEOUT = 180  # seconds

DOC_HEADER = """# Benchmarks

Every number below is written by a script in `benchmarks/` run with `--write`; none is
typed in. Each script replaces only its own section (between its marker comments), so
a section's machine and date are those of its own last run.
"""


def cache_bytecode() -> str:
    """Compile drctl's sources to bytecode once, as installing a wheel does.

    Where PYTHONDONTWRITEBYTECODE is set (as on this project's machines) an editable
    install never caches bytecode, so every ``drctl`` process would recompile its own
    sources (60-80 ms) while the peers' packages, installed by pip, start from cached
    bytecode. Python still reads a cached file when it may not write one.
    """
    subprocess.run(
        [str(VENV_PY), "-m", "compileall", "-q", str(ROOT / "drctl")],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )
    return "drctl's sources compiled to bytecode first (`compileall`, as a wheel install does)"


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


@dataclass(frozen=True)
class Finished:
    """One child process run to its end: wall time, exit status, output, peak RSS."""

    elapsed: float
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float


def run_measured(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> Finished:
    """Run ``argv`` and reap it with ``wait4``, whose rusage is that one child's peak RSS.

    Output goes to files, not pipes, so nothing needs reading while the child runs.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        # ru_maxrss is in KiB on Linux.
        return Finished(elapsed, proc.returncode, out.read(), err.read(), usage.ru_maxrss / 1024)


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


def ensure_peers() -> tuple[str, str]:
    """ansible-core and chaostoolkit in the peers venv; returns (ansible note, chaos note)."""
    wanted = [
        pkg for pkg, exe in (("ansible-core", ANSIBLE), ("chaostoolkit", CHAOS)) if not exe.exists()
    ]
    problem = ""
    if wanted:
        print(f"installing {', '.join(wanted)} into {PEERS_VENV} (up to {PIP_TIMEOUT}s)...")
        try:
            if not (PEERS_VENV / "bin" / "pip").exists():
                python = shutil.which("python3") or sys.executable
                subprocess.run(
                    [python, "-m", "venv", str(PEERS_VENV)],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
            subprocess.run(
                [str(PEERS_VENV / "bin" / "pip"), "install", "-q", *wanted],
                check=True,
                capture_output=True,
                timeout=PIP_TIMEOUT,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            problem = f"skipped: could not install ({type(exc).__name__})"

    def version(dist: str, exe: Path) -> str:
        if not exe.exists():
            return problem or f"skipped: {exe.name} missing"
        out = subprocess.run(
            [
                str(PEERS_VENV / "bin" / "python"),
                "-c",
                f"from importlib.metadata import version; print(version({dist!r}))",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return f"{dist} {out or '?'}"

    return version("ansible-core", ANSIBLE), version("chaostoolkit", CHAOS)
