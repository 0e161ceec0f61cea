"""The three-node sandbox failover: one `drctl run` against the same operations scripted.

One real three-node sandbox (a primary and two streaming standbys on 127.0.0.2-.4, BIND9
and sshd beside them; port 57200 unless ``--base-port``) in a temp dir under /tmp, always
torn down. For R rounds (default 3), interleaved, alternating which goes first, it fails
the live primary over with

* DRCTL: ``drctl run failover.yaml --params-file topology.yaml --yes --state TMP/state.db``
  where failover.yaml is ``runbooks/sandbox-pg-failover.yaml`` up to its verified write
  (choose → hard fence → approve → promote the choice → the other follows → DNS → wait
  for the name → write through it), acting on the nodes locally (no ``ssh:``) as the
  script does;
* RAW: ``benchmarks/peers/pg_three_node_failover_raw.sh`` — the same operations with psql,
  nsupdate and dig;

timing each whole command, wall clock. Between timed failovers, untimed, the old primary
rejoins the new one (``drctl run`` of the runbook's ``postgres.rejoin`` step alone), so
the roles move every run; before each run ``Sandbox.up`` re-points the topology file at
the live roles and every standby streams from the primary and has replayed its WAL.

    .venv/bin/python benchmarks/pg_three_node_failover.py            # print results
    .venv/bin/python benchmarks/pg_three_node_failover.py --write    # and its docs section
    .venv/bin/python benchmarks/pg_three_node_failover.py --profile  # and where drctl's time goes

Goal (issue 15): drctl's whole command ≤ 1.5× the script's time (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    DRCTL,
    ROOT,
    VENV_PY,
    cache_bytecode,
    machine,
    machine_line,
    median,
    table,
    write_section,
)

if TYPE_CHECKING:
    from drctl.sandbox.pair import Sandbox

RAW = ROOT / "benchmarks" / "peers" / "pg_three_node_failover_raw.sh"
RUNBOOK = ROOT / "runbooks" / "sandbox-pg-failover.yaml"
BASE_PORT = 57200
ROUNDS = 3
GOAL = 1.5
RUN_TIMEOUT = 180.0  # seconds, any one command
SETTLE = 60.0  # seconds for the standbys to catch up before a run
POLL = 0.05  # seconds between polls while settling
SECTION = "pg-three-node-failover"


@dataclass(frozen=True)
class Sample:
    kind: str
    old: str
    new: str
    wall: float
    #: drctl: seconds before run_started (start-up, compile, lock) and after run_finished.
    outside: float = 0.0
    #: drctl: each step's duration as journaled (base step id: seconds).
    steps: dict[str, float] = field(default_factory=dict)


def bench_runbooks(work: Path) -> tuple[Path, Path]:
    """The failover up to its verified write, and the rejoin step alone; nodes acted on locally."""
    text = RUNBOOK.read_text()
    head, steps = text.split("\nsteps:\n", 1)
    head = head.replace("    ssh: host\n", "")
    failover_steps = steps.split("  - id: rejoin-old-primary\n", 1)[0]
    failover = work / "failover.yaml"
    failover.write_text(head + "\nsteps:\n" + failover_steps)
    rejoin = work / "rejoin.yaml"
    rejoin.write_text(
        head.replace("params:\n", "params:\n  new_primary: {type: str, required: true}\n", 1)
        + "\nsteps:\n  - id: rejoin\n    type: postgres.rejoin\n"
        '    target: "{{ params.primary_node }}"\n'
        '    with: {new_primary: "{{ params.new_primary }}"}\n'
    )
    return failover, rejoin


class Bench:
    def __init__(self, sandbox: Sandbox, work: Path, env: dict[str, str]) -> None:
        self.sandbox, self.work, self.env = sandbox, work, env
        self.last: subprocess.CompletedProcess[str] | None = None
        self.failover_yaml, self.rejoin_yaml = bench_runbooks(work)
        self.state = work / "state.db"
        self.topology = sandbox.root / "topology.yaml"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=self.env, cwd=self.work,
            timeout=RUN_TIMEOUT, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(
                f"{' '.join(argv[:3])} … failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done

    def settle(self) -> str:
        """Point the files at the live roles; wait until every standby has replayed the primary's WAL."""
        import psycopg

        status = self.sandbox.up()
        primary = status.primary
        assert primary is not None, "no single primary"
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline:
            with psycopg.connect(primary.dsn, autocommit=True) as conn:
                end = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
                rows = conn.execute(
                    "SELECT count(*) FROM pg_stat_replication "
                    "WHERE state = 'streaming' AND replay_lsn >= %s",
                    end,
                ).fetchone()
            if rows is not None and rows[0] == len(status.nodes) - 1:
                return primary.name
            time.sleep(POLL)
        sys.exit(f"the standbys did not catch up with {primary.name} within {SETTLE:.0f}s")

    def failover(self, kind: str, wrap: list[str] | None = None) -> Sample:
        """One failover of the live primary; ``wrap``: drctl's argv starts with this
        (a profiler, ``python -X importtime``) instead of the console script."""
        old = self.settle()
        status = self.sandbox.status()
        if kind == "drctl":
            argv = [*(wrap or [str(DRCTL)]), "run", str(self.failover_yaml), "--params-file",
                    str(self.topology), "--yes", "--state", str(self.state)]  # fmt: skip
        else:
            node = next(n for n in self.sandbox.nodes if n.name == old)
            others = [f"{n.name}:{n.host}" for n in status.nodes if n.name != old]
            argv = ["bash", str(RAW), str(node.port), str(status.dns.port),
                    str(self.sandbox.named.secret_file), node.host, str(node.data_dir),
                    str(node.socket_dir), *others]  # fmt: skip
        spawned = time.time()
        started = time.perf_counter()
        self.last = self._run(argv)
        wall = time.perf_counter() - started
        outside, steps = self._journaled(spawned, wall) if kind == "drctl" else (0.0, {})
        after = self.sandbox.status()
        primaries = [n.name for n in after.nodes if n.role == "primary"]
        new = next((p for p in primaries if p != old), None)
        if new is None:
            sys.exit(f"{kind}: no new primary after the failover of {old} ({primaries})")
        # Untimed: the old primary rejoins (pg_rewind), so the next run has three nodes.
        self._run([str(DRCTL), "run", str(self.rejoin_yaml), "--params-file", str(self.topology),
                   "-p", f"new_primary={new}", "--yes", "--state", str(self.state)])  # fmt: skip
        return Sample(kind, old, new, wall, outside, steps)

    def _journaled(self, spawned: float, wall: float) -> tuple[float, dict[str, float]]:
        """From the last run's journal: time outside the run, and each step's duration."""
        listed = self._run([str(DRCTL), "runs", "--output", "json", "--state", str(self.state)])
        run_id = str(json.loads(listed.stdout)[0]["id"])  # a JSON list, newest first
        log = self._run([str(DRCTL), "log", run_id, "--output", "json", "--state", str(self.state)])
        events = [json.loads(line) for line in log.stdout.splitlines() if line.strip()]
        first = next(e["ts"] for e in events if e["kind"] == "run_started")
        last = next(e["ts"] for e in events if e["kind"] == "run_finished")
        steps = {
            str(e["step"]).split("[", 1)[0]: float(e["data"]["duration"])
            for e in events
            if e["kind"] == "step_succeeded" and e["data"].get("duration") is not None
        }
        return wall - (last - first), steps


