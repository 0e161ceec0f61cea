"""Resume decision: how long drctl takes to work out what is left of a 10,000-event run.

The journal is real: a runbook fanning one ``wait`` step (``duration: 0s``) out over
5,000 ids is run with ``drctl run --concurrency 8`` and killed with SIGKILL right after
its 10,000th durable event (drctl's own crash hook, ``DRCTL_FAULT=event:10000``), so
the run is left ``running`` with nearly every step succeeded and the last ones started
but never finished — a run interrupted near the end.

Then, on copies of that state file:

* the decision, in-process, median of 20 after 2 warm-up: find the run, load its events
  (``SqliteStore.events``), ``drctl.engine.replay.replay`` them, and list the plan's
  steps that are not done (and which of them are in doubt);
* for context, the plan check a real resume does before acting (recompile the runbook
  with the run's params and compare plan hashes), median of 5;
* the wall time of a real ``drctl resume RUN_ID --state COPY`` (fresh copy each time,
  median of 5), checked to finish the run.

    .venv/bin/python benchmarks/resume_decision.py            # print results
    .venv/bin/python benchmarks/resume_decision.py --write    # and rewrite its docs section
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import (
    DRCTL,
    clean_env,
    fanout_runbook,
    machine,
    machine_line,
    median,
    ms,
    p90,
    table,
    write_section,
)
from engine_overhead import pressure, profile_section

STEPS = 5000
EVENTS = 10_000
CONCURRENCY = 8
DECISIONS = 20
WARMUP = 2
COMPILES = 5
RESUMES = 5
GOAL_S = 0.2
TIMEOUT = 180  # seconds per command


def build(work: Path, env: dict[str, str]) -> tuple[Path, str, float]:
    """Run the runbook until SIGKILL at event 10,000; returns (state file, run id, seconds)."""
    runbook = work / "resume.yaml"
    runbook.write_text(fanout_runbook("resume-noop", [f"id-{i:04d}" for i in range(STEPS)]))
    state = work / "interrupted.db"
    argv = [str(DRCTL), "run", str(runbook), "--concurrency", str(CONCURRENCY)]
    argv += ["--state", str(state)]
    start = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=work,
        env={**env, "DRCTL_FAULT": f"event:{EVENTS}"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    took = time.perf_counter() - start
    if proc.returncode != -9:
        sys.exit(f"expected drctl to be killed at event {EVENTS}; exit {proc.returncode}")
    db = sqlite3.connect(state)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # one self-contained file to copy
        run_id, status = db.execute("SELECT id, status FROM runs").fetchone()
        count = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        db.close()
    # The kill comes after the N-th event is durable; events committed in the same group
    # (a step's outcome rides with the next intent; concurrent steps share commits), and
    # the group its leader commits next, are durable with it.
    if status != "running" or not EVENTS <= count <= EVENTS + 4 * CONCURRENCY:
        sys.exit(f"interrupted run {run_id}: status {status}, {count} events")
    return state, run_id, took


def copy_state(state: Path, directory: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="copy-", dir=directory)) / state.name
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{state}{suffix}")
        if src.exists():
            shutil.copyfile(src, f"{target}{suffix}")
    return target


def decide(state: Path, run_id: str) -> dict[str, float | int]:
    """One resume decision, timed by phase; the counts say what it decided."""
    from drctl.engine.replay import replay
    from drctl.engine.runs import find_run
    from drctl.state.sqlite import SqliteStore

    t0 = time.perf_counter()
    store = SqliteStore(state)
    t1 = time.perf_counter()
    run = find_run(store, run_id)
    events = store.events(run.id)
    t2 = time.perf_counter()
    run_state = replay(events)
    t3 = time.perf_counter()
    plan_steps = [s["id"] for s in json.loads(run.plan_json)["steps"]]
    remaining = []
    in_doubt = 0
    for sid in plan_steps:
        s = run_state.steps.get(sid)
        if s is None or not s.done:
            remaining.append(sid)
            in_doubt += bool(s is not None and s.in_doubt)
    t4 = time.perf_counter()
    store.close()
    return {
        "open": t1 - t0,
        "load": t2 - t1,
        "replay": t3 - t2,
        "remaining": t4 - t3,
        "decision": t4 - t1,
        "events": len(events),
        "steps": len(plan_steps),
        "left": len(remaining),
        "in_doubt": in_doubt,
    }


def plan_check(state: Path, run_id: str) -> float:
    """What resume does before acting: recompile with the run's params, compare hashes."""
    from drctl.compiler.compile import compile_runbook
    from drctl.compiler.params import ParamInput
    from drctl.engine.runs import _params_as_flags, find_run
    from drctl.state.sqlite import SqliteStore

    store = SqliteStore(state)
    run = find_run(store, run_id)
    start = time.perf_counter()
    plan = compile_runbook(run.runbook, ParamInput(_params_as_flags(json.loads(run.params_json))))
    took = time.perf_counter() - start
    store.close()
    if plan.hash != run.plan_hash:
        sys.exit("the recompiled plan does not match the run's plan hash")
    return took


