"""Engine overhead: what one no-op step costs in drctl, ansible-core and Chaos Toolkit.

For N = 10, 100 and 500 this times whole commands (fresh process each):

* drctl: a runbook of N sequential ``wait`` steps with ``duration: 0s``, each one
  journaled (``step_started`` before, ``step_succeeded`` after, every event a
  fsynced SQLite commit) — ``drctl run FILE --state TMP/state.db``, fresh state file
  per run;
* ansible-core: a playbook of N ``debug`` tasks, ``connection: local``,
  ``gather_facts: false``, inventory ``localhost,``;
* Chaos Toolkit: an experiment whose method is N python probes
  (``os.path.exists("/")``), ``chaos --no-version-check run``, journal to a temp dir.

Each (tool, N) is run 3 times, rounds interleaved in a shuffled order; the median
counts. Per-step cost is the slope of a least-squares line through (N, median) and,
as a check, (t(500) - t(10)) / 490. A diagnostic row runs drctl with its state on
tmpfs (/dev/shm), where fsync costs nothing, to split engine CPU from disk sync.

    .venv/bin/python benchmarks/engine_overhead.py            # print results
    .venv/bin/python benchmarks/engine_overhead.py --write    # and rewrite its docs section

The peers live in their own venv, /tmp/drctl-bench-peers (created, and ansible-core
and chaostoolkit pip-installed into it, if missing); never in the project's .venv.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import DRCTL, ROOT, VENV_PY, machine, machine_line, median, ms, table, write_section

PEERS_VENV = Path("/tmp/drctl-bench-peers")
ANSIBLE = PEERS_VENV / "bin" / "ansible-playbook"
CHAOS = PEERS_VENV / "bin" / "chaos"
SIZES = (10, 100, 500)
REPEATS = 3
GOAL_RATIO = 20.0
PIP_TIMEOUT = 180  # seconds
RUN_TIMEOUT = 180  # seconds per command; N=500 ansible takes ~12 s here
TOP = 12

# Runs drctl's CLI in-process with one cProfile per thread (the scheduler, the worker
# pool, the per-call threads, the lock heartbeat), merged into one stats file at exit.
# Usage: python -c PROFILE OUT.prof drctl-args...
PROFILE = """
import atexit, cProfile, pstats, sys, threading
out = sys.argv[1]
sys.argv = ["drctl", *sys.argv[2:]]
profiles = []
guard = threading.Lock()
_run = threading.Thread.run
def run(self):
    p = cProfile.Profile()
    with guard:
        profiles.append(p)
    p.enable()
    try:
        _run(self)
    finally:
        p.disable()
threading.Thread.run = run
main_profile = cProfile.Profile()
profiles.append(main_profile)
def dump():
    main_profile.disable()
    merged = None
    with guard:
        for p in profiles:
            p.disable()
            try:
                merged = pstats.Stats(p) if merged is None else merged.add(p)
            except TypeError:
                pass  # a thread that recorded nothing
    merged.dump_stats(out)
