"""Cold start: wall-clock start-up of drctl commands next to a bare typer app and Ansible.

Every run is a fresh process (subprocess + time.perf_counter). After warm-up runs, the
rows are measured round-robin in a shuffled order each round, so drift on the machine
lands on every row alike. Also records which heavy modules each command imports and
the largest import costs of ``drctl validate`` (from ``python -X importtime``).

    .venv/bin/python benchmarks/cold_start.py            # print results
    .venv/bin/python benchmarks/cold_start.py --write    # and rewrite its docs section

Ansible (the peer tool) lives in its own venv, /tmp/drctl-bench-peers, created on demand;
it is never installed into the project's .venv.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    ANSIBLE,
    DRCTL,
    PEERS_VENV,
    ROOT,
    VENV_PY,
    ensure_peers,
    machine,
    machine_line,
    median,
    ms,
    p90,
    table,
    write_section,
)

HELLO = ROOT / "benchmarks" / "peers" / "hello_typer.py"
GOAL = 1.3
HEAVY = (
    "pydantic",
    "jinja2",
    "yaml",
    "rich",
    "psycopg",
    "pymongo",
    "boto3",
    "botocore",
    "paramiko",
)

# Runs a command in-process and, at exit (also after sys.exit), dumps sys.modules to a file.
PROBE = """
import atexit, json, runpy, sys
out, target = sys.argv[1], sys.argv[2]
sys.argv = [target, *sys.argv[3:]]
def _dump():
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(_dump)
if target == "drctl":
    from drctl.cli.app import main
    main()
else:
    runpy.run_path(target, run_name="__main__")
