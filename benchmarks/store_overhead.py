"""State-store overhead: per journaled no-op step, lock acquire and takeover, on every store.

One run measures the three backends side by side on this machine: SQLite (a file in a
temporary directory), PostgreSQL (a fresh schema in the machine's server on
127.0.0.1:5432, as the shared-store tests use) and etcd (a three-member cluster on
loopback, started here and torn down after, through its HTTP gateway).

- Per step: the real CLI runs a runbook of N no-op ``wait`` steps (``duration: 0s``)
  with ``--concurrency 1``, so every step's events go through the store in turn; the
  figure is the slope between N_SMALL and N_LARGE steps (start-up cancels out), median
  of ROUNDS rounds, the stores alternated within each round.
- Lock: ``StateStore.acquire`` + ``release`` of a free key, in-process, median of
  LOCK_SAMPLES; takeover: ``acquire`` of a key whose holder's lease has expired (the
  caller's clock a minute past it), which takes it over in the same transaction.

Goal (issue 17): an etcd-backed step costs at most twice a PostgreSQL-backed one.
Reproduce: ``.venv/bin/python benchmarks/store_overhead.py --write``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import (
    DRCTL,
    ROOT,
    clean_env,
    fanout_runbook,
    machine,
    machine_line,
    median,
    ms,
    run_measured,
    table,
    write_section,
)

sys.path.insert(0, str(ROOT))

N_SMALL, N_LARGE = 20, 120
ROUNDS = 5
LOCK_SAMPLES = 30
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
SECTION = "store-overhead"


@contextlib.contextmanager
def pg_url() -> Iterator[str]:
    """A fresh schema on the machine's PostgreSQL as a --state URL, dropped afterwards."""
    import psycopg

    schema = f"drctl_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def etcd_url(root: Path) -> Iterator[str]:
    """A three-member etcd cluster on loopback, torn down afterwards."""
    from tests.integration.etcd_cluster import EtcdCluster, etcd_binary

    binary = etcd_binary()
    if binary is None:
        raise SystemExit("etcd is not installed (Debian package etcd-server)")
    with EtcdCluster.running(binary, root / "etcd") as cluster:
        yield cluster.url(f"bench-{uuid.uuid4().hex[:8]}")


def run_once(url: str, runbook: Path, work: Path) -> float:
    """Seconds for one real `drctl run` of ``runbook`` on the store at ``url``."""
    done = run_measured(
        [str(DRCTL), "run", str(runbook), "--state", url, "--concurrency", "1"],
        cwd=work, env=clean_env(), timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(
            f"drctl run failed on {url.split('?', maxsplit=1)[0]}: {done.stderr[-500:]}"
        )
    return done.elapsed


def per_step(urls: dict[str, str], work: Path) -> dict[str, float]:
    """Seconds per journaled no-op step on each store (slope between the two sizes)."""
    small, large = work / "small.yaml", work / "large.yaml"
    small.write_text(fanout_runbook("bench-small", [f"s{i}" for i in range(N_SMALL)]))
    large.write_text(fanout_runbook("bench-large", [f"s{i}" for i in range(N_LARGE)]))
    slopes: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(ROUNDS):
        for name, url in urls.items():
            t_small = run_once(url, small, work)
            t_large = run_once(url, large, work)
            slopes[name].append((t_large - t_small) / (N_LARGE - N_SMALL))
    return {name: median(s) for name, s in slopes.items()}


def timed(fn: Callable[[], object], samples: int) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return median(times)


def lock_times(url: str) -> tuple[float, float]:
    """Median seconds to acquire+release a free lock, and to take over an expired one."""
    from drctl.state.open import open_store

    store = open_store(url)
    try:
        counter = iter(range(10**6))

        def acquire_release() -> None:
            got = store.acquire(f"free-{next(counter)}", "r", "u", "h", 1, 30.0, time.time())
            store.release(got.lease)

        def takeover() -> None:
            key, now = f"dead-{next(counter)}", time.time()
            store.acquire(key, "r1", "u", "h", 1, 30.0, now)
            started = time.perf_counter()
            got = store.acquire(key, "r2", "u", "h", 2, 30.0, now + 60.0)
            took[0].append(time.perf_counter() - started)
            assert got.took_over is not None, "the expired lease was not taken over"

        took: list[list[float]] = [[]]
        acquire = timed(acquire_release, LOCK_SAMPLES)
        for _ in range(LOCK_SAMPLES):
            takeover()
        return acquire, median(took[0])
    finally:
        store.close()


def report() -> str:
    with tempfile.TemporaryDirectory(prefix="drctl-store-bench-") as tmp:
        work = Path(tmp)
        with pg_url() as pg, etcd_url(work) as etcd:
            urls = {"SQLite": str(work / "state.db"), "PostgreSQL": pg, "etcd (3 members)": etcd}
            steps = per_step(urls, work)
            locks = {name: lock_times(url) for name, url in urls.items()}
    facts = machine()
    rows = [
        [name, ms(steps[name]), ms(locks[name][0]), ms(locks[name][1])]
        for name in ("SQLite", "PostgreSQL", "etcd (3 members)")
    ]
    ratio = steps["etcd (3 members)"] / steps["PostgreSQL"]
    verdict = "met" if ratio <= 2.0 else "NOT met"
    return "\n\n".join(
        [
            "## State stores: per-step overhead, lock acquire and takeover",
            machine_line(facts),
            f"Reproduce: `.venv/bin/python benchmarks/store_overhead.py --write`. Per step: the "
            f"slope between real `drctl run --concurrency 1` runs of {N_SMALL} and {N_LARGE} "
            f"no-op `wait` steps, median of {ROUNDS} rounds (stores alternated). Lock: "
            f"in-process `acquire` + `release` of a free key and `acquire` of a key whose "
            f"holder's lease expired (a takeover), median of {LOCK_SAMPLES}. SQLite in a temp "
            "directory; PostgreSQL on 127.0.0.1:5432 (a fresh schema); etcd: three members on "
            "loopback through the HTTP gateway. Times in ms.",
            table(
                ["store", "per journaled no-op step", "lock acquire + release", "lock takeover"],
                rows,
            ),
            f"Goal: an etcd-backed step ≤ 2× a PostgreSQL-backed one — {verdict} "
            f"(etcd / PostgreSQL = {ratio:.2f}×).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--write", action="store_true", help="rewrite this section of the doc")
    args = parser.parse_args()
    body = report()
    print(body)
    if args.write:
        print(f"written to {write_section(SECTION, body)}")


if __name__ == "__main__":
    main()
