"""A drill under load: the sandbox failed over with the hard fence while pgbench writes.

One real PostgreSQL sandbox (primary + streaming standby on 127.0.0.2 and 127.0.0.3,
port 58340 unless ``--base-port``; BIND9 and sshd beside it), in a temp dir under /tmp,
always torn down. For R rounds (default 3) it runs

    drctl drill RUNBOOK --params-file params.yaml --yes --pgbench-clients 8 \
        --canary-dsn "host=db.ZONE …" --canary-dns-server 127.0.0.1:DNS --report r.json

where RUNBOOK is ``runbooks/sandbox-pg-pair-failover.yaml`` with the hard fence
(``postgres.fence`` ``mode: hard``) in place of the read-only one, and the servers'
tools run on this machine rather than over the sandbox's sshd: lag check, hard fence,
promote, DNS repoint and wait, a write probe through the DNS name, and the old primary
rejoined. The canary and the eight pgbench clients write through the
DNS name; the roles swap every round (the params file follows the live roles).

    .venv/bin/python benchmarks/pg_drill_load.py            # print results
    .venv/bin/python benchmarks/pg_drill_load.py --write    # and rewrite its docs section

Goal (from the issue): RTO ≤ 1 s and RPO 0 under pgbench at 8 clients, with the hard fence.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import DRCTL, ROOT, machine, machine_line, run_measured, table, write_section

FAILOVER = ROOT / "runbooks" / "sandbox-pg-pair-failover.yaml"
BASE_PORT = 58340
ROUNDS = 3
CLIENTS = 8
RTO_GOAL = 1.0  # seconds
RUN_TIMEOUT = 240.0  # seconds, one drill


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def port_free(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: the last run's closed connections (TIME_WAIT) do not hold it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def hard_fence_runbook(path: Path) -> Path:
    text = FAILOVER.read_text()
    fenced = text.replace("with: {mode: read_only}", "with: {mode: hard}", 1)
    if fenced == text:
        sys.exit(f"{FAILOVER} has no read-only fence to replace")
    # The servers' tools run on this machine (as their OS user), not over the sandbox's sshd:
    # drctl runs beside the servers here, as it would on a database host's operator box.
    local = fenced.replace("    ssh: host\n", "")
    path.write_text(local)
    return path


def params(path: Path) -> dict[str, Any]:
    return {
        k: json.loads(v)
        for k, _, v in (line.partition(": ") for line in path.read_text().splitlines())
    }


def drill(
    sandbox_root: Path, runbook: Path, work: Path, env: dict[str, str], n: int
) -> dict[str, Any]:
    """One drill, its report's data (plus the wall time and where it failed over)."""
    p = params(sandbox_root / "params.yaml")
    zone = str(p["dns_zone"]).rstrip(".")
    dsn = f"host=db.{zone} port={p['pg_port']} dbname=postgres user=postgres connect_timeout=2"
    report = work / f"drill-{n}.json"
    done = run_measured(
        [
            str(DRCTL), "drill", str(runbook), "--params-file", str(sandbox_root / "params.yaml"),
            "--yes", "--state", str(work / "state.db"), "--canary-dsn", dsn,
            "--canary-dns-server", f"127.0.0.1:{p['dns_port']}",
            "--pgbench-clients", str(CLIENTS), "--report", str(report),
        ],
        cwd=work, env=env, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    if not report.exists():
        sys.exit(f"drill {n} wrote no report (exit {done.returncode}):\n{done.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(report.read_text())
    data["wall"] = done.elapsed
    data["exit"] = done.returncode
    data["from_to"] = f"{p['primary_host']} → {p['standby_host']}"
    if done.returncode != 0:
        print(done.stderr[-3000:])
    return data


def span(data: dict[str, Any], step: str) -> tuple[float, float] | None:
    """When ``step`` started and ended, in seconds since the run started."""
    for s in data["steps"]:
        if s["id"] == step and s["start"] is not None and s["end"] is not None:
            return float(s["start"]), float(s["end"])
    return None


def after_promote(data: dict[str, Any]) -> float | None:
    """From the promote's end to the canary's first write acknowledged by the new primary."""
    fence, promote = span(data, "fence-old-primary"), span(data, "promote")
    to_new = data["measurement"]["time_to_new_primary"]
    if fence is None or promote is None or to_new is None:
        return None
    return float(to_new) - (promote[1] - fence[0])


def seconds(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[1] - value[0]:.3f}"


def report(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    load_start = load()
    from drctl.sandbox.pair import Sandbox

    for host, port in [
        ("127.0.0.2", args.base_port), ("127.0.0.3", args.base_port),
        ("127.0.0.1", args.base_port + 1), ("127.0.0.1", args.base_port + 2),
    ]:  # fmt: skip
        if not port_free(port, host):
            sys.exit(f"{host}:{port} is taken: pick another --base-port")
    tmp = Path(tempfile.mkdtemp(prefix="drctl-bench-drill-", dir="/tmp"))
    tmp.chmod(0o755)  # the postgres OS user must traverse it
    work = tmp / "work"
    work.mkdir()
    env = dict(os.environ)
    for key in ("DRCTL_FAULT", "DRCTL_STATE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        env.pop(key, None)
    env.update(NO_COLOR="1")
    sandbox = Sandbox.at(tmp / "sandbox", args.base_port, standbys=1)
    runbook = hard_fence_runbook(work / "hard-fence-failover.yaml")
    rows: list[list[str]] = []
    results: list[dict[str, Any]] = []
    try:
        t = time.perf_counter()
        sandbox.up()
        print(f"sandbox up on port {args.base_port} in {time.perf_counter() - t:.1f} s")
        pg_version = subprocess.run(
            ["pgbench", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        for n in range(1, args.rounds + 1):
            sandbox.up()  # running already: this points the params file at the live roles
            data = drill(sandbox.root, runbook, work, env, n)
            results.append(data)
            m, ld = data["measurement"], data.get("load") or {}
            print(
                f"  drill {n}: {data['from_to']} exit {data['exit']}: RTO {m['rto']:.3f} s, "
                f"{m['missing']} of {m['acknowledged']} writes missing; pgbench "
                f"{ld.get('transactions')} transactions, {ld.get('failed')} failed"
            )
            after = after_promote(data)
            rows.append([
                str(n), data["from_to"], f"{m['rto']:.3f}", f"{m['longest_gap']:.3f}",
                f"{(m['time_to_new_primary'] or 0):.3f}", f"{m['missing']} / {m['acknowledged']}",
                str(m.get("discarded_bytes", 0)),
                seconds(span(data, "fence-old-primary")), seconds(span(data, "promote")),
                "-" if after is None else f"{after:.3f}",
                str(ld.get("transactions")), str(ld.get("failed")), str(ld.get("aborted")),
                str(ld.get("tps")), f"{data['wall']:.1f}",
            ])  # fmt: skip
        header = [
            "drill", "failover", "RTO s", "longest gap s", "to new primary s", "missing / acked",
            "discarded B", "fence s", "promote s", "promote end → new primary s", "pgbench tx",
            "failed", "cut off", "tps",
            "wall s",
        ]  # fmt: skip
        rtos = [float(r["measurement"]["rto"]) for r in results]
        missing = sum(int(r["measurement"]["missing"]) for r in results)
        discarded = sum(int(r["measurement"].get("discarded_bytes") or 0) for r in results)
        failed_runs = [r for r in results if r["exit"] != 0]
        rto_met = max(rtos) <= RTO_GOAL
        rpo_met = missing == 0 and discarded == 0
        verdict = (
            f"**Goal RTO ≤ {RTO_GOAL:g} s: {'met' if rto_met else 'MISSED'}** (median "
            f"{statistics.median(rtos):.3f} s, worst {max(rtos):.3f} s over {len(rtos)} drills). "
            f"**Goal RPO 0: {'met' if rpo_met else 'MISSED'}** ({missing} acknowledged canary "
            f"writes missing in all, {discarded} bytes of WAL with committed writes discarded by "
            "the rejoins)."
            + (f" {len(failed_runs)} drill(s) exited non-zero." if failed_runs else "")
        )

        def med(values: list[float | None]) -> str:
            known = [v for v in values if v is not None]
            return f"{statistics.median(known):.3f} s" if known else "-"

        def length(value: tuple[float, float] | None) -> float | None:
            return None if value is None else value[1] - value[0]

        where = (
            "Where the time to the new primary goes (medians): the hard fence step "
            f"{med([length(span(r, 'fence-old-primary')) for r in results])} (its check, the "
            "pg_hba.conf swap and reload, ending the sessions and reading the final WAL "
            "position over the local socket — each a psql run as the server's OS user — and "
            f"its verify), the promote {med([length(span(r, 'promote')) for r in results])}, "
            "and from the promote's end to the canary's first write acknowledged by the new "
            f"primary (the DNS update, the canary's reconnect) {med([after_promote(r) for r in results])}. "
            "The canary keeps writing to the old primary until the fence's reload, so the "
            "longest window with no write is shorter than the time to the new primary."
        )
        parts = [
            "## Drill under load: hard fence, pgbench at 8 clients",
            "",
            machine_line(machine())
            + f" Load average (1-minute) at the start: {load_start}; at the end: {load()}. The "
            "machine is shared (2 CPUs, other sessions' tests and benchmarks running beside "
            "this one); the sandbox's two servers, BIND9, sshd, the canary, pgbench's 8 "
            "clients and drctl all share those CPUs.",
            "",
            "Reproduce: `.venv/bin/python benchmarks/pg_drill_load.py --write`"
            + (f" (here `--rounds {args.rounds}`)" if args.rounds != ROUNDS else "")
            + f". A real PostgreSQL sandbox (`drctl.sandbox.pair.Sandbox`: primary + streaming "
            f"standby on 127.0.0.2 and 127.0.0.3, port {args.base_port}, `fsync = on`; BIND9 and "
            f"sshd on 127.0.0.1) in a temp dir under /tmp, torn down at the end; {pg_version}. "
            f"{len(results)} drills, the roles swapping every drill: `drctl drill` of "
            "`runbooks/sandbox-pg-pair-failover.yaml` with `postgres.fence` `mode: hard` (lag check, "
            "hard fence, promote, DNS repoint and wait, write probe through the DNS name, "
            "rejoin; the servers' tools run on this machine as their OS user, not over the "
            f"sandbox's sshd), `--pgbench-clients {CLIENTS}` (TPC-B, scale 1, schema "
            "`drctl_pgbench`, restarted when the fence cuts its sessions) and the canary both "
            "writing through the DNS name `db.sandbox…`, resolved through BIND9 on every "
            "reconnect.",
            "",
            "RTO: the drill's own figure — the larger of the longest window with no "
            "acknowledged canary write and the time from the first mutating step's start to the "
            "first write acknowledged by the new primary. RPO: acknowledged canary writes "
            "missing on the new primary, and WAL holding committed writes that a rewind "
            "discarded. pgbench's figures are its own summaries, summed over its runs; "
            "'cut off' counts clients whose sessions the fence ended.",
            "",
            verdict,
            "",
            table(header, rows),
            "",
            where,
            "",
            f"Script wall time: {time.perf_counter() - started:.0f} s.",
        ]
        return "\n".join(parts)
    finally:
        sandbox.down()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--write", action="store_true", help="rewrite this section of docs/benchmarks.md"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="drills to run")
    parser.add_argument(
        "--base-port", type=int, default=BASE_PORT, help="sandbox ports N, N+1, N+2"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    if not DRCTL.exists():
        sys.exit(f"{DRCTL} not found: create the venv first (see README.md)")
    if shutil.which("pgbench") is None:
        sys.exit("pgbench not found")
    body = report(args)
    print(body)
    if args.write:
        print(f"wrote {write_section('pg_drill_load', body)}")


if __name__ == "__main__":
    main()