def profile(bench: Bench) -> None:
    """Print where one more drctl failover's time goes: cProfile (all threads) and imports.

    Untimed runs, after the timed ones; printed only (profiling slows Python code, not
    the servers, so these are for finding costs, not for the figures).
    """
    import pstats

    from engine_overhead import PROFILE, TOP, top_costs, total_of
    from pg_failover import parse_importtime

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "drctl.prof"
        bench.failover("drctl", [str(VENV_PY), "-c", PROFILE, str(out)])
        stats = pstats.Stats(str(out))
    connects, _ = total_of(stats, "psycopg/connection.py", "connect")
    spawned, _ = total_of(stats, "drctl/steps/process.py", "run_command")
    print(f"\n### cProfile of one drctl failover (all threads, merged; ms)\n\n"
          f"psycopg connections opened: {connects}; local processes run: {spawned}.\n")  # fmt: skip
    print(table(["function", "calls", "own", "cumulative"], top_costs(stats, "own", TOP)))
    print()
    print(table(["function", "calls", "own", "cumulative"], top_costs(stats, "cum", 2 * TOP)))
    bench.failover("drctl", [str(VENV_PY), "-X", "importtime", str(DRCTL)])
    assert bench.last is not None
    rows = parse_importtime(bench.last.stderr)
    lazy = [r for r in rows if r[1] == 0]  # depth 0: imported by a function, at run time
    print(f"\n### Imports of one drctl failover (-X importtime): {len(rows)} modules, "
          f"{sum(r[2] for r in rows) * 1000:.1f} ms own time in all\n")  # fmt: skip
    print(table(["module (depth 0)", "cumulative ms", "self ms"],
                [[f"`{m}`", f"{c * 1000:.1f}", f"{sf * 1000:.1f}"]
                 for m, _, sf, c in sorted(lazy, key=lambda r: -r[3])[:2 * TOP]]))  # fmt: skip


