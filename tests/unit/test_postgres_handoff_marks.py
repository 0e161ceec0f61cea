"""Where the handoff proof's mark comes from: only a fence that took effect, else a lower bound."""

from __future__ import annotations

from typing import Any

from drctl.providers.postgres.handoff import (
    Handoff,
    Mark,
    Position,
    best_ahead,
    fence_mark,
    seen_mark,
)
from drctl.providers.postgres.promote import PromoteInputs
from drctl.steps.base import FenceRecord, FenceStatus, StepFacts
from drctl.testing import FakeContext

OLD = {"type": "postgres", "dsn": "host=old"}


def _ctx(fences: tuple[FenceRecord, ...], facts: tuple[StepFacts, ...]) -> FakeContext[Any, Any]:
    return FakeContext(
        PromoteInputs(), target={"type": "postgres", "dsn": "host=me"}, targets={"old": OLD},
        target_name="me", fences=fences, facts=facts,
    )  # fmt: skip


def _fence(step: str, target: str, lsn: str) -> StepFacts:
    return StepFacts(step, "postgres.fence", target, {"final_lsn": lsn, "final_lsn_from": "x"})


def test_only_a_fence_that_took_effect_gives_the_mark() -> None:
    """A failed, ignored or in-doubt fence's final_lsn is no mark; a recovered one's fallback's is."""
    facts = (_fence("fence", "old", "0/3000000"),)
    for status in (FenceStatus.FAILED, FenceStatus.IGNORED, FenceStatus.IN_DOUBT):
        assert fence_mark(_ctx((FenceRecord("fence", "old", status),), facts), "old") is None
    ok = fence_mark(_ctx((FenceRecord("fence", "old", FenceStatus.SUCCEEDED),), facts), "old")
    assert ok == Mark(0x3000000, "fence step fence's final_lsn 0/3000000 (from x)", exact=True)
    # Recovered by its fallback (a stop), which published under its own id.
    recovered = (FenceRecord("fence", "old", FenceStatus.RECOVERED),)
    by_fallback = fence_mark(_ctx(recovered, (_fence("stop-old", "old", "0/3000100"),)), "old")
    assert by_fallback is not None and by_fallback.lsn == 0x3000100
    # A fence of another server proves nothing about this old primary.
    other = (FenceRecord("fence", "other", FenceStatus.SUCCEEDED),)
    assert fence_mark(_ctx(other, (_fence("fence", "other", "0/3000000"),)), "old") is None


def test_a_position_steps_saw_is_only_a_lower_bound() -> None:
    """The furthest wal_seen (or final_lsn) of the old primary is the mark, never exact."""
    facts = (
        StepFacts("lag", "postgres.replication_lag", "me", {"wal_seen": {"old": "0/2000000"}}),
        StepFacts("choose", "postgres.choose_primary", None, {"wal_seen": {"old": "0/2500000"}}),
        StepFacts("lag2", "postgres.replication_lag", "x", {"wal_seen": {"elsewhere": "9/0"}}),
    )
    mark = seen_mark(facts, "old")
    assert mark is not None and (mark.lsn, mark.exact) == (0x2500000, False)
    assert "by step choose" in mark.source
    proof = Handoff(mark, Position(0x2400000, 0x2300000, 1, False), None)
    assert proof.as_record()["rpo_at_least_bytes"] == 0x100000
    assert proof.figures().startswith("at least 1048576 bytes not received")


def test_a_choice_table_listing_this_target_shows_who_is_ahead() -> None:
    """Rows of a choose_primary table that lists this target count, on its timeline only."""
    table = [
        {"name": "me", "received_lsn": "0/1000000", "timeline": 1},
        {"name": "b", "received_lsn": "0/1000400", "timeline": 1},
        {"name": "c", "received_lsn": "0/9000000", "timeline": 2},
    ]
    facts = (StepFacts("choose", "postgres.choose_primary", None, {"table": table}),)
    ahead = best_ahead(_ctx((), facts), (), Position(0x1000000, 0x1000000, 1, False))
    assert ahead is not None and (ahead.name, ahead.received) == ("b", 0x1000400)
    assert "step choose's table" in ahead.known_from
    # A table of another cluster's candidates (not listing this target) says nothing.
    foreign = [{"name": "z", "received_lsn": "0/9000000", "timeline": 1}]
    elsewhere = (StepFacts("choose", "postgres.choose_primary", None, {"table": foreign}),)
    assert best_ahead(_ctx((), elsewhere), (), Position(0x1000000, 0, 1, False)) is None
