"""The hot path: what a journaled step costs in drctl, against its floor and its peers.

One run measures, side by side on this machine (issue 13's speed goals):

(a) a journaled no-op step (``wait``, ``duration: 0s``; ``step_started`` before,
    ``step_succeeded`` after, fsynced SQLite commits) against the floor of one durable
    SQLite commit (WAL, ``synchronous=FULL``) timed in the same run on the same disk —
    and, for scale, ansible-core ``debug`` tasks and Chaos Toolkit python probes;
(b) a ``shell`` step running ``/bin/true`` (argv, no shell) against a Chaos Toolkit
    ``process`` probe of ``/bin/true`` and an ansible-core ``command: /bin/true`` task;
(c) a 10,000-shard fan-out of no-op steps at ``--concurrency 256``: wall time and peak
    RSS of the whole command (``benchmarks/fanout_run.py``'s run, reaped with wait4);
(d) ``drctl --help`` against a bare typer + rich hello (``benchmarks/cold_start.py``'s
    timing) and the resume decision on a 10,000-event journal
    (``benchmarks/resume_decision.py``'s journal and decision).

Per-step costs are whole-command wall times of fresh processes for N steps, rounds
interleaved in a shuffled order; per step = slope of a least-squares line through the
medians (and, as a check, through the minimums). A diagnostic row runs drctl with its
state on tmpfs (/dev/shm), where fsync costs nothing, to split engine CPU from disk sync.

    .venv/bin/python benchmarks/engine_overhead.py             # print results
    .venv/bin/python benchmarks/engine_overhead.py --write     # and rewrite its docs section
    .venv/bin/python benchmarks/engine_overhead.py --profile   # and profile the hot path

The peers live in their own venv, /tmp/drctl-bench-peers (created, and ansible-core
and chaostoolkit pip-installed into it, if missing); never in the project's .venv.
"""

from __future__ import annotations

import argparse
import json
import math
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

from _common import (
    ANSIBLE,
    CHAOS,
    DRCTL,
    PEERS_VENV,
    ROOT,
    VENV_PY,
    ensure_peers,
    machine,
    machine_line,
    median,
    ms,
    table,
    write_section,
)

NOOP_SIZES = (10, 100, 500)
SHELL_SIZES = (10, 100, 300)
# An ansible-core `command` task costs ~0.5 s of CPU here: fewer of them keep the run short.
ANSIBLE_SHELL_SIZES = (5, 20, 40)
REPEATS = 3
FLOOR_COMMITS = 200
FANOUT_SHARDS = 10_000
FANOUT_CONCURRENCY = 256
FANOUT_RUNS = 3
STARTUP_RUNS = 15
DECISIONS = 10
PROFILE_STEPS = 2000
RUN_TIMEOUT = 300  # seconds per command; N=40 ansible `command` tasks take ~20 s here
TOP = 12


@dataclass(frozen=True)
class Goal:
    what: str
    measured: str
    target: str
    met: bool | None  # None: not measured (a peer missing)


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

# The hot path's stages, found by name in the profile (a stage renamed is left out).
HOT = (
    ("a step's attempts (`Executor._attempts`)", "drctl/engine/executor.py", "_attempts"),
    ("step-type calls (`_bounded`, wall)", "drctl/engine/executor.py", "_bounded"),
    ("input validation (`_prepare`)", "drctl/engine/executor.py", "_prepare"),
    ("journal commits (`Journal._commit`)", "drctl/engine/journal.py", "_commit"),
    (
        "group commits (`SqlStore._append_group`, one transaction each)",
        "drctl/state/sql.py",
        "_append_group",
    ),
)