def pg_version(sandbox: Sandbox) -> str:
    out = subprocess.run(
        [str(sandbox.nodes[0].bin_dir / "postgres"), "--version"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    found = re.search(r"\d+(\.\d+)?", out)
    return found.group(0) if found else "?"


def report(args: argparse.Namespace) -> str:
    from drctl.sandbox.pair import Sandbox

    tmp = Path(tempfile.mkdtemp(prefix="drctl-bench-pg3-", dir="/tmp"))
    tmp.chmod(0o755)  # the postgres OS user must traverse it
    work = tmp / "work"
    work.mkdir()
    env = dict(os.environ)
    for key in ("DRCTL_FAULT", "DRCTL_STATE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        env.pop(key, None)
    env.update(NO_COLOR="1", PGCONNECT_TIMEOUT="5")
    sandbox = Sandbox.at(tmp / "sandbox", args.base_port, standbys=2)
    load_start = os.getloadavg()[0]
    compiled = cache_bytecode()
    try:
        t = time.perf_counter()
        sandbox.up()
        print(f"sandbox up on port {args.base_port} in {time.perf_counter() - t:.1f} s")
        bench = Bench(sandbox, work, env)
        for kind in ("raw", "drctl"):
            s = bench.failover(kind)
            print(f"  warm-up: {kind:5} {s.old} → {s.new} {s.wall:.3f} s")
        samples: list[Sample] = []
        for r in range(args.rounds):
            for kind in ("raw", "drctl") if r % 2 == 0 else ("drctl", "raw"):
                s = bench.failover(kind)
                samples.append(s)
                print(f"  round {r + 1}: {kind:5} {s.old} → {s.new} {s.wall:.3f} s")
        version = pg_version(sandbox)
        if args.profile:
            profile(bench)
    finally:
        sandbox.down()
        shutil.rmtree(tmp, ignore_errors=True)
    raw = [s.wall for s in samples if s.kind == "raw"]
    ours = [s.wall for s in samples if s.kind == "drctl"]
    ratio = median(ours) / median(raw)
    met = "met" if ratio <= GOAL else "**not met**"
    rows = [
        [name, f"{median(xs):.3f}", f"{min(xs):.3f}", f"{max(xs):.3f}", str(len(xs))]
        for name, xs in (("RAW (psql, nsupdate, dig script)", raw), ("DRCTL (`drctl run`)", ours))
    ]
    runs = [s for s in samples if s.kind == "drctl"]
    step_rows = [["outside the run (start-up, compile, lock; exit)",
                  f"{median([s.outside for s in runs]):.3f}"]]  # fmt: skip
    for step in runs[0].steps:
        step_rows.append([f"`{step}`", f"{median([s.steps.get(step, 0.0) for s in runs]):.3f}"])
    parts = [
        "## Three-node sandbox failover: `drctl run` vs the same operations scripted",
        "",
        machine_line(machine())
        + f" Load average (1-minute) at the start: {load_start:.2f}; at the end: "
        f"{os.getloadavg()[0]:.2f}. The machine is shared; its other work moves these numbers.",
        "",
        "Reproduce: `.venv/bin/python benchmarks/pg_three_node_failover.py --write`"
        + (f" (here `--rounds {args.rounds}`)" if args.rounds != ROUNDS else "")
        + f". A real PostgreSQL {version} three-node sandbox (`drctl.sandbox.pair.Sandbox`, "
        f"`standbys=2`: 127.0.0.2-.4, port {args.base_port}, BIND9 on +1) in a temp dir "
        f"under /tmp, torn down at the end. {len(raw)} timed failovers of each, interleaved "
        "(which goes first alternates), after one untimed warm-up of each. Every run fails "
        "over the live primary and is checked (a new primary); then, untimed, the old "
        "primary rejoins the new one with `postgres.rejoin` (pg_rewind), so the roles move "
        "every run. Before each run the topology file names the live roles and both "
        "standbys stream and have replayed all of the primary's WAL; " + compiled + ".",
        "",
        "- DRCTL: `drctl run failover.yaml --params-file topology.yaml --yes --state "
        "TMP/state.db`, failover.yaml being `runbooks/sandbox-pg-failover.yaml` up to its "
        "verified write: `postgres.choose_primary` → `postgres.fence` (`mode: hard`) → "
        "`approve` → `postgres.promote` of the target chosen at run time → `postgres.follow` "
        "fanned out over the other candidates → `rfc2136.update` → `dns.resolve` → "
        "`postgres.write_probe` through the name; nodes acted on locally (no `ssh:`), as the "
        "script does. Whole command, wall clock: start-up, compile, lock, journal (SQLite, "
        "fsynced), every step's check/apply/verify, exit.",
        "- RAW: `bash benchmarks/peers/pg_three_node_failover_raw.sh …` — the received LSN of "
        "both standbys, the larger wins; pg_hba.conf rewritten to local and replication "
        "only, reload, client sessions ended, final WAL position read; wait until the "
        "chosen standby replays it; `pg_promote(true, 60)`; the other standby's "
        "`primary_conninfo` set by ALTER SYSTEM + reload, wait until it streams from the "
        "new primary; a TSIG-signed `nsupdate`, `dig` until the name answers the new "
        "address; a row written and read back through that address. Whole script, wall "
        "clock.",
        "",
        table(["", "median s", "min s", "max s", "runs"], rows),
        "",
        f"drctl / script (medians): **{ratio:.2f}×** — goal ≤ {GOAL}×: {met}.",
        "",
        "Where drctl's time goes (medians over its timed runs; steps as journaled, the "
        "rest is the journal's own writes and the scheduler):",
        "",
        table(["part", "s"], step_rows),
    ]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--base-port", type=int, default=BASE_PORT)
    parser.add_argument(
        "--write", action="store_true", help="rewrite its docs/benchmarks.md section"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then print a cProfile and an -X importtime of one more drctl failover",
    )
    args = parser.parse_args()
    text = report(args)
    print(text)
    if args.write:
        print(f"wrote {write_section(SECTION, text)}")


if __name__ == "__main__":
    main()
