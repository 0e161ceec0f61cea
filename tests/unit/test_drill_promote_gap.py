"""The drill report counts the WAL a promote journaled it gave up (its handoff record)."""

from __future__ import annotations

from drctl.drill.report import PromoteGap, promote_gaps
from drctl.state.base import Event


def _handoff(step: str, gap: int, exact: bool) -> Event:
    value = {"gap_bytes": gap, "handoff_exact": exact, "handoff_lsn": "0/3000000"}
    return Event("step_recorded", 1.0, step, 1, {"key": "handoff", "value": value})


def test_each_promotes_last_handoff_is_its_gap_and_a_lower_bound_says_at_least() -> None:
    """The last handoff record per promote is kept; an inexact one reads "at least N bytes"."""
    events = [
        _handoff("promote-a", 500, exact=True),
        Event("step_recorded", 1.0, "promote-a", 1, {"key": "timeline_before", "value": 1}),
        _handoff("promote-a", 0, exact=True),  # a retry that found it caught up
        _handoff("promote-b", 75664, exact=False),
        Event("step_recorded", 1.0, "other", 1, {"key": "handoff", "value": "not a record"}),
    ]
    gaps = promote_gaps(events)
    assert gaps == (PromoteGap("promote-a", 0, True), PromoteGap("promote-b", 75664, False))
    assert gaps[0].describe() == "0 bytes of WAL (promote-a)"
    assert gaps[1].describe() == (
        "at least 75664 bytes of WAL (promote-b; the old primary's end unknown)"
    )