# Runs drctl's CLI in-process under tracemalloc; a sampler thread keeps the snapshot of
# the largest traced heap seen (taken again only when the heap grew by a fifth), and at
# exit the top allocation sites of that snapshot go to OUT.json.
# Usage: python -c MEMORY OUT.json drctl-args...
MEMORY = """
import atexit, json, sys, threading, tracemalloc
out = sys.argv[1]
sys.argv = ["drctl", *sys.argv[2:]]
tracemalloc.start(1)
best = {"size": 0, "snap": None}
done = threading.Event()
def sample():
    while not done.wait(0.2):
        size = tracemalloc.get_traced_memory()[0]
        if size > best["size"] * 1.2:
            best["size"], best["snap"] = size, tracemalloc.take_snapshot()
threading.Thread(target=sample, daemon=True).start()
def dump():
    done.set()
    peak = tracemalloc.get_traced_memory()[1]
    snap = best["snap"] or tracemalloc.take_snapshot()
    stats = snap.statistics("lineno")
    rows = [[str(s.traceback[0]), s.size, s.count] for s in stats[:15]]
    with open(out, "w") as f:
        json.dump({"peak": peak, "at_snapshot": best["size"], "rows": rows}, f)
atexit.register(dump)
from drctl.cli.app import main
main()
"""


@dataclass
class Tool:
    key: str
    label: str
    sizes: tuple[int, ...]
    samples: dict[int, list[float]] = field(default_factory=dict)
    note: str = ""
    skipped: str = ""

    def med(self, n: int) -> float:
        return median(self.samples[n])


# -- inputs --------------------------------------------------------------------


def write_inputs(directory: Path, n: int) -> None:
    """The runbooks, playbooks and experiments of N steps, for both suites."""

    def runbook(kind: str, step: str) -> None:
        lines = ["apiVersion: drctl/v1", "kind: Runbook", "metadata:", f"  name: {kind}-{n}"]
        lines += ["steps:", *(f"  - {{id: s{i}, {step}}}" for i in range(1, n + 1))]
        (directory / f"runbook-{kind}-{n}.yaml").write_text("\n".join(lines) + "\n")

    runbook("noop", "type: wait, with: {duration: 0s}")
    # argv form: /bin/true runs without a shell, as the peers run it.
    runbook("shell", "type: shell, with: {command: [/bin/true], mutates: false}")

    def playbook(kind: str, task: list[str]) -> None:
        play = ["- hosts: localhost", "  connection: local", "  gather_facts: false", "  tasks:"]
        for i in range(1, n + 1):
            play += [f"    - name: t{i}", *(f"      {line}" for line in task)]
        (directory / f"playbook-{kind}-{n}.yml").write_text("\n".join(play) + "\n")

    playbook("noop", ["debug:", "  msg: noop"])
    playbook("shell", ["ansible.builtin.command: /bin/true"])

    def experiment(kind: str, provider: dict[str, object]) -> None:
        doc = {
            "version": "1.0.0",
            "title": f"{n} {kind} probes",
            "description": f"{kind} probes",
            "method": [
                {"type": "probe", "name": f"p{i}", "provider": provider} for i in range(1, n + 1)
            ],
            "rollbacks": [],
        }
        (directory / f"experiment-{kind}-{n}.json").write_text(json.dumps(doc))

    experiment(
        "noop",
        {"type": "python", "module": "os.path", "func": "exists", "arguments": {"path": "/"}},
    )
    experiment("shell", {"type": "process", "path": "/bin/true"})


def command(key: str, n: int, work: Path, shm: Path | None) -> tuple[list[str], Path]:
    """The argv for one run and the fresh scratch dir it writes into."""
    base = shm if key == "drctl_tmpfs" else work
    assert base is not None
    scratch = Path(tempfile.mkdtemp(prefix=f"{key}-{n}-", dir=base))
    kind = "shell" if key.endswith("_shell") else "noop"
    if key.startswith("drctl"):
        return [
            str(DRCTL), "run", str(work / f"runbook-{kind}-{n}.yaml"),
            "--state", str(scratch / "state.db"),
        ], scratch  # fmt: skip
    if key.startswith("ansible"):
        # The peers venv's python runs the modules (not whatever interpreter discovery finds).
        interpreter = f"ansible_python_interpreter={PEERS_VENV / 'bin' / 'python'}"
        playbook = str(work / f"playbook-{kind}-{n}.yml")
        return [str(ANSIBLE), "-i", "localhost,", "-e", interpreter, playbook], scratch
    return [
        str(CHAOS), "--no-version-check", "--no-log-file", "--settings", str(scratch / "settings.yaml"),
        "run", str(work / f"experiment-{kind}-{n}.json"), "--journal-path", str(scratch / "journal.json"),
    ], scratch  # fmt: skip


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
    if key.startswith("ansible"):
        return "" if f"ok={n} " in stdout else "recap does not say ok=N"
    journal = json.loads((scratch / "journal.json").read_text())
    done = [r for r in journal.get("run", []) if r.get("status") == "succeeded"]
    return (
        ""
        if journal.get("status") == "completed" and len(done) == n
        else f"{len(done)} probes succeeded, {journal.get('status')}"
    )


