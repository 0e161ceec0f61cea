"""The step contract itself: typed contexts, polling on the context's clock, warm-up."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drctl.engine.secrets import Secrets
from drctl.errors import StepError, Unreachable, UsageError
from drctl.runbook.targets import PostgresTarget, SshTarget
from drctl.steps.wait import WaitInputs
from drctl.testing import FakeContext
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def _no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may wait for real: time.sleep fails the test."""

    def refuse(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}s for real")

    monkeypatch.setattr(time, "sleep", refuse)


def _ctx(timeout: float = 60.0) -> FakeContext[WaitInputs, None]:
    return FakeContext(WaitInputs(duration=1), timeout=timeout)


def test_poll_returns_the_first_value_on_the_fake_clock() -> None:
    """poll stops at the first check that returns a value, and says how long it took."""
    ctx = _ctx()
    answers = iter([None, None, "ready"])
    polled = ctx.poll(lambda: next(answers), every=0.5, within=10)
    assert (polled.value, polled.done, polled.polls, polled.waited) == ("ready", True, 3, 1.0)
    assert ctx.slept == [0.5, 0.5]
    assert ctx.monotonic() == 1.0


def test_poll_gives_up_when_the_next_check_would_come_too_late() -> None:
    """With every=1 and within=3 there are four checks (0, 1, 2, 3 s), then poll gives up."""
    ctx = _ctx()
    polled = ctx.poll(lambda: None, every=1, within=3)
    assert (polled.value, polled.done, polled.polls, polled.waited) == (None, False, 4, 3.0)
    assert ctx.slept == [1.0, 1.0, 1.0]


def test_poll_is_bounded_by_the_steps_remaining_time() -> None:
    """A wait longer than the step has left ends at the step's deadline."""
    ctx = _ctx(timeout=2.0)
    polled = ctx.poll(lambda: None, every=1, within=600)
    assert (polled.polls, ctx.slept) == (3, [1.0, 1.0])


def test_poll_retries_the_errors_it_is_told_to_and_keeps_the_last() -> None:
    """retry_on errors count as "not yet" (the last is kept); others end the wait at once."""
    ctx = _ctx()
    calls: list[int] = []

    def flaky() -> str | None:
        calls.append(1)
        if len(calls) < 3:
            raise Unreachable(f"no answer ({len(calls)})")
        return None

    polled = ctx.poll(flaky, every=1, within=4, retry_on=(Unreachable,))
    assert polled.polls == 5 and not polled.done
    assert polled.error is not None and polled.error.message == "no answer (2)"

    def broken() -> str | None:
        raise StepError("permission denied")

    with pytest.raises(StepError, match="permission denied"):
        ctx.poll(broken, every=1, within=4, retry_on=(Unreachable,))


def test_fake_context_targets_are_models_and_target_named_checks_the_kind() -> None:
    """A target mapping with a type becomes its model; target_named refuses the wrong kind."""
    ctx = FakeContext(
        WaitInputs(duration=1),
        target={"type": "postgres", "dsn": "host=db1"},
        targets={"jump": {"type": "ssh", "host": "db1", "user": "drctl"}},
    )
    assert isinstance(ctx.target, PostgresTarget) and ctx.target.dsn == "host=db1"
    assert ctx.target_named("jump", SshTarget).user == "drctl"
    with pytest.raises(StepError, match="'jump' is a ssh target"):
        ctx.target_named("jump", PostgresTarget)


def test_a_target_still_reads_like_a_mapping_with_a_warning() -> None:
    """Step types written when targets were mappings keep working (target["dsn"], .get)."""
    target = PostgresTarget(type="postgres", dsn="host=db1")
    with pytest.warns(DeprecationWarning, match="target.dsn"):
        assert target["dsn"] == "host=db1"
    with pytest.warns(DeprecationWarning, match="target.dsn"):
        assert target.get("data_dir", "none") == "none"
    with pytest.warns(DeprecationWarning, match="target.dsn"), pytest.raises(KeyError):
        target["nope"]


