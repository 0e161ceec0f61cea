"""Fan-out run: 1,000 no-op steps from one ``for_each``, executed with ``--concurrency 64``.

A runbook (generated into a temp dir) fans one ``wait`` step with ``duration: 0s`` out
over a ``list`` param of 1,000 ids. This times the whole ``drctl run FILE --concurrency
64 --state TMP/state.db`` command (fresh process and fresh state file each time,
median of 5 after one warm-up), with the default concurrency (8) interleaved for
comparison, and checks every run: exit 0, run status succeeded, 1,000
``step_succeeded`` events (read back with ``drctl log RUN --output json``). For scale
it also times ``drctl plan`` of the same runbook (start-up + compile, no execution).

    .venv/bin/python benchmarks/fanout_run.py            # print results
    .venv/bin/python benchmarks/fanout_run.py --write    # and rewrite its docs section
"""

from __future__ import annotations

import argparse
import json
import random
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
    Finished,
    clean_env,
    fanout_runbook,
    machine,
    machine_line,
    median,
    p90,
    run_measured,
    table,
    write_section,
)
from engine_overhead import pressure, profile_section

STEPS = 1000
CONCURRENCY = (64, 8)
GOAL_CONCURRENCY = 64
RUNS = 5
GOAL_S = 3.0
TIMEOUT = 120  # seconds per command


def run_once(
    runbook: Path,
    concurrency: int,
    work: Path,
    env: dict[str, str],
    *,
    via_log: bool,
    steps: int = STEPS,
) -> Finished:
    """One ``drctl run`` of ``steps`` fanned-out steps; exits if any did not succeed."""
    scratch = Path(tempfile.mkdtemp(prefix=f"c{concurrency}-", dir=work))
    state = scratch / "state.db"
    argv = [str(DRCTL), "run", str(runbook), "--concurrency", str(concurrency)]
    argv += ["--state", str(state)]
    done = run_measured(argv, cwd=scratch, env=env, timeout=TIMEOUT)
    if done.returncode != 0:
        sys.exit(f"drctl run exited {done.returncode}:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    db = sqlite3.connect(state)
    try:
        run_id, status = db.execute("SELECT id, status FROM runs").fetchone()
        succeeded = db.execute(
            "SELECT COUNT(*) FROM events WHERE kind = 'step_succeeded'"
        ).fetchone()[0]
    finally:
        db.close()
    if status != "succeeded" or succeeded != steps:
        sys.exit(f"run {run_id}: status {status}, {succeeded} step_succeeded events")
    if via_log:
        log = subprocess.run(
            [str(DRCTL), "log", run_id, "--output", "json", "--state", str(state)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        ).stdout
        kinds = Counter(json.loads(line)["kind"] for line in log.splitlines() if line.strip())
        if kinds["step_succeeded"] != steps or kinds["run_finished"] != 1:
            sys.exit(f"drctl log {run_id}: {dict(kinds)}")
    shutil.rmtree(scratch, ignore_errors=True)
    return done


def plan_time(runbook: Path, env: dict[str, str], runs: int = 3) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [str(DRCTL), "plan", str(runbook)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TIMEOUT,
            check=True,
        )
        samples.append(time.perf_counter() - start)
    return median(samples)


def report(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    env = clean_env()
    work = Path(tempfile.mkdtemp(prefix="drctl-fanout-run-"))
    try:
        runbook = work / "fanout.yaml"
        ids = [f"id-{i:04d}" for i in range(STEPS)]
        runbook.write_text(fanout_runbook("fanout-noop", ids))
        print("warm-up...")
        run_once(runbook, GOAL_CONCURRENCY, work, env, via_log=True)
        samples: dict[int, list[float]] = {c: [] for c in CONCURRENCY}
        for r in range(RUNS):
            order = list(CONCURRENCY)
            random.Random(r).shuffle(order)
            for c in order:
                elapsed = run_once(runbook, c, work, env, via_log=c == GOAL_CONCURRENCY).elapsed
                samples[c].append(elapsed)
                print(f"  round {r + 1}: --concurrency {c:<3} {elapsed:.3f} s")
        planned = plan_time(runbook, env)
        rows = [
            [
                f"`--concurrency {c}`" + (" (goal)" if c == GOAL_CONCURRENCY else " (default)"),
                f"{median(samples[c]):.3f}",
                f"{p90(samples[c]):.3f}",
                f"{min(samples[c]):.3f}",
                f"{(median(samples[c]) - planned) / STEPS * 1000:.2f}",
            ]
            for c in CONCURRENCY
        ]
        got = median(samples[GOAL_CONCURRENCY])
        met = got <= GOAL_S
        parts = [
            f"## Fan-out run ({STEPS:,} no-op steps, `--concurrency {GOAL_CONCURRENCY}`)",
            "",
            machine_line(machine())
            + f" CPU and I/O pressure (PSI `some` avg60) at the end: {pressure()}.",
            "",
            "Reproduce: `.venv/bin/python benchmarks/fanout_run.py --write`. The runbook "
            f"(generated into a temp dir) fans one `wait` step with `duration: 0s` out over a "
            f'`list` param of {STEPS:,} ids (`for_each: "{{{{ params.ids }}}}"`). Whole-command '
            f"wall time of `drctl run FILE --concurrency C --state TMP/state.db`, fresh state file "
            f"each run, median of {RUNS} after one warm-up, the two concurrencies interleaved in a "
            f"shuffled order. Every run is checked: exit 0, status succeeded, {STEPS:,} "
            "`step_succeeded` events (for C=64 also read back through `drctl log RUN --output "
            "json`). Every step journals 2 fsynced events. Times in s.",
            "",
            table(
                ["command", "median", "p90", "min", "ms/step beyond `drctl plan`"],
                rows,
            ),
            "",
            f"For scale: `drctl plan` of the same runbook (start-up + compiling the {STEPS:,} "
            f"steps, no execution) takes {planned:.3f} s, so executing the steps adds "
            f"{got - planned:.3f} s at C={GOAL_CONCURRENCY}.",
            "",
            f"Goal (from the issue): ≤ {GOAL_S:.0f} s for the whole command at "
            f"`--concurrency {GOAL_CONCURRENCY}`. Met: **{'yes' if met else 'no'}** "
            f"({got:.3f} s).",
        ]
        if not met or args.profile:
            drctl_args = ["run", str(runbook), "--concurrency", str(GOAL_CONCURRENCY)]
            drctl_args += ["--state", str(work / "profile.db")]
            parts += profile_section(
                f"`drctl run --concurrency {GOAL_CONCURRENCY}`", drctl_args, STEPS, work, env
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
        "--profile", action="store_true", help="profile the run even if the goal is met"
    )
    args = parser.parse_args()
    if not DRCTL.exists():
        sys.exit(f"{DRCTL} not found: create the venv first (see README.md)")
    body = report(args)
    print(body)
    if args.write:
        print(f"wrote {write_section('fanout_run', body)}")


if __name__ == "__main__":
    main()
