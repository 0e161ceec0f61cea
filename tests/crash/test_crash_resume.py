"""Kill -9 a real drctl at every journal event boundary, resume, and check each effect
happened exactly once; and ten runs started at once on one state file: one wins.

Every drctl here is a fresh ``python -m drctl`` in its own temporary directory and
state file; the fault points come from ``DRCTL_FAULT`` (drctl/engine/faults.py).
Crash points run two or three at a time so the module stays within its time budget.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.crash, pytest.mark.timeout(150)]

#: Bound on any one drctl process; a healthy one takes well under a second.
PROC_TIMEOUT = 30.0
WORKERS = max(2, min(3, os.cpu_count() or 2))

_HEADER = """\
apiVersion: drctl/v1
kind: Runbook
metadata:
  name: {name}
steps:
"""


def _shell(step_id: str, line: str) -> str:
    return (
        f"  - id: {step_id}\n"
        "    type: shell\n"
        f"    with: {{command: \"echo {line} >> 'EFFECTS'\", verify: \"grep -qx {line} 'EFFECTS'\"}}\n"
    )


@dataclass(frozen=True)
class Variant:
    """A runbook whose shell steps each append one unique line to EFFECTS."""

    name: str
    yaml: str
    run_args: tuple[str, ...]
    step_ids: tuple[str, ...]
    #: The effects file must read as these groups in this order, each group in any order.
    groups: tuple[tuple[str, ...], ...]
    #: The line each shell step appends (the approve step appends none).
    lines: dict[str, str]
    #: Journal events of a clean run: what the crash loop must cover.
    events: int
    #: Steps killed with ``after-apply:STEP``.
    after_apply: tuple[str, ...]
    #: Most steps a clean run has started and not finished at once: (at least, at most).
    overlap: tuple[int, int]


SEQUENTIAL = Variant(
    name="sequential",
    yaml=_HEADER.format(name="crash-seq")
    + _shell("a", "step-a")
    + _shell("b", "step-b")
    + "  - id: go\n    type: approve\n    with: {message: carry on?}\n"
    + _shell("c", "step-c")
    + _shell("d", "step-d"),
    run_args=("--yes",),
    step_ids=("a", "b", "go", "c", "d"),
    groups=(("step-a",), ("step-b",), ("step-c",), ("step-d",)),
    lines={s: f"step-{s}" for s in "abcd"},
    # run_started; 4 shell steps x (started, succeeded); go: granted, started, succeeded;
    # run_finished.
    events=1 + 4 * 2 + 3 + 1,
    after_apply=("a", "b", "go", "c", "d"),
    overlap=(1, 1),
)

SHARDS = ("a", "b", "c", "d", "e", "f")
FAN_OUT = Variant(
    name="fan-out",
    yaml=(
        _HEADER.format(name="crash-fan")
        + _shell("pre", "pre")
        + "  - id: fan\n"
        + "    type: shell\n"
        + "    for_each: [a, b, c, d, e, f]\n"
        + "    as: shard\n"
        + "    with:\n"
        + "      command: \"echo fan-{{ shard }} >> 'EFFECTS'\"\n"
        + "      verify: \"grep -qx fan-{{ shard }} 'EFFECTS'\"\n"
        + _shell("post", "post")
    ),
    run_args=("--yes", "--concurrency", "4"),
    step_ids=("pre", *(f"fan[{s}]" for s in SHARDS), "post"),
    groups=(("pre",), tuple(f"fan-{s}" for s in SHARDS), ("post",)),
    lines={"pre": "pre", "post": "post"} | {f"fan[{s}]": f"fan-{s}" for s in SHARDS},
    # run_started; 8 step instances x (started, succeeded); run_finished.
    events=1 + 8 * 2 + 1,
    after_apply=("pre", "fan[c]", "post"),
    overlap=(2, 4),
)

WIDE = tuple("abcdefgh")
#: All shards at once: their intents and outcomes reach the store together, so they are
#: committed in shared transactions (group commit) and a kill lands inside such a group.
GROUP_COMMIT = Variant(
    name="group-commit",
    yaml=(
        _HEADER.format(name="crash-group")
        + _shell("pre", "pre")
        + "  - id: wide\n"
        + "    type: shell\n"
        + f"    for_each: [{', '.join(WIDE)}]\n"
        + "    as: shard\n"
        + "    with:\n"
        + "      command: \"echo wide-{{ shard }} >> 'EFFECTS'\"\n"
        + "      verify: \"grep -qx wide-{{ shard }} 'EFFECTS'\"\n"
        + _shell("post", "post")
    ),
    run_args=("--yes", "--concurrency", str(len(WIDE))),
    step_ids=("pre", *(f"wide[{s}]" for s in WIDE), "post"),
    groups=(("pre",), tuple(f"wide-{s}" for s in WIDE), ("post",)),
    lines={"pre": "pre", "post": "post"} | {f"wide[{s}]": f"wide-{s}" for s in WIDE},
    # run_started; 10 step instances x (started, succeeded); run_finished.
    events=1 + 10 * 2 + 1,
    after_apply=("wide[a]", "wide[h]"),
    overlap=(2, len(WIDE)),
)

VARIANTS = [
    pytest.param(SEQUENTIAL, id="sequential"),
    pytest.param(FAN_OUT, id="fan-out"),
    pytest.param(GROUP_COMMIT, id="group-commit"),
]


# -- running the real drctl ---------------------------------------------------------


def _env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DRCTL_FAULT", "DRCTL_STATE")}
    if fault is not None:
        env["DRCTL_FAULT"] = fault
    return env


def drctl(workdir: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m drctl ARGS`` in ``workdir`` against its state file, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "drctl", *args, "--state", str(workdir / "state.db")],
        capture_output=True,
        text=True,
        env=_env(fault),
        cwd=workdir,
        timeout=PROC_TIMEOUT,
        check=False,
    )


@dataclass
class Workdir:
    path: Path
    runbook: Path
    effects: Path
    #: The run's id once ``drctl status`` has shown it.
    run_id: str | None = None


def setup(root: Path, variant: Variant, label: str) -> Workdir:
    """A fresh directory with the variant's runbook, a new state file and no effects yet."""
    path = root / label.replace(":", "-").replace("[", "-").replace("]", "")
    path.mkdir(parents=True)
    effects = path / "effects.txt"
    runbook = path / "runbook.yaml"
    runbook.write_text(variant.yaml.replace("EFFECTS", str(effects)), encoding="utf-8")
    return Workdir(path, runbook, effects)


