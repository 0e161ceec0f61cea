"""The rarer event kinds live in their own module: named through ``events``, read by
``decode``, and not built by a run that writes none of them."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from drctl.engine import events as ev
from drctl.engine import occasional_events
from drctl.state.base import Event
from tests.conftest import loaded_by_cli


def test_every_kind_is_decoded_whichever_module_holds_it() -> None:
    """decode gives each kind's class, common or occasional, with its data read back."""
    assert set(occasional_events.KINDS) == ev.OCCASIONAL_KINDS
    assert not set(ev.KINDS) & ev.OCCASIONAL_KINDS
    for kind, cls in {**ev.KINDS, **occasional_events.KINDS}.items():
        sample = cls(step="s") if issubclass(cls, ev.StepEvent) else cls()
        stored = Event(kind, 0.0, sample.step_id, sample.attempt_no, sample.to_json())
        decoded = ev.decode(stored)
        assert type(decoded) is cls and decoded == sample, kind


def test_events_names_every_occasional_class() -> None:
    """events.X is the occasional module's class X, for each one it holds."""
    for name in ("RunResumed", "GuardTripped", "DrillMeasured", "AckLog", "CheckReading"):
        assert getattr(ev, name) is getattr(occasional_events, name)
    classes = {c.__name__ for c in occasional_events.KINDS.values()}
    assert classes <= set(ev.__all__)
    assert {f.name for f in fields(ev.DrillPaused)} >= {"acks", "canary"}


def test_a_plain_run_builds_no_occasional_event_class(tmp_path: Path) -> None:
    """A run that succeeds through a gate (--yes) and a fan-out imports no rarer event kind."""
    code, loaded, done = loaded_by_cli(
        ["drctl.engine.occasional_events"], "run", "runbooks/shell-demo.yaml", "--yes",
        "-p", f"workdir={tmp_path / 'work'}", "--state", str(tmp_path / "state.db"),
    )  # fmt: skip
    assert (code, loaded) == (0, set()), done.stdout + done.stderr