def test_providers_take_time_only_from_the_context() -> None:
    """No provider reads time.monotonic or calls time.sleep: waits go through ctx.poll/ctx.sleep."""
    pattern = re.compile(r"\btime\.(monotonic|sleep|perf_counter)\b|from time import")
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sorted((REPO / "drctl" / "providers").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


_RACE = """
import importlib, sys, threading
from drctl.steps.registry import get_step_type

modules = ["psycopg", "psycopg.conninfo", "psycopg.errors", "psycopg.connection", "psycopg.pq"]
errors = []
start = threading.Barrier(13)

def warm_up():
    start.wait()
    get_step_type("postgres.fence").warm()  # what the executor's warm-up thread does

def step(i):
    start.wait()
    try:
        get_step_type("postgres.fence").warm()  # what the executor does before a step's call
        importlib.import_module(modules[i % len(modules)])  # the step's lazy import
        from psycopg.conninfo import conninfo_attempts, conninfo_to_dict  # noqa: F401
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=warm_up)] + [threading.Thread(target=step, args=(i,)) for i in range(12)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors[0] if errors else "ok")
"""


@pytest.mark.parametrize("run", range(3))
def test_a_step_never_imports_beside_its_warm_up(run: int, tmp_path: Path) -> None:
    """Twelve steps importing psycopg lazily while warm-up imports it see no half-initialised module.

    Without the wait for warm-up, the same script (the warm() calls in step() removed)
    fails with ``ImportError: cannot import name … from partially initialized module``.
    """
    script = tmp_path / "race.py"
    script.write_text(_RACE)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_poll_refuses_an_interval_of_zero() -> None:
    """An interval of 0 would spin; poll fails the step instead, saying why."""
    with pytest.raises(StepError, match="interval must be more than 0"):
        _ctx().poll(lambda: None, every=0, within=5)


def test_a_run_time_target_that_does_not_validate_never_quotes_its_secret() -> None:
    """A target whose resolved value breaks its model is a usage error naming the field, not the value."""
    secrets = Secrets({"${env:PORT}": "not-a-port-but-a-secret"})
    target = secrets.target("db", {"type": "postgres", "dsn": "host=db1"})
    assert isinstance(target, PostgresTarget)
    with pytest.raises(UsageError, match=r"targets\.jump\.port") as bad:
        secrets.target("jump", {"type": "ssh", "host": "h", "user": "u", "port": "${env:PORT}"})
    assert "not-a-port-but-a-secret" not in str(bad.value)
    assert bad.value.__cause__ is None


_RESOLVE_BESIDE_WARM_UP = """
import sys, threading
from drctl.errors import Unreachable
from drctl.providers.postgres.session import target_dsn
from drctl.steps import base
from drctl.steps.wait import WaitInputs
from drctl.testing import FakeContext

assert "dns.message" not in sys.modules
ctx = FakeContext(WaitInputs(duration=0))
failed = []
done = threading.Event()

def resolve():
    try:
        # Not an address: dnspython refuses it at once (Unreachable), no packet sent.
        target_dsn(ctx, "host=db.example. dbname=x", "no-such-address:53")
    except BaseException as exc:
        failed.append(exc)
    done.set()

with base._IMPORTS:  # a warm-up thread, mid-import
    worker = threading.Thread(target=resolve)
    worker.start()
    if done.wait(0.3):
        sys.exit("dnspython was imported beside the warm-up")
if not done.wait(30):
    sys.exit("the resolution never finished")
if not (len(failed) == 1 and isinstance(failed[0], Unreachable) and "db.example" in str(failed[0])):
    sys.exit(f"unexpected: {failed!r}")
"""


def test_a_targets_dns_server_is_resolved_with_dnspython_imported_through_the_import_lock() -> None:
    """The PostgreSQL warm-up leaves dnspython out (the first step need not wait for it);
    resolving a target's dns_server then imports it under the lock a warm-up holds."""
    done = subprocess.run(
        [sys.executable, "-c", _RESOLVE_BESIDE_WARM_UP],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