def effect_lines(w: Workdir) -> list[str]:
    return w.effects.read_text(encoding="utf-8").splitlines() if w.effects.exists() else []


def journal(w: Workdir) -> list[dict[str, Any]]:
    """The only run's journal, as ``drctl log --output json`` prints it (one event a line)."""
    if w.run_id is None:
        runs = drctl(w.path, "runs", "--output", "json")
        assert runs.returncode == 0, runs.stderr
        ids = [r["id"] for r in json.loads(runs.stdout)]
        assert len(ids) == 1, f"expected exactly one run, got {ids}"
        w.run_id = ids[0]
    log = drctl(w.path, "log", w.run_id, "--output", "json")
    assert log.returncode == 0, log.stderr
    return [json.loads(line) for line in log.stdout.splitlines() if line.strip()]


def peak_in_flight(events: list[dict[str, Any]]) -> int:
    """The most steps the journal shows started and not yet finished at one time."""
    running: set[str] = set()
    peak = 0
    for e in events:
        if e["kind"] == "step_started":
            running.add(e["step"])
            peak = max(peak, len(running))
        elif e["kind"] in ("step_succeeded", "step_failed"):
            running.discard(e["step"])
    return peak


def effects_problem(variant: Variant, lines: list[str]) -> str | None:
    """None if the effects file holds every expected line exactly once, in group order."""
    at = 0
    for group in variant.groups:
        got = lines[at : at + len(group)]
        if sorted(got) != sorted(group):
            return f"effects {lines} are not {[list(g) for g in variant.groups]} (each once)"
        at += len(group)
    if at != len(lines):
        return f"effects {lines} have extra lines after {at}"
    return None