def run_checked(key: str, n: int, work: Path, shm: Path | None, env: dict[str, str]) -> float:
    """Wall time of one checked run; exits if it did not do its N steps."""
    argv, scratch = command(key, n, work, shm)
    start = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=scratch, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    elapsed = time.perf_counter() - start
    problem = check(key, n, scratch, proc.returncode, proc.stdout)
    shutil.rmtree(scratch, ignore_errors=True)
    if problem:
        raise RuntimeError(f"{key} N={n}: {problem}: {(proc.stderr or proc.stdout)[-300:]}")
    return elapsed


def measure(tools: list[Tool], work: Path, shm: Path | None, env: dict[str, str]) -> list[float]:
    """Fill each tool's samples; returns one durable-commit floor sample per round."""
    live = [t for t in tools if not t.skipped]
    for t in live:
        t.samples = {n: [] for n in t.sizes}
        try:  # one warm-up per tool (page cache, .pyc files), not counted
            run_checked(t.key, t.sizes[0], work, shm, env)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            t.skipped = f"skipped: warm-up failed ({exc})"
    live = [t for t in live if not t.skipped]
    jobs = [(t, n) for t in live for n in t.sizes]
    floors = []
    for r in range(REPEATS):
        floors.append(commit_floor(work))
        random.Random(r).shuffle(jobs)
        for t, n in jobs:
            try:
                elapsed = run_checked(t.key, n, work, shm, env)
            except RuntimeError as exc:
                sys.exit(str(exc))
            t.samples[n].append(elapsed)
            print(f"  round {r + 1}: {t.key:14} N={n:<4} {elapsed:7.3f} s")
    return floors


def slope(t: Tool, *, best: bool = False) -> float:
    """Seconds per step: least-squares slope through the medians (or the minimums)."""
    ys = [min(t.samples[n]) if best else t.med(n) for n in t.sizes]
    return statistics.linear_regression(list(t.sizes), ys).slope


def two_point(t: Tool) -> float:
    lo, hi = t.sizes[0], t.sizes[-1]
    return (t.med(hi) - t.med(lo)) / (hi - lo)


# -- floors and diagnostics ------------------------------------------------------