atexit.register(dump)
main_profile.enable()
from drctl.cli.app import main
main()
"""

# Built-ins where a thread sits idle (waiting for work, a result, a join): summed over
# threads they measure waiting, not cost, so the cost tables leave them out.
IDLE = ("acquire' of '_thread.lock", "acquire' of '_thread.RLock", "method 'wait'")


@dataclass
class Tool:
    key: str
    label: str
    samples: dict[int, list[float]] = field(default_factory=dict)
    note: str = ""
    skipped: str = ""

    def med(self, n: int) -> float:
        return median(self.samples[n])


# -- peers ---------------------------------------------------------------------


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


# -- inputs --------------------------------------------------------------------


def write_inputs(directory: Path, n: int) -> None:
    lines = ["apiVersion: drctl/v1", "kind: Runbook", "metadata:", f"  name: noop-{n}", "steps:"]
    lines += [f"  - {{id: s{i}, type: wait, with: {{duration: 0s}}}}" for i in range(1, n + 1)]
    (directory / f"runbook-{n}.yaml").write_text("\n".join(lines) + "\n")

    play = [
        "- hosts: localhost",
        "  connection: local",
        "  gather_facts: false",
        "  tasks:",
    ]
    for i in range(1, n + 1):
        play += [f"    - name: t{i}", "      debug:", "        msg: noop"]
    (directory / f"playbook-{n}.yml").write_text("\n".join(play) + "\n")

    experiment = {
        "version": "1.0.0",
        "title": f"{n} no-op probes",
        "description": "python probes calling os.path.exists('/')",
        "method": [
            {
                "type": "probe",
                "name": f"p{i}",
                "provider": {
                    "type": "python",
                    "module": "os.path",
                    "func": "exists",
                    "arguments": {"path": "/"},
                },
            }
            for i in range(1, n + 1)
        ],
        "rollbacks": [],
    }
    (directory / f"experiment-{n}.json").write_text(json.dumps(experiment))


def command(key: str, n: int, work: Path, shm: Path | None) -> tuple[list[str], Path]:
    """The argv for one run and the fresh scratch dir it writes into."""
    base = shm if key == "drctl_tmpfs" else work
    assert base is not None
    scratch = Path(tempfile.mkdtemp(prefix=f"{key}-{n}-", dir=base))
    if key.startswith("drctl"):
        argv = [
            str(DRCTL),
            "run",
            str(work / f"runbook-{n}.yaml"),
            "--state",
            str(scratch / "state.db"),
        ]
    elif key == "ansible":
        argv = [str(ANSIBLE), "-i", "localhost,", str(work / f"playbook-{n}.yml")]
    else:
        argv = [
            str(CHAOS), "--no-version-check", "--no-log-file", "--settings", str(scratch / "settings.yaml"),
            "run", str(work / f"experiment-{n}.json"), "--journal-path", str(scratch / "journal.json"),
        ]  # fmt: skip
    return argv, scratch


def check(key: str, n: int, scratch: Path, rc: int, stdout: str) -> str:
    """Empty if the run did its N steps; else what went wrong."""
    if rc != 0:
        return f"exit status {rc}"
    if key.startswith("drctl"):
        db = sqlite3.connect(scratch / "state.db")
        try:
            ok = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'step_succeeded'").fetchone()[
                0
            ]
            status = db.execute("SELECT status FROM runs").fetchone()[0]
        finally:
            db.close()
        return "" if ok == n and status == "succeeded" else f"{ok} steps succeeded, run {status}"
    if key == "ansible":
        return "" if f"ok={n} " in stdout else "recap does not say ok=N"
    journal = json.loads((scratch / "journal.json").read_text())
    done = len(journal.get("run", []))
    return (
        ""
        if journal.get("status") == "completed" and done == n
        else f"{done} probes, {journal.get('status')}"
    )


def measure(tools: list[Tool], work: Path, shm: Path | None, env: dict[str, str]) -> list[float]:
    """Fill each tool's samples; returns one durable-append cost sample per round."""
    live = [t for t in tools if not t.skipped]
    for t in live:
        t.samples = {n: [] for n in SIZES}
    # One warm-up per tool (page cache, .pyc files), not counted.
    for t in live:
        argv, scratch = command(t.key, SIZES[0], work, shm)
        proc = subprocess.run(
            argv,
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        problem = check(t.key, SIZES[0], scratch, proc.returncode, proc.stdout)
        if problem:
            t.skipped = f"skipped: warm-up failed ({problem}): {proc.stderr.strip()[-200:]}"
    live = [t for t in live if not t.skipped]
    jobs = [(t, n) for t in live for n in SIZES]
    appends = []
    for r in range(REPEATS):
        appends.append(append_cost(work))
        random.Random(r).shuffle(jobs)
        for t, n in jobs:
            argv, scratch = command(t.key, n, work, shm)
            start = time.perf_counter()
            proc = subprocess.run(
                argv,
                cwd=scratch,
                env=env,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
            elapsed = time.perf_counter() - start
            problem = check(t.key, n, scratch, proc.returncode, proc.stdout)
            if problem:
                sys.exit(f"{t.label} N={n} failed: {problem}\n{proc.stderr[-2000:]}")
            t.samples[n].append(elapsed)
            print(f"  round {r + 1}: {t.key:12} N={n:<4} {elapsed:7.3f} s")
            shutil.rmtree(scratch, ignore_errors=True)
    return appends


def slope(t: Tool, *, best: bool = False) -> float:
    """Seconds per step: least-squares slope through the medians (or the minimums)."""
    ys = [min(t.samples[n]) if best else t.med(n) for n in SIZES]
    return statistics.linear_regression(list(SIZES), ys).slope


def two_point(t: Tool) -> float:
    lo, hi = SIZES[0], SIZES[-1]
    return (t.med(hi) - t.med(lo)) / (hi - lo)


# -- diagnostics -----------------------------------------------------------------


def append_cost(directory: Path, count: int = 100) -> float:
    """Median seconds of one durable SqliteStore.append (what each journal event costs)."""
    code = """
import sys, time
from drctl.state.base import Event, RunRecord
from drctl.state.sqlite import SqliteStore
store = SqliteStore(sys.argv[1])
store.create_run(RunRecord(id="r", runbook="x", name="n", plan_hash="h", plan_json="{}",
    params_json="{}", user="u", host="h", pid=1, version="v", started_at=0.0, lock_key="k",
    dry_run=False, cwd="/"))
samples = []
for i in range(int(sys.argv[2])):
    t = time.perf_counter()
    store.append("r", Event("step_started", time.time(), f"s{i}", 1, {}), None)
    samples.append(time.perf_counter() - t)
samples.sort()
print(samples[len(samples) // 2])
"""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        out = subprocess.run(
            [str(VENV_PY), "-c", code, str(Path(tmp) / "s.db"), str(count)],
            capture_output=True,
            text=True,
            check=True,
            timeout=RUN_TIMEOUT,
        ).stdout
    return float(out)


def profile_drctl(args: list[str], cwd: Path, env: dict[str, str]) -> pstats.Stats:
    """cProfile every thread of one in-process ``drctl`` command; returns the merged stats."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "drctl.prof"
        subprocess.run(
            [str(VENV_PY), "-c", PROFILE, str(out), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        return pstats.Stats(str(out))


def where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    for prefix, short in ((str(ROOT) + "/", ""), (os.path.dirname(os.__file__) + "/", "stdlib/")):
        if filename.startswith(prefix):
            filename = short + filename[len(prefix) :]
            break
    else:
        filename = "/".join(filename.split("/")[-2:])
    return f"{filename}:{line}({name})"


def top_costs(stats: pstats.Stats, key: str, count: int = TOP) -> list[list[str]]:
    """Top functions by own time (idle waits left out) or, for ``key="cum"``, drctl's own
    functions by cumulative time (which includes what they wait for)."""
    entries = stats.stats  # type: ignore[attr-defined]
    rows = []
    for func, (_cc, nc, tt, ct, _callers) in entries.items():
        label = where(func)
        if any(i in label for i in IDLE) or (key == "cum" and not label.startswith("drctl/")):
            continue
        rows.append((tt if key == "own" else ct, label, nc, tt, ct))
    rows.sort(key=lambda r: -r[0])
    return [[f"`{label}`", str(nc), ms(tt), ms(ct)] for _, label, nc, tt, ct in rows[:count]]


def total_of(stats: pstats.Stats, module: str, name: str) -> tuple[int, float]:
    """Calls and cumulative seconds (summed over threads) of function ``name`` in ``module``."""
    calls, seconds = 0, 0.0
    for func, (_cc, nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func[0].endswith(module) and func[2] == name:
            calls += nc
            seconds += ct
    return calls, seconds


def profile_section(
    title: str, drctl_args: list[str], steps: int, cwd: Path, env: dict[str, str]
) -> list[str]:
    """A docs subsection: where one in-process ``drctl`` command spends its time."""
    stats = profile_drctl(drctl_args, cwd, env)
    calls, appended = total_of(stats, "drctl/state/sqlite.py", "_append")
    calls_b, bounded = total_of(stats, "drctl/engine/executor.py", "_bounded")
    calls_p, prepared = total_of(stats, "drctl/engine/executor.py", "_prepare")
    per, unit = (steps, "Per step") if steps else (1, "In total")
    return [
        "",
        f"### cProfile of {title} (all threads, merged)",
        "",
        "One profiler per thread (scheduler, worker pool, the thread each check/apply/verify "
        "call gets, lock heartbeat); times are summed over threads, so concurrent threads add up, "
        "and idle waits (lock acquire, Event.wait) are left out of the own-time table; a wait in "
        "a `with lock:` block is no call the profiler sees, so it shows as own time of the "
        f"function holding the `with` (e.g. `SqliteStore._tx` queueing on the store's mutex). {unit}: "
        f"journal appends {appended / per * 1000:.2f} ms ({calls} appends), "
        f"step-type calls through `_bounded` {bounded / per * 1000:.2f} ms (wall, each call in a "
        f"thread of its own: {calls_b} calls), input validation (`_prepare`) "
        f"{prepared / per * 1000:.2f} ms ({calls_p} calls).",
        "",
        "Top by own time (ms):",
        "",
        table(["function", "calls", "own", "cumulative"], top_costs(stats, "own")),
        "",
        "drctl functions by cumulative time (ms; includes what they wait for):",
        "",
        table(["function", "calls", "own", "cumulative"], top_costs(stats, "cum")),
    ]


# -- report --------------------------------------------------------------------


def bench_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("DRCTL_FAULT", "DRCTL_STATE"):
        env.pop(key, None)
    env.update(
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_HOME=str(work / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
        NO_COLOR="1",
    )
    return env


def pressure() -> str:
    """Linux PSI: the share of the last minute some task waited for a CPU / for I/O."""
    found = []
    for kind in ("cpu", "io"):
        path = Path(f"/proc/pressure/{kind}")
        if path.exists():
            some = path.read_text().splitlines()[0].split()
            avg60 = dict(f.split("=") for f in some[1:]).get("avg60", "?")
            found.append(f"{kind} {avg60}%")
    return ", ".join(found) or "not available"


def results(tools: list[Tool], appends: list[float]) -> tuple[list[str], bool]:
    """The results tables and findings; and whether the goal is met."""
    by = {t.key: t for t in tools}
    drctl = by["drctl"]
    head = ["tool", *(f"N={n} median s" for n in SIZES), "per step ms (fit of medians)"]
    head += ["per step ms (fit of minimums)", "version"]
    rows = []
    for t in tools:
        if t.skipped:
            rows.append([t.label, *("–" for _ in SIZES), "–", "–", t.skipped])
            continue
        per_step = [f"{slope(t) * 1000:.2f}", f"{slope(t, best=True) * 1000:.2f}"]
        rows.append(
            [t.label, *(f"{t.med(n):.3f}" for n in SIZES), *per_step, t.note or "this tree"]
        )
    d = slope(drctl)
    ratio_rows = []
    met = False
    for key in ("ansible", "chaos"):
        peer = by[key]
        if peer.skipped:
            ratio_rows.append([peer.label, "–", "–", "–"])
            continue
        r = slope(peer) / d
        ratio_rows.append(
            [
                peer.label,
                f"{r:.2f}×",
                f"{two_point(peer) / two_point(drctl):.2f}×",
                f"{slope(peer, best=True) / slope(drctl, best=True):.2f}×",
            ]
        )
        if key == "ansible":
            met = r >= GOAL_RATIO
    found = (
        "One durable journal event (`SqliteStore.append` into a fresh store on the same "
        "filesystem, median of 100, sampled once per round): "
        + ", ".join(f"{a * 1000:.2f}" for a in appends)
        + " ms; drctl syncs once per step (a step's outcome is committed with the next "
        "step's write-ahead intent), so on this disk the fsyncs alone cost about "
        f"{median(appends) * 1000:.2f} ms/step (the disk is shared with other work, and "
        "its sync latency moves with it)."
    )
    tmpfs = by["drctl_tmpfs"]
    if not tmpfs.skipped:
        found += (
            f" With the state on tmpfs the slope is {slope(tmpfs) * 1000:.2f} ms/step, so about "
            f"{(d - slope(tmpfs)) * 1000:.2f} ms of drctl's {d * 1000:.2f} ms per step is waiting "
            "for the disk to sync."
        )
        if not by["ansible"].skipped:
            ratio = slope(by["ansible"]) / slope(tmpfs)
            found += f" ansible-core ÷ drctl-on-tmpfs: {ratio:.1f}×."
    found += (
        f" CPU and I/O pressure (PSI `some` avg60) when the results were written: {pressure()}."
    )
    ratio_head = ["peer", "peer ÷ drctl per step (fit of medians)"]
    ratio_head += [f"(two-point {SIZES[-1]} vs {SIZES[0]})", "(fit of minimums)"]
    lines = [
        table(head, rows),
        "",
        table(ratio_head, ratio_rows),
        "",
        found,
        "",
        f"Goal (from the issue): drctl's per-step overhead (fit of medians) ≥ {GOAL_RATIO:.0f}× "
        f"lower than ansible-core's. Met: **{'yes' if met else 'no'}**.",
    ]
    return lines, met


def report(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    ansible_note, chaos_note = ensure_peers()
    work = Path(tempfile.mkdtemp(prefix="drctl-engine-overhead-"))
    env = bench_env(work)
    shm_root = Path("/dev/shm")
    shm = None
    if shm_root.is_dir() and os.access(shm_root, os.W_OK):
        shm = Path(tempfile.mkdtemp(prefix="drctl-bench-", dir=shm_root))
    try:
        for n in SIZES:
            write_inputs(work, n)
        tools = [
            Tool("drctl", "drctl (state on disk, fsync per event)"),
            Tool("ansible", "ansible-core", note=ansible_note),
            Tool("chaos", "Chaos Toolkit", note=chaos_note),
            Tool("drctl_tmpfs", "drctl, state on tmpfs (diagnostic: fsync is free)"),
        ]
        for t in tools:
            if t.key in ("ansible", "chaos") and t.note.startswith("skipped"):
                t.skipped = t.note
            if t.key == "drctl_tmpfs" and shm is None:
                t.skipped = "skipped: no writable /dev/shm"
        print(f"measuring N = {', '.join(map(str, SIZES))}, {REPEATS} rounds...")
        appends = measure(tools, work, shm, env)
        if tools[0].skipped:
            sys.exit(f"drctl itself failed: {tools[0].skipped}")
        found, met = results(tools, appends)
        parts = [
            "## Engine overhead per no-op step (drctl vs ansible-core vs Chaos Toolkit)",
            "",
            machine_line(machine()),
            "",
            "Reproduce: `.venv/bin/python benchmarks/engine_overhead.py --write`. Generated into a "
            "temp dir: a runbook of N sequential `wait` steps with `duration: 0s` (`drctl run FILE "
            "--state TMP/state.db`, fresh state file per run; every step journals `step_started` "
            "and `step_succeeded`, each a fsynced SQLite commit), a playbook of N `debug` tasks "
            "(`ansible-playbook -i localhost, play.yml`; `hosts: localhost`, `connection: local`, "
            "`gather_facts: false`) and a Chaos Toolkit experiment of N python probes "
            "`os.path.exists('/')` (`chaos --no-version-check --no-log-file run exp.json "
            "--journal-path TMP/journal.json`). Whole-command wall time, median of "
            f"{REPEATS} (rounds interleaved in a shuffled order, after one warm-up each); every run "
            "is checked to have done its N steps (drctl: N `step_succeeded` events and status "
            "succeeded; ansible: `ok=N` in the recap; chaos: N probes in a completed journal). Per "
            "step = slope of a least-squares line through the three medians (and, less exposed "
            "to other load on the machine, through the three minimums), and the two-point "
            f"difference. Peers run from their own venv, `{PEERS_VENV}`.",
            "",
            *found,
        ]
        if not met or args.profile:
            n = SIZES[-1]
            drctl_args = ["run", str(work / f"runbook-{n}.yaml"), "--state", str(work / "p.db")]
            parts += profile_section(f"`drctl run` with N={n}", drctl_args, n, work, env)
        parts += ["", f"Script wall time: {time.perf_counter() - started:.0f} s."]
        return "\n".join(parts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if shm is not None:
            shutil.rmtree(shm, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--write", action="store_true", help="rewrite this section of docs/benchmarks.md"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile drctl even if the goal is met"
    )
    args = parser.parse_args()
    if not DRCTL.exists():
        sys.exit(f"{DRCTL} not found: create the venv first (see README.md)")
    body = report(args)
    print(body)
    if args.write:
        print(f"wrote {write_section('engine_overhead', body)}")


if __name__ == "__main__":
    main()