def final_state_problems(variant: Variant, w: Workdir) -> list[str]:
    """What is wrong with a run that should have finished: effects, run and step status."""
    problems = []
    if (p := effects_problem(variant, effect_lines(w))) is not None:
        problems.append(p)
    status = drctl(w.path, "status", "--output", "json")
    if status.returncode != 0:
        return [*problems, f"status exited {status.returncode}: {status.stderr.strip()}"]
    doc = json.loads(status.stdout)
    w.run_id = doc["id"]
    if doc["status"] != "succeeded":
        problems.append(f"run status is {doc['status']!r}")
    steps = {s["id"]: s["status"] for s in doc["steps"]}
    if sorted(steps) != sorted(variant.step_ids):
        problems.append(f"status lists steps {sorted(steps)}, not {sorted(variant.step_ids)}")
    if bad := {k: v for k, v in steps.items() if v != "succeeded"}:
        problems.append(f"steps not succeeded: {bad}")
    return problems


def crash_then_resume(
    variant: Variant,
    root: Path,
    fault: str,
    check: Callable[[Workdir], list[str]] | None = None,
    expect_line: str | None = None,
    resume_twice: bool = False,
) -> list[str]:
    """Run with ``DRCTL_FAULT=fault``, expect SIGKILL, resume; return what went wrong.

    ``expect_line``: a line the killed run must already have appended exactly once.
    ``resume_twice``: resume once more after success; it must change nothing.
    """
    w = setup(root, variant, fault)
    killed = drctl(w.path, "run", str(w.runbook), *variant.run_args, fault=fault)
    if killed.returncode != -signal.SIGKILL:
        return [f"{fault}: run exited {killed.returncode}, not SIGKILL: {killed.stderr[-500:]}"]
    if expect_line is not None and effect_lines(w).count(expect_line) != 1:
        return [f"{fault}: before resume, effects {effect_lines(w)} lack {expect_line!r} once"]
    resumed = drctl(w.path, "resume", "--last", "--yes")
    if resumed.returncode != 0:
        return [f"{fault}: resume exited {resumed.returncode}: {resumed.stderr[-800:]}"]
    problems = final_state_problems(variant, w)
    if check is not None:
        problems += check(w)
    if resume_twice and not problems:
        before = effect_lines(w)
        again = drctl(w.path, "resume", "--last", "--yes")
        if again.returncode != 0 or effect_lines(w) != before:
            problems.append(f"second resume exited {again.returncode}, effects {effect_lines(w)}")
        problems += final_state_problems(variant, w)
    return [f"{fault}: {p}" for p in problems]


def run_all(jobs: list[Callable[[], list[str]]]) -> list[str]:
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return [p for problems in pool.map(lambda job: job(), jobs) for p in problems]


# -- the tests ------------------------------------------------------------------------


def clean_event_count(variant: Variant, root: Path) -> int:
    """E: the journal events of a clean run, counted from ``drctl log --output json``."""
    w = setup(root, variant, "count")
    done = drctl(w.path, "run", str(w.runbook), *variant.run_args)
    assert done.returncode == 0, done.stderr
    return len(journal(w))