def resume_once(state: Path, run_id: str, work: Path, env: dict[str, str]) -> tuple[float, str]:
    copy = copy_state(state, work)
    start = time.perf_counter()
    proc = subprocess.run(
        [str(DRCTL), "resume", run_id, "--state", str(copy)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(
            f"drctl resume exited {proc.returncode}:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}"
        )
    db = sqlite3.connect(copy)
    try:
        status = db.execute("SELECT status FROM runs").fetchone()[0]
        resumed_at = db.execute(
            "SELECT MAX(seq) FROM events WHERE kind = 'run_resumed'"
        ).fetchone()[0]
        after = Counter(
            kind
            for (kind,) in db.execute(
                "SELECT kind FROM events WHERE seq > ? AND step IS NOT NULL", (resumed_at,)
            )
        )
        done = db.execute(
            "SELECT COUNT(DISTINCT step) FROM events WHERE kind = 'step_succeeded'"
        ).fetchone()[0]
    finally:
        db.close()
    shutil.rmtree(copy.parent, ignore_errors=True)
    if status != "succeeded" or done != STEPS:
        sys.exit(f"resume left the run {status} with {done} steps succeeded")
    what = ", ".join(f"{n} {k}" for k, n in sorted(after.items()))
    return took, what


def report(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    env = clean_env()
    work = Path(tempfile.mkdtemp(prefix="drctl-resume-decision-"))
    try:
        print(f"building the journal: {STEPS:,} steps, killed at event {EVENTS:,}...")
        state, run_id, built = build(work, env)
        copy = copy_state(state, work)
        runs = [decide(copy, run_id) for _ in range(WARMUP + DECISIONS)][WARMUP:]
        first = runs[0]

        def col(key: str) -> list[float]:
            return [float(r[key]) for r in runs]

        compiles = [plan_check(copy, run_id) for _ in range(COMPILES)]
        resumes = [resume_once(state, run_id, work, env) for _ in range(RESUMES)]
        resume_s = [t for t, _ in resumes]
        decision = median(col("decision"))
        met = decision <= GOAL_S
        phase_rows = [
            [label, ms(median(col(key))), ms(p90(col(key))), ms(min(col(key)))]
            for label, key in (
                ("open the state store (not counted)", "open"),
                (f"find the run, load its {first['events']:,} events", "load"),
                ("`replay(events)`", "replay"),
                ("plan steps from the stored plan, minus the done ones", "remaining"),
                ("**decision** (the three above)", "decision"),
            )
        ]
        phase_rows.append(
            [
                "plan check a real resume also does (recompile + hash compare)",
                ms(median(compiles)),
                ms(p90(compiles)),
                ms(min(compiles)),
            ]
        )
        phase_rows.append(
            [
                f"whole `drctl resume RUN_ID` (fresh process, median of {RESUMES})",
                ms(median(resume_s)),
                ms(p90(resume_s)),
                ms(min(resume_s)),
            ]
        )
        parts = [
            f"## Resume decision ({EVENTS:,}-event journal)",
            "",
            machine_line(machine())
            + f" CPU and I/O pressure (PSI `some` avg60) at the end: {pressure()}.",
            "",
            "Reproduce: `.venv/bin/python benchmarks/resume_decision.py --write`. The journal is "
            f"a real one: a runbook fanning one `wait` step (`duration: 0s`) out over {STEPS:,} "
            f"ids, run with `drctl run --concurrency {CONCURRENCY}` and killed with SIGKILL right "
            f"after its {EVENTS:,}th durable event (`DRCTL_FAULT=event:{EVENTS}`, drctl's crash "
            f"hook; building it took {built:.1f} s). The run is left `running`: of its "
            f"{first['steps']:,} steps, not done: {first['left']} "
            f"(in doubt, i.e. started but never finished: {first['in_doubt']}). The decision is "
            "timed in-process on a copy of that state file, median of "
            f"{DECISIONS} after {WARMUP} warm-up: `find_run` + `SqliteStore.events` + "
            "`drctl.engine.replay.replay` + the plan's step ids (from the stored plan) not done. "
            "The plan check is `compile_runbook` with the run's params, median of "
            f"{COMPILES}. The real resume runs on a fresh copy each time and is checked to end "
            f"the run succeeded with all {STEPS:,} steps done; it did: "
            f"{resumes[0][1]}. Times in ms.",
            "",
            table(["phase", "median", "p90", "min"], phase_rows),
            "",
            f"Goal (from the issue): the resume decision ≤ {GOAL_S * 1000:.0f} ms. "
            f"Met: **{'yes' if met else 'no'}** ({decision * 1000:.1f} ms).",
        ]
        if not met or args.profile:
            parts += profile_section(
                "`drctl resume RUN_ID` (the same interrupted run)",
                ["resume", run_id, "--state", str(copy_state(state, work))],
                0,
                work,
                env,
            )
        parts += ["", f"Script wall time: {time.perf_counter() - started:.0f} s."]
        return "\n".join(parts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--write", action="store_true", help="rewrite this section of docs/benchmarks.md"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile a real resume even if the goal is met"
    )
    args = parser.parse_args()
    if not DRCTL.exists():
        sys.exit(f"{DRCTL} not found: create the venv first (see README.md)")
    body = report(args)
    print(body)
    if args.write:
        print(f"wrote {write_section('resume_decision', body)}")


if __name__ == "__main__":
    main()