"""
DRCTL_MAIN = "from drctl.cli.app import main; main()"
IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


@dataclass
class Row:
    key: str
    label: str
    argv: list[str]
    note: str = ""
    samples: list[float] = field(default_factory=list)
    skipped: str = ""


def rows(ansible: Path | None, ansible_note: str) -> list[Row]:
    py, hello = str(VENV_PY), str(HELLO)
    out = [
        Row("python", "`python -c pass` (interpreter floor)", [py, "-c", "pass"]),
        Row("hello_help", "hello_typer.py `--help` (typer + rich)", [py, hello, "--help"]),
        Row("hello_run", "hello_typer.py `world` (runs the command)", [py, hello, "world"]),
        Row("drctl_help", "`drctl --help`", [str(DRCTL), "--help"]),
        Row(
            "validate_gf",
            "`drctl validate runbooks/generic-failover.yaml`",
            [str(DRCTL), "validate", "runbooks/generic-failover.yaml"],
        ),
        Row(
            "validate_sd",
            "`drctl validate runbooks/shell-demo.yaml`",
            [str(DRCTL), "validate", "runbooks/shell-demo.yaml"],
        ),
    ]
    out.append(
        Row(
            "ansible",
            "`ansible-playbook --version` (ansible-core)",
            [str(ANSIBLE), "--version"],
            note=ansible_note,
            skipped="" if ansible else ansible_note,
        )
    )
    return out


def ensure_ansible() -> tuple[Path | None, str]:
    """ansible-playbook from the peers venv (created if missing), and what to say about it."""
    note, _chaos = ensure_peers()
    if not ANSIBLE.exists():
        return None, note
    return ANSIBLE, f"{note} in {PEERS_VENV}"


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return time.perf_counter() - start, proc.returncode


def measure(table_rows: list[Row], runs: int, warmup: int, env: dict[str, str]) -> None:
    live = [r for r in table_rows if not r.skipped]
    for row in live:
        for _ in range(warmup):
            _, rc = run_once(row.argv, env)
            if rc != 0:
                row.skipped = f"skipped: exit status {rc} during warm-up"
                break
    live = [r for r in live if not r.skipped]
    for i in range(runs):
        order = live[:]
        random.Random(i).shuffle(order)
        for row in order:
            elapsed, _ = run_once(row.argv, env)
            row.samples.append(elapsed)


def modules_loaded(target: str, args: list[str], env: dict[str, str]) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modules.json"
        subprocess.run(
            [str(VENV_PY), "-c", PROBE, str(out), target, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return json.loads(out.read_text()) if out.exists() else []


def import_costs(args: list[str], env: dict[str, str], repeats: int = 5) -> dict[str, list[int]]:
    """Per module: [median self µs, median cumulative µs, nesting depth], over ``repeats`` runs."""
    seen: dict[str, tuple[list[int], list[int], int]] = {}
    for _ in range(repeats):
        proc = subprocess.run(
            [str(VENV_PY), "-X", "importtime", "-c", DRCTL_MAIN, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        for line in proc.stderr.splitlines():
            m = IMPORTTIME.match(line)
            if m:
                own, cum, indent, name = int(m[1]), int(m[2]), m[3], m[4]
                entry = seen.setdefault(name, ([], [], (len(indent) - 1) // 2))
                entry[0].append(own)
                entry[1].append(cum)
    return {
        name: [int(median(own)), int(median(cum)), depth]
        for name, (own, cum, depth) in seen.items()
    }


def package_of(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "drctl" else parts[0]


def report(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPROFILEIMPORTTIME")}
    env["COLUMNS"] = "100"
    ansible, ansible_note = (None, "skipped: --no-peers") if args.no_peers else ensure_ansible()
    table_rows = rows(ansible, ansible_note)
    print(f"measuring {args.runs} runs per row after {args.warmup} warm-up runs...")
    measure(table_rows, args.runs, args.warmup, env)
    by_key = {r.key: r for r in table_rows}

    result_rows = []
    for r in table_rows:
        if r.skipped:
            result_rows.append([r.label, "–", "–", "–", r.skipped])
        else:
            note = r.note if r.key == "ansible" else ""
            result_rows.append(
                [r.label, ms(median(r.samples)), ms(p90(r.samples)), ms(min(r.samples)), note]
            )

    def ratio(key: str, base: str) -> float | None:
        a, b = by_key[key], by_key[base]
        if a.skipped or b.skipped:
            return None
        return median(a.samples) / median(b.samples)

    ratio_rows, verdicts = [], []
    for key, label in (
        ("drctl_help", "`drctl --help`"),
        ("validate_gf", "`drctl validate` generic-failover"),
        ("validate_sd", "`drctl validate` shell-demo"),
    ):
        vs_help, vs_run = ratio(key, "hello_help"), ratio(key, "hello_run")
        met = vs_help is not None and vs_help <= GOAL
        verdicts.append(met)
        ratio_rows.append(
            [
                label,
                f"{vs_help:.2f}×" if vs_help is not None else "–",
                f"{vs_run:.2f}×" if vs_run is not None else "–",
                "met" if met else "**not met**",
            ]
        )

    probes = [
        ("`drctl --help`", "drctl", ["--help"]),
        (
            "`drctl validate` generic-failover",
            "drctl",
            ["validate", "runbooks/generic-failover.yaml"],
        ),
        ("`drctl validate` shell-demo", "drctl", ["validate", "runbooks/shell-demo.yaml"]),
        ("`drctl plan` shell-demo", "drctl", ["plan", "runbooks/shell-demo.yaml"]),
        ("hello_typer.py `--help`", str(HELLO), ["--help"]),
        ("hello_typer.py `world`", str(HELLO), ["world"]),
    ]
    module_rows = []
    for label, target, argv in probes:
        loaded = modules_loaded(target, argv, env)
        present = {m.split(".")[0] for m in loaded}
        marks = ["yes" if h in present else "–" for h in HEAVY]
        module_rows.append([label, *marks, str(len(loaded))])

    costs = import_costs(["validate", "runbooks/generic-failover.yaml"], env)
    total_self = sum(c[0] for c in costs.values())
    by_cum = sorted(costs.items(), key=lambda kv: -kv[1][1])[:10]
    by_self = sorted(costs.items(), key=lambda kv: -kv[1][0])[:10]
    packages: dict[str, int] = {}
    for name, (own, _, _) in costs.items():
        packages[package_of(name)] = packages.get(package_of(name), 0) + own
    by_pkg = sorted(packages.items(), key=lambda kv: -kv[1])[:10]
    validate_wall = median(by_key["validate_gf"].samples) if by_key["validate_gf"].samples else 0

    def us(v: int) -> str:
        return f"{v / 1000:.1f}"

    facts = machine()
    sections = [
        "## Cold start",
        "",
        machine_line(facts),
        "",
        f"Reproduce: `.venv/bin/python benchmarks/cold_start.py --write` ({args.runs} runs per row "
        f"after {args.warmup} warm-up runs, each a fresh process; rows interleaved in a shuffled "
        "order each round). Times in ms.",
        "",
        table(["command", "median", "p90", "min", "note"], result_rows),
        "",
        f"Goal (from the issue): drctl start-up ≤ {GOAL}× the bare typer + rich hello-world "
        "(`--help`). The last column compares with the hello-world actually running its "
        "command, which in this typer version also imports pydantic (typer's parameter "
        "coercion uses it).",
        "",
        table(
            ["drctl command", "÷ hello `--help`", "÷ hello `world`", f"goal ≤ {GOAL}×"], ratio_rows
        ),
        "",
        f"Goal met for all three: **{'yes' if all(verdicts) else 'no'}**.",
        "",
        "### Heavy modules imported (sys.modules at exit)",
        "",
        table(["command", *HEAVY, "modules"], module_rows),
        "",
        "### Import costs of `drctl validate runbooks/generic-failover.yaml`",
        "",
        f"`python -X importtime`, median of 5 runs, ms. Sum of all imports' own time: "
        f"{us(total_self)} ms of a {ms(validate_wall)} ms median wall time.",
        "",
        "Top 10 by cumulative time (a module plus everything it imported first; nested rows "
        "overlap, depth 0 = imported lazily from a function):",
        "",
        table(
            ["module", "depth", "cumulative", "self"],
            [[f"`{n}`", str(c[2]), us(c[1]), us(c[0])] for n, c in by_cum],
        ),
        "",
        "Top 10 by own (self) time:",
        "",
        table(
            ["module", "self", "cumulative"], [[f"`{n}`", us(c[0]), us(c[1])] for n, c in by_self]
        ),
        "",
        "Own time summed per package (drctl split by subpackage):",
        "",
        table(["package", "self total"], [[f"`{p}`", us(v)] for p, v in by_pkg]),
        "",
        f"Script wall time: {time.perf_counter() - started:.0f} s.",
    ]
    return "\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per row (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs per row (default 3)")
    parser.add_argument("--no-peers", action="store_true", help="skip the Ansible row")
    parser.add_argument("--write", action="store_true", help="rewrite the docs section")
    args = parser.parse_args()
    if not DRCTL.exists():
        sys.exit(f"{DRCTL} not found: create the venv first (see README.md)")
    text = report(args)
    print(text)
    if args.write:
        print(f"\nwrote {write_section('cold_start', text)}")


if __name__ == "__main__":
    main()