@pytest.mark.parametrize("variant", VARIANTS)
def test_clean_run_then_second_resume_is_a_no_op(variant: Variant, tmp_path: Path) -> None:
    """A clean run journals the expected events, overlap and effects; resuming it again changes nothing."""
    w = setup(tmp_path, variant, "clean")
    done = drctl(w.path, "run", str(w.runbook), *variant.run_args)
    assert done.returncode == 0, done.stderr
    assert final_state_problems(variant, w) == []
    events = journal(w)
    assert len(events) == variant.events, [(e["kind"], e["step"]) for e in events]
    assert events[0]["kind"] == "run_started" and events[-1]["kind"] == "run_finished"
    low, high = variant.overlap
    assert low <= peak_in_flight(events) <= high
    before = w.effects.read_bytes()

    again = drctl(w.path, "resume", "--last", "--yes")

    assert again.returncode == 0, again.stderr
    assert w.effects.read_bytes() == before
    assert journal(w) == events
    assert final_state_problems(variant, w) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_kill_at_every_event_then_resume_applies_each_effect_once(
    variant: Variant, tmp_path: Path
) -> None:
    """SIGKILL after each journal event N in 1..E, then resume: every effect exactly once, all succeeded.

    After the kill at E (run_finished journaled, run record not yet updated) a second
    resume must be a no-op.
    """
    count = clean_event_count(variant, tmp_path)
    assert count == variant.events, "the clean run's event count changed; see the clean-run test"

    def job(n: int) -> Callable[[], list[str]]:
        return lambda: crash_then_resume(variant, tmp_path, f"event:{n}", resume_twice=n == count)

    problems = run_all([job(n) for n in range(1, count + 1)])

    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kill_after_apply_then_resume_verifies_instead_of_reapplying(
    variant: Variant, tmp_path: Path
) -> None:
    """SIGKILL after a step's apply but before its success is journaled: resume verifies, never re-runs it."""

    def check(step: str) -> Callable[[Workdir], list[str]]:
        def journal_problems(w: Workdir) -> list[str]:
            events = journal(w)
            resumed_at = next((i for i, e in enumerate(events) if e["kind"] == "run_resumed"), None)
            if resumed_at is None:
                return ["no run_resumed event"]
            before, after = events[:resumed_at], events[resumed_at:]
            mine = [e["kind"] for e in before if e["step"] == step]
            problems = []
            if mine[-1:] != ["step_started"] or "step_succeeded" in mine:
                problems.append(f"before the crash the journal shows {step}: {mine}")
            if step not in variant.lines:
                return problems  # the approve gate has no effect to verify; it may run again
            later = [e for e in after if e["step"] == step]
            if [e["kind"] for e in later] != ["step_succeeded"] or not later[0]["data"].get(
                "verified_on_resume"
            ):
                problems.append(
                    f"after resume {step} was not just verified: {[(e['kind'], e['data']) for e in later]}"
                )
            return problems

        return journal_problems

    def job(step: str) -> Callable[[], list[str]]:
        return lambda: crash_then_resume(
            variant, tmp_path, f"after-apply:{step}", check(step), variant.lines.get(step)
        )

    problems = run_all([job(step) for step in variant.after_apply])

    assert problems == [], "\n".join(problems)


def test_ten_runs_started_at_once_one_wins_nine_are_told_who_holds_the_lock(
    tmp_path: Path,
) -> None:
    """Ten runs of one runbook on one state file at once: one exits 0, nine exit 3 naming the holder."""
    effects, go = tmp_path / "effects.txt", tmp_path / "go"
    # The first step holds the run (and its lock) until the test has seen all nine
    # losers exit, or 90 s pass; so the runs overlap however slowly they start.
    runbook = tmp_path / "runbook.yaml"
    runbook.write_text(
        _HEADER.format(name="crash-lock")
        + "  - id: hold\n    type: shell\n    timeout: 120s\n    with:\n"
        f"      command: \"for i in $(seq 900); do test -e '{go}' && break; sleep 0.1; done; "
        f"echo hold >> '{effects}'\"\n"
        f"      verify: \"grep -qx hold '{effects}'\"\n"
        + _shell("after", "after").replace("EFFECTS", str(effects)),
        encoding="utf-8",
    )
    args = [sys.executable, "-m", "drctl", "run", str(runbook), "--yes"]
    args += ["--state", str(tmp_path / "state.db")]
    procs = [
        subprocess.Popen(
            args,
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    try:
        deadline = time.monotonic() + 80  # below the hold's 90 s: the winner still holds
        while sum(p.poll() is not None for p in procs) < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=PROC_TIMEOUT) for p in procs]
        results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)

    codes = sorted(code for code, _, _ in results)
    assert codes == [0] + [3] * 9, [(code, err[-300:]) for code, _, err in results]
    runs = drctl(tmp_path, "runs", "--output", "json")
    assert runs.returncode == 0, runs.stderr
    run_ids = [r["id"] for r in json.loads(runs.stdout)]
    assert len(run_ids) == 1, f"losers must not create runs: {run_ids}"
    for code, _, err in results:
        if code == 3:
            assert f"held by run {run_ids[0]}" in err, err
    assert effects.read_text(encoding="utf-8").splitlines() == ["hold", "after"]
