"""Compile fan-out: one ``shell`` step fanned out over 1,000 shards, then one more step.

Two runbooks are generated into a temporary directory: the shard list comes from a
``list`` param (``for_each: "{{ params.shards }}"``), or is written literally in
``for_each``. For each, this measures the in-process
``drctl.compiler.compile.compile_runbook(path, ParamInput())`` time and the whole
``drctl plan`` command's wall time, checks that the plan has 1,001 steps, and
profiles one compile with cProfile.

    .venv/bin/python benchmarks/compile_fanout.py            # print results
    .venv/bin/python benchmarks/compile_fanout.py --write    # and rewrite its docs section
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import DRCTL, ROOT, machine, machine_line, median, ms, p90, table, write_section

SHARDS = 1000
GOAL_S = 0.5
TOP = 15

RUNBOOK = """\
apiVersion: drctl/v1
kind: Runbook
metadata:
  name: fanout-{variant}
  description: One shell step fanned out over {n} shards, then one step after it
params:
  shards:
    type: list
    default: {default}
steps:
  - id: copy
    type: shell
    for_each: {for_each}
    as: shard
    with:
      command: "copy-shard --shard {{{{ shard }}}} --to /srv/new/{{{{ shard }}}}"
      verify: "check-shard --shard {{{{ shard }}}} --at /srv/new/{{{{ shard }}}}"
  - id: switch
    type: shell
    with:
      command: "switch-to /srv/new"
      verify: "test -L /srv/current"
"""


def write_runbooks(directory: Path) -> dict[str, Path]:
    ids = [f"shard-{i:04d}" for i in range(1, SHARDS + 1)]
    flow = json.dumps(ids)  # a JSON array is a YAML flow sequence
    variants = {
        "param": {"default": flow, "for_each": '"{{ params.shards }}"'},
        "literal": {"default": "[]", "for_each": flow},
    }
    paths = {}
    for variant, fields in variants.items():
        path = directory / f"fanout-{variant}.yaml"
        path.write_text(RUNBOOK.format(variant=variant, n=SHARDS, **fields))
        paths[variant] = path
    return paths


def check_plan(plan: Any) -> None:
    steps = plan.steps
    assert len(steps) == SHARDS + 1, f"expected {SHARDS + 1} steps, got {len(steps)}"
    assert steps[0].item == "shard-0001", steps[0].item
    assert steps[SHARDS - 1].item == f"shard-{SHARDS:04d}", steps[SHARDS - 1].item
    assert steps[SHARDS].base_id == "switch", steps[SHARDS].base_id


def time_compile(path: Path, runs: int, warmup: int) -> list[float]:
    from drctl.compiler.compile import compile_runbook
    from drctl.compiler.params import ParamInput

    for _ in range(warmup):
        check_plan(compile_runbook(str(path), ParamInput()))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        plan = compile_runbook(str(path), ParamInput())
        samples.append(time.perf_counter() - start)
        check_plan(plan)
    return samples


def time_cli(path: Path, runs: int) -> list[float]:
    argv = [str(DRCTL), "plan", str(path)]
    proc = subprocess.run(
        [*argv, "--format", "json"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"drctl plan failed ({proc.returncode}): {proc.stderr[-500:]}"
    steps = json.loads(proc.stdout)["steps"]
    assert len(steps) == SHARDS + 1, f"CLI plan: expected {SHARDS + 1} steps, got {len(steps)}"
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return samples


def short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3."):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail if marker == "site-packages/" else "stdlib/" + tail.split("/", 1)[-1]
    try:
        return str(Path(filename).resolve().relative_to(ROOT))
    except ValueError:
        return filename


def profile(path: Path) -> tuple[list[list[str]], float]:
    """Top functions by cumulative time for one (warm) compile."""
    from drctl.compiler.compile import compile_runbook
    from drctl.compiler.params import ParamInput

    profiler = cProfile.Profile()
    profiler.enable()
    compile_runbook(str(path), ParamInput())
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][3])
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _) in entries[:TOP]:
        where = func if filename == "~" else f"{short(filename)}:{line}({func})"
        calls = str(nc) if nc == cc else f"{nc}/{cc}"
        rows.append([f"`{where}`", calls, ms(tt), ms(ct)])
    return rows, total


def report(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    results, verdicts = [], []
    with tempfile.TemporaryDirectory(prefix="drctl-fanout-") as tmp:
        paths = write_runbooks(Path(tmp))
        for variant, path in paths.items():
            compile_s = time_compile(path, args.runs, args.warmup)
            cli_s = time_cli(path, args.cli_runs)
            met = median(compile_s) <= GOAL_S
            verdicts.append(met)
            label = {
                "param": '`for_each: "{{ params.shards }}"` (list param)',
                "literal": "literal 1,000-item `for_each` list",
            }[variant]
            results.append(
                [
                    label,
                    ms(median(compile_s)),
                    ms(p90(compile_s)),
                    ms(median(cli_s)),
                    f"{median(compile_s) / (SHARDS + 1) * 1e6:.0f}",
                    "met" if met else "**not met**",
                ]
            )
            print(f"{variant}: compile median {ms(median(compile_s))} ms", flush=True)
        baseline = time_cli_small(args.cli_runs)
        prof_rows, prof_total = profile(paths["param"])

    facts = machine()
    sections = [
        "## Compile fan-out (1,000 shards)",
        "",
        machine_line(facts),
        "",
        f"Reproduce: `.venv/bin/python benchmarks/compile_fanout.py --write`. The runbook "
        f"(generated into a temp dir) has one `shell` step fanned out over {SHARDS:,} shard ids "
        "(`shard-0001`…) with a templated `command` and `verify`, then one step after it: "
        f"{SHARDS + 1:,} plan steps, asserted on every compile and on the CLI's JSON plan. "
        f"Compile: in-process `compile_runbook(path, ParamInput())`, median of {args.runs} after "
        f"{args.warmup} warm-up (imports already done). `drctl plan`: whole command wall time "
        f"(fresh process, text output), median of {args.cli_runs}. Times in ms.",
        "",
        table(
            [
                "variant",
                "compile median",
                "compile p90",
                "`drctl plan` wall",
                "µs/step",
                f"goal ≤ {GOAL_S * 1000:.0f} ms",
            ],
            results,
        ),
        "",
        f"For scale: `drctl plan runbooks/shell-demo.yaml` (6 steps) takes {ms(median(baseline))} ms "
        "wall, so the fan-out's share of the CLI time is the difference.",
        "",
        f"Goal: compile ≤ {GOAL_S} s. Met: **{'yes' if all(verdicts) else 'no'}**.",
        "",
        f"### cProfile of one warm compile (list-param variant, {ms(prof_total)} ms under the profiler)",
        "",
        f"Top {TOP} by cumulative time:",
        "",
        table(["function", "calls", "own ms", "cumulative ms"], prof_rows),
        "",
        f"Script wall time: {time.perf_counter() - started:.0f} s.",
    ]
    return "\n".join(sections)


def time_cli_small(runs: int) -> list[float]:
    argv = [str(DRCTL), "plan", "runbooks/shell-demo.yaml"]
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed compiles (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up compiles (default 2)")
    parser.add_argument("--cli-runs", type=int, default=10, help="timed `drctl plan` runs")
    parser.add_argument("--write", action="store_true", help="rewrite the docs section")
    args = parser.parse_args()
    if importlib.util.find_spec("drctl") is None:
        sys.exit("drctl is not importable: run this with the project's .venv/bin/python")
    text = report(args)
    print(text)
    if args.write:
        print(f"\nwrote {write_section('compile_fanout', text)}")


if __name__ == "__main__":
    main()