def commit_floor(directory: Path, count: int = FLOOR_COMMITS) -> float:
    """Median seconds of one durable SQLite commit: WAL, ``synchronous=FULL``, one small
    row per transaction, on the filesystem the drctl runs write their state to."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")
            samples = []
            for i in range(count):
                start = time.perf_counter()
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t (data) VALUES (?)", (f'{{"seq": {i}}}',))
                db.execute("COMMIT")
                samples.append(time.perf_counter() - start)
        finally:
            db.close()
    return median(samples)


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
        proc = subprocess.run(
            [str(VENV_PY), "-c", code, str(Path(tmp) / "s.db"), str(count)],
            capture_output=True,
            text=True,
            check=False,
            timeout=RUN_TIMEOUT,
        )
    # The store's API is being reworked; a diagnostic that no longer fits is left out.
    return float(proc.stdout) if proc.returncode == 0 else float("nan")


def profile_drctl(args: list[str], cwd: Path, env: dict[str, str]) -> pstats.Stats:
    """cProfile every thread of one in-process ``drctl`` command; returns the merged stats."""
    with tempfile.TemporaryDirectory() as tmp:
        out = _traced(PROFILE, Path(tmp) / "drctl.prof", args, cwd, env)
        return pstats.Stats(str(out))


def _traced(script: str, out: Path, args: list[str], cwd: Path, env: dict[str, str]) -> Path:
    """Run ``drctl ARGS`` in-process under ``script`` (a tracer), which writes ``out``."""
    subprocess.run(
        [str(VENV_PY), "-c", script, str(out), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    return out


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
    per, unit = (steps, "Per step") if steps else (1, "In total")
    shares = []
    for label, module, name in HOT:
        calls, seconds = total_of(stats, module, name)
        if calls:
            shares.append(f"{label} {seconds / per * 1000:.2f} ms ({calls:,} calls)")
    return [
        "",
        f"### cProfile of {title} (all threads, merged)",
        "",
        "One profiler per thread (scheduler, worker pool, the thread each check/apply/verify "
        "call gets, lock heartbeat); times are summed over threads, so concurrent threads add up, "
        "and idle waits (lock acquire, Event.wait) are left out of the own-time table; a wait in "
        "a `with lock:` block is no call the profiler sees, so it shows as own time of the "
        "function holding the `with` (e.g. `Journal._commit` queueing for the output sinks). "
        f"{unit} (cumulative, summed over threads): " + "; ".join(shares) + ".",
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


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else "–"


def per_step_table(tools: list[Tool]) -> str:
    """Median wall time per N and the per-step slopes, one row per tool of a suite."""
    sizes = sorted({n for t in tools for n in t.sizes})
    head = ["tool", *(f"N={n} median s" for n in sizes)]
    head += ["per step ms (fit of medians)", "(fit of minimums)", "version"]
    rows = []
    for t in tools:
        if t.skipped:
            rows.append([t.label, *("–" for _ in sizes), "–", "–", t.skipped])
            continue
        cells = [f"{t.med(n):.3f}" if n in t.samples else "·" for n in sizes]
        per = [f"{slope(t) * 1000:.2f}", f"{slope(t, best=True) * 1000:.2f}"]
        rows.append([t.label, *cells, *per, t.note or "this tree"])
    return table(head, rows)


def fanout(work: Path, env: dict[str, str]) -> dict[str, float]:
    """(c): the 10,000-shard fan-out at concurrency 256, as ``fanout_run.py`` runs it."""
    from _common import fanout_runbook, run_measured
    from fanout_run import run_once

    runbook = work / "fanout-10k.yaml"
    runbook.write_text(fanout_runbook("fanout-10k", [f"id-{i:05d}" for i in range(FANOUT_SHARDS)]))
    print(f"fan-out: {FANOUT_SHARDS:,} shards at --concurrency {FANOUT_CONCURRENCY}...")
    run_once(runbook, FANOUT_CONCURRENCY, work, env, via_log=False, steps=FANOUT_SHARDS)
    runs = [
        run_once(runbook, FANOUT_CONCURRENCY, work, env, via_log=i == 0, steps=FANOUT_SHARDS)
        for i in range(FANOUT_RUNS)
    ]
    for r in runs:
        print(f"  {r.elapsed:.3f} s, peak RSS {r.peak_rss_mb:.1f} MB")
    plan = run_measured([str(DRCTL), "plan", str(runbook)], cwd=work, env=env, timeout=RUN_TIMEOUT)
    if plan.returncode != 0:
        sys.exit(f"drctl plan of the fan-out exited {plan.returncode}: {plan.stderr[-500:]}")
    return {
        "wall": median([r.elapsed for r in runs]),
        "wall_min": min(r.elapsed for r in runs),
        "rss": max(r.peak_rss_mb for r in runs),
        "plan_wall": plan.elapsed,
        "plan_rss": plan.peak_rss_mb,
    }


def startup(env: dict[str, str]) -> dict[str, float]:
    """(d) first half: ``drctl --help`` and the typer + rich hello, as ``cold_start.py`` times them."""
    from cold_start import measure as time_rows
    from cold_start import rows as startup_rows

    wanted = [r for r in startup_rows(None, "") if r.key in ("hello_help", "drctl_help")]
    print(f"start-up: {STARTUP_RUNS} runs each of `drctl --help` and the typer hello...")
    time_rows(wanted, STARTUP_RUNS, 2, {**env, "COLUMNS": "100"})
    by = {r.key: r for r in wanted}
    if any(r.skipped for r in wanted):
        sys.exit(f"start-up rows failed: {[r.skipped for r in wanted]}")
    return {"drctl": median(by["drctl_help"].samples), "hello": median(by["hello_help"].samples)}


def resume_decision(work: Path, env: dict[str, str]) -> dict[str, float]:
    """(d) second half: the decision on a 10,000-event journal, as ``resume_decision.py`` builds it."""
    from resume_decision import build, copy_state, decide

    print("resume: building the 10,000-event journal...")
    state, run_id, _built = build(work, env)
    copy = copy_state(state, work)
    runs = [decide(copy, run_id) for _ in range(2 + DECISIONS)][2:]
    return {
        "decision": median([float(r["decision"]) for r in runs]),
        "events": float(runs[0]["events"]),
    }


def results(
    tools: list[Tool],
    floors: list[float],
    store_append: float,
    fan: dict[str, float],
    start: dict[str, float],
    resume: dict[str, float],
) -> tuple[list[str], list[Goal]]:
    """The tables, findings and goals of one run."""
    by = {t.key: t for t in tools}
    floor = median(floors)
    noop = slope(by["drctl"])
    goals = [
        Goal(
            "(a) journaled no-op step ÷ one durable SQLite commit",
            f"{noop * 1000:.2f} ms ÷ {floor * 1000:.2f} ms = {ratio(noop, floor)}",
            "≤ 1.5×",
            noop / floor <= 1.5,
        )
    ]
    shell = slope(by["drctl_shell"])
    chaos_shell, ansible_shell = by["chaos_shell"], by["ansible_shell"]
    if chaos_shell.skipped:
        goals.append(Goal("(b) `shell` step ÷ Chaos Toolkit process probe", "–", "≤ 1.5×", None))
    else:
        c = slope(chaos_shell)
        goals.append(
            Goal(
                "(b) `shell` step ÷ Chaos Toolkit process probe",
                f"{shell * 1000:.2f} ms ÷ {c * 1000:.2f} ms = {ratio(shell, c)}",
                "≤ 1.5×",
                shell / c <= 1.5,
            )
        )
    if ansible_shell.skipped:
        goals.append(Goal("(b) ansible-core `command` task ÷ `shell` step", "–", "≥ 20×", None))
    else:
        a = slope(ansible_shell)
        goals.append(
            Goal(
                "(b) ansible-core `command` task ÷ `shell` step",
                f"{a * 1000:.1f} ms ÷ {shell * 1000:.2f} ms = {ratio(a, shell)}",
                "≥ 20×",
                a / shell >= 20,
            )
        )
    goals += [
        Goal(
            f"(c) {FANOUT_SHARDS:,}-shard fan-out at concurrency {FANOUT_CONCURRENCY}: wall time",
            f"{fan['wall']:.2f} s",
            "≤ 3 s",
            fan["wall"] <= 3.0,
        ),
        Goal(
            f"(c) {FANOUT_SHARDS:,}-shard fan-out: peak RSS",
            f"{fan['rss']:.0f} MB",
            "≤ 150 MB",
            fan["rss"] <= 150,
        ),
        Goal(
            "(d) `drctl --help` ÷ typer + rich hello `--help`",
            f"{ms(start['drctl'])} ms ÷ {ms(start['hello'])} ms = {ratio(start['drctl'], start['hello'])}",
            "≤ 0.7×",
            start["drctl"] / start["hello"] <= 0.7,
        ),
        Goal(
            f"(d) resume decision on a {resume['events']:,.0f}-event journal",
            f"{ms(resume['decision'])} ms",
            "≤ 200 ms",
            resume["decision"] <= 0.2,
        ),
    ]
    noop_tools = [by[k] for k in ("drctl", "drctl_tmpfs", "ansible", "chaos")]
    shell_tools = [by[k] for k in ("drctl_shell", "chaos_shell", "ansible_shell")]
    tmpfs = by["drctl_tmpfs"]
    found = (
        "One durable SQLite commit (WAL, `synchronous=FULL`, one row per transaction, a fresh "
        f"database beside the runs' state files, median of {FLOOR_COMMITS}, sampled once per "
        "round): " + ", ".join(f"{f * 1000:.2f}" for f in floors) + " ms. "
    )
    if not math.isnan(store_append):
        found += f"One `SqliteStore.append` on the same disk: {store_append * 1000:.2f} ms. "
    if not tmpfs.skipped:
        found += (
            f"With the state on tmpfs a no-op step costs {slope(tmpfs) * 1000:.2f} ms, so "
            f"about {(noop - slope(tmpfs)) * 1000:.2f} ms of the {noop * 1000:.2f} ms is waiting "
            "for the disk."
        )
    peers = []
    for key, what in (
        ("ansible", "ansible-core `debug` task"),
        ("chaos", "Chaos Toolkit python probe"),
    ):
        if not by[key].skipped:
            peers.append(f"{what} ÷ no-op step: {ratio(slope(by[key]), noop)}")
    lines = [
        "### Goals",
        "",
        table(
            ["goal", "measured", "target", "met"],
            [
                [
                    g.what,
                    g.measured,
                    g.target,
                    "–" if g.met is None else ("yes" if g.met else "**no**"),
                ]
                for g in goals
            ],
        ),
        "",
        "### (a) Journaled no-op step",
        "",
        per_step_table(noop_tools),
        "",
        found,
        "For scale: " + "; ".join(peers) + "." if peers else "",
        "",
        "### (b) `shell` step running `/bin/true`",
        "",
        per_step_table(shell_tools),
        "",
        f"### (c) Fan-out: {FANOUT_SHARDS:,} no-op shards at `--concurrency {FANOUT_CONCURRENCY}`",
        "",
        f"Whole `drctl run` command, median of {FANOUT_RUNS} after one warm-up (min "
        f"{fan['wall_min']:.2f} s), every run checked to end succeeded with {FANOUT_SHARDS:,} "
        f"`step_succeeded` events; peak RSS is the largest `ru_maxrss` of those runs. For scale, "
        f"`drctl plan` of the same runbook (start-up + compiling {FANOUT_SHARDS:,} steps, no "
        f"execution) took {fan['plan_wall']:.2f} s and {fan['plan_rss']:.0f} MB peak RSS.",
        "",
        "### (d) Start-up and the resume decision",
        "",
        f"`drctl --help` {ms(start['drctl'])} ms and `hello_typer.py --help` "
        f"{ms(start['hello'])} ms (medians of {STARTUP_RUNS} fresh processes each, interleaved, "
        f"after 2 warm-up runs). The resume decision (`find_run` + `SqliteStore.events` + "
        f"`replay` + the plan's steps not done, in-process, median of {DECISIONS} after 2 "
        f"warm-up) on a real journal of {resume['events']:,.0f} events, left by a run killed "
        f"with SIGKILL: {ms(resume['decision'])} ms.",
    ]
    return lines, goals


def memory_section(title: str, drctl_args: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """A docs subsection: the top allocation sites at the largest traced heap of one command."""
    with tempfile.TemporaryDirectory() as tmp:
        out = _traced(MEMORY, Path(tmp) / "memory.json", drctl_args, cwd, env)
        if not out.exists():
            return ["", f"### Memory of {title}", "", "(the traced run failed)"]
        data = json.loads(out.read_text())
    rows = []
    for site, size, count in data["rows"]:
        path, _, line = site.rpartition(":")
        rows.append([f"`{where((path, int(line), ''))[:-2]}`", f"{size / 2**20:.1f}", str(count)])
    return [
        "",
        f"### Memory of {title} (tracemalloc)",
        "",
        f"Peak traced Python heap {data['peak'] / 2**20:.1f} MB; the allocation sites below are "
        f"those of the largest heap sampled ({data['at_snapshot'] / 2**20:.1f} MB; sampled every "
        "0.2 s). Traced memory is Python objects only: RSS adds the interpreter, extension "
        "modules, thread stacks and allocator slack.",
        "",
        table(["allocated at", "MB", "blocks"], rows),
    ]


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
        for n in {*NOOP_SIZES, *SHELL_SIZES, *ANSIBLE_SHELL_SIZES}:
            write_inputs(work, n)
        tools = [
            Tool("drctl", "drctl no-op step (state on disk, fsynced)", NOOP_SIZES),
            Tool("drctl_tmpfs", "drctl no-op step, state on tmpfs (diagnostic)", NOOP_SIZES),
            Tool("ansible", "ansible-core `debug` task", NOOP_SIZES, note=ansible_note),
            Tool("chaos", "Chaos Toolkit python probe", NOOP_SIZES, note=chaos_note),
            Tool("drctl_shell", "drctl `shell` step `[/bin/true]`", SHELL_SIZES),
            Tool(
                "chaos_shell",
                "Chaos Toolkit process probe `/bin/true`",
                SHELL_SIZES,
                note=chaos_note,
            ),
            Tool(
                "ansible_shell",
                "ansible-core `command: /bin/true` task",
                ANSIBLE_SHELL_SIZES,
                note=ansible_note,
            ),
        ]
        for t in tools:
            if t.key.startswith(("ansible", "chaos")) and t.note.startswith("skipped"):
                t.skipped = t.note
            if t.key == "drctl_tmpfs" and shm is None:
                t.skipped = "skipped: no writable /dev/shm"
        print(f"measuring per-step costs, {REPEATS} rounds...")
        floors = measure(tools, work, shm, env)
        for key in ("drctl", "drctl_shell"):
            if next(t for t in tools if t.key == key).skipped:
                sys.exit(f"drctl itself failed: {next(t for t in tools if t.key == key).skipped}")
        store_append = append_cost(work)
        fan = fanout(work, env)
        start = startup(env)
        resume = resume_decision(work, env)
        found, goals = results(tools, floors, store_append, fan, start, resume)
        met = [g for g in goals if g.met]
        parts = [
            "## The hot path: journaled steps against their floor and their peers",
            "",
            machine_line(machine())
            + f" CPU and I/O pressure (PSI `some` avg60) at the end: {pressure()}.",
            "",
            "Reproduce: `.venv/bin/python benchmarks/engine_overhead.py --write` (add `--profile` "
            "for the profiles below). Everything here is measured in one run of that script. "
            "Generated into a temp dir: runbooks of N sequential `wait` steps (`duration: 0s`) "
            "and of N `shell` steps `{command: [/bin/true], mutates: false}` (`drctl run FILE "
            "--state TMP/state.db`, fresh state file per run; every step journals `step_started` "
            "and `step_succeeded`), playbooks of N `debug` / `ansible.builtin.command: /bin/true` "
            "tasks (`ansible-playbook -i localhost,`, `connection: local`, `gather_facts: false`) "
            "and Chaos Toolkit experiments of N python probes `os.path.exists('/')` / process "
            "probes `/bin/true` (`chaos --no-version-check --no-log-file run`). Whole-command "
            f"wall time, median of {REPEATS} rounds interleaved in a shuffled order after one "
            "warm-up each; every run is checked to have done its N steps (drctl: N "
            "`step_succeeded` and status succeeded; ansible: `ok=N`; chaos: N succeeded probes "
            "in a completed journal). Per step = least-squares slope through the medians "
            "(start-up cancels out). Peers run from their own venv, "
            f"`{PEERS_VENV}`. Goals met: {len(met)} of {len(goals)}.",
            "",
            *found,
        ]
        if args.profile:
            n = PROFILE_STEPS
            write_inputs(work, n)
            seq = ["run", str(work / f"runbook-noop-{n}.yaml"), "--state", str(work / "p1.db")]
            parts += profile_section(
                f"`drctl run` of {n:,} sequential no-op steps", seq, n, work, env
            )
            fan_args = ["run", str(work / "fanout-10k.yaml")]
            fan_args += ["--concurrency", str(FANOUT_CONCURRENCY), "--state", str(work / "p2.db")]
            title = f"the {FANOUT_SHARDS:,}-shard fan-out at `--concurrency {FANOUT_CONCURRENCY}`"
            parts += profile_section(title, fan_args, FANOUT_SHARDS, work, env)
            fan_args[-1] = str(work / "p3.db")
            parts += memory_section(title, fan_args, work, env)
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
    parser.add_argument("--profile", action="store_true", help="profile the hot path too")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one round of each and fewer samples: a check between changes (not with --write)",
    )
    args = parser.parse_args()
    if args.quick:
        if args.write:
            parser.error("--quick figures are too noisy for the docs: drop --write")
        global REPEATS, FANOUT_RUNS, STARTUP_RUNS, DECISIONS
        REPEATS, FANOUT_RUNS, STARTUP_RUNS, DECISIONS = 1, 1, 5, 3
    if not DRCTL.exists():
        sys.exit(f"{DRCTL} not found: create the venv first (see README.md)")
    body = report(args)
    print(body)
    if args.write:
        print(f"wrote {write_section('engine_overhead', body)}")


if __name__ == "__main__":
    main()
