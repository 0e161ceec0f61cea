"""A journaled event's sinks read the typed event it was made from, only where decoding
its data would give an equal one: the kinds that say so, and data no redaction changed."""

from __future__ import annotations

import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drctl.engine import events as ev
from drctl.engine import occasional_events
from drctl.engine.clock import SystemClock
from drctl.engine.journal import Journal
from drctl.engine.outcome import line
from drctl.engine.redact import Redactor
from drctl.state.base import Event, RunRecord
from drctl.state.sqlite import SqliteStore
from tests.engine.conftest import RecordingSink

ALL_KINDS = {**ev.KINDS, **occasional_events.KINDS}
EXACT = [cls for cls in ALL_KINDS.values() if cls.exact]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def _values(hint: Any) -> st.SearchStrategy[Any]:
    """Every value a field of this type may hold (a type not listed fails the test)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return st.one_of(*(_values(arg) for arg in typing.get_args(hint)))
    simple: dict[Any, st.SearchStrategy[Any]] = {
        type(None): st.none(),
        str: st.text(),
        bool: st.booleans(),
        int: st.integers(),
        float: st.floats(allow_nan=False),
        Any: JSON,
    }
    if hint in simple:
        return simple[hint]
    if typing.get_origin(hint) is dict and typing.get_args(hint) == (str, Any):
        return st.dictionaries(st.text(), JSON, max_size=4)
    raise AssertionError(f"no values for a field of type {hint!r}")


@st.composite
def exact_events(draw: st.DrawFn) -> ev.JournalEvent:
    cls = draw(st.sampled_from(EXACT))
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: draw(_values(hints[f.name])) for f in fields(cls)})


def _stored(fact: ev.JournalEvent, origin: bool) -> Event:
    return Event(
        fact.kind, 0.0, fact.step_id, fact.attempt_no, fact.to_json(),
        origin=fact if origin else None,
    )  # fmt: skip


def test_the_kinds_every_step_writes_are_exact() -> None:
    assert {ev.StepStarted, ev.StepSucceeded} <= set(EXACT)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(exact_events())
def test_an_exact_kind_reads_back_equal_whatever_its_values(fact: ev.JournalEvent) -> None:
    """from_json(to_json()) is the event itself, so its line is the decoded data's line."""
    decoded = ev.decode(_stored(fact, origin=False))
    assert decoded == fact
    assert ev.decode(_stored(fact, origin=True)) is fact
    assert line(fact, 3) == line(decoded, 3)


def test_every_other_kind_is_decoded_from_its_data() -> None:
    """A kind that is not exact shows what its data says, not the event it was made from."""
    for kind, cls in ALL_KINDS.items():
        if cls.exact:
            continue
        sample = cls(step="s") if issubclass(cls, ev.StepEvent) else cls()
        assert ev.decode(_stored(sample, origin=True)) is not sample, kind
    # A retry delay with no duration is not journaled: its line says no retry follows.
    failed = ev.StepFailed(step="s", attempt=1, error="boom", final=False, retry_in=5.0)
    shown = ev.decode(_stored(failed, origin=True))
    assert (
        line(shown)
        == line(ev.decode(_stored(failed, origin=False)))
        == "s: FAILED (attempt 1): boom"
    )


def _journal(tmp_path: Path, redactor: Redactor, sink: RecordingSink) -> Journal:
    store = SqliteStore(tmp_path / "state.db")
    store.create_run(
        RunRecord(
            id="r1", runbook="/rb.yaml", name="rb", plan_hash="sha256:x", plan_json="{}",
            params_json="{}", user="u", host="h", pid=1, version="0", started_at=1000.0,
            lock_key="rb",
        )
    )  # fmt: skip
    return Journal(store, "r1", None, redactor, SystemClock(), [sink])


def test_a_journal_hands_its_sinks_the_event_it_wrote(tmp_path: Path) -> None:
    sink = RecordingSink()
    journal = _journal(tmp_path, Redactor(), sink)
    started = ev.StepStarted(step="s", attempt=1, description="plain words")
    journal.write_later(started)
    journal.flush()
    (shown,) = sink.events
    assert shown.origin is started
    assert shown.data == started.to_json()


def test_redacted_data_is_shown_redacted(tmp_path: Path) -> None:
    """An event whose data the redactor looked into is shown from that data: masked."""
    redactor = Redactor()
    redactor.add("hunter2-secret")
    sink = RecordingSink()
    journal = _journal(tmp_path, redactor, sink)
    journal.write_later(ev.StepStarted(step="s", attempt=1, description="as hunter2-secret"))
    journal.write(ev.StepSkipped(step="t", reason="plain words"))
    started, skipped = sink.events
    assert started.origin is None
    assert line(ev.decode(started)) == "s: started (attempt 1): as ***"
    assert skipped.origin is None  # a redactor with secrets copies whatever it reads
