"""Hypothesis properties of the whole pipeline (engine.reference.Reference): the ledger
balances, replays and duplicate deliveries change nothing, ids are deterministic and
unique, tiers follow lifetime points, ignored users earn nothing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import Event
from engine.reference import Reference
from tests.engine.checks import check_ledger, check_tier_changes, run, snapshot
from tests.engine.strategies import BOOK, Item, items

PROPS = settings(max_examples=150, deadline=None)


@PROPS
@given(items())
def test_the_ledger_balances_and_tiers_follow_lifetime(its: list[Item]) -> None:
    ref = run(its)
    check_ledger(ref)
    check_tier_changes(ref)


@PROPS
@given(items())
def test_replaying_the_whole_sequence_changes_nothing(its: list[Item]) -> None:
    ref = run(its)
    before = snapshot(ref)
    # every event again (clock ticks are not replayed: a tick is an observation of time, and
    # one that a channel created after it never saw may rightly move that channel's clock;
    # in the real system the log's offsets keep a tick from being applied twice)
    run([it for it in its if not isinstance(it, float)], ref)
    assert snapshot(ref) == before
    assert snapshot(run(its)) == before, "a fresh replay yields the same entries and ids"


@PROPS
@given(items(), st.data())
def test_duplicates_interleaved_anywhere_change_nothing(
    its: list[Item], data: st.DataObject
) -> None:
    events = [i for i, it in enumerate(its) if not isinstance(it, float)]
    if not events:
        return
    noisy: list[Item] = list(its)
    for _ in range(data.draw(st.integers(1, 15), label="duplicates")):
        source = data.draw(st.sampled_from(events), label="source")
        original: Event = its[source]  # type: ignore[assignment]
        first = noisy.index(original)
        at = data.draw(st.integers(first + 1, len(noisy)), label="position")
        noisy.insert(at, original)
    assert snapshot(run(noisy)) == snapshot(run(its))


@pytest.mark.parametrize("split", [1, 7, 20])
@settings(max_examples=40, deadline=None)
@given(its=items())
def test_batching_does_not_matter(its: list[Item], split: int) -> None:
    """Events ingested as batches (up to each clock tick) credit like events one by one."""
    ref = Reference(BOOK)
    batch: list[Event] = []
    for it in its:
        if batch and (isinstance(it, float) or len(batch) >= split):
            ref.ingest(batch, now=batch[-1].ts)
            batch = []
        if isinstance(it, float):
            ref.clock(it)
        else:
            batch.append(it)
    ref.ingest(batch, now=0.0)
    assert snapshot(ref) == snapshot(run(its))
