"""The packed time log (engine/timelog.py): what a writer appends, replayed, is the map it keeps,
whatever the changes, and compaction keeps the stored bytes within their bound."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import timelog

USERS = st.sampled_from([f"u{i}" for i in range(12)] + ["", "ü:ß", "x" * 40])
TIMES = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False) | st.sampled_from(
    [0.1 + 0.2, 1_765_000_000.123, 5e-324, -0.0]
)
CHANGE = st.tuples(
    st.dictionaries(USERS, TIMES, max_size=8),
    st.lists(USERS, max_size=4),
    st.none() | TIMES,
)


@settings(max_examples=300)
@given(st.lists(CHANGE, max_size=40), st.sampled_from([0, 64, 10**9]))
def test_the_stored_log_replays_to_the_writers_map(
    changes: list[tuple[dict[str, float], list[str], float | None]], min_bytes: int
) -> None:
    """A model map changed in the writer's order (drop, set, forget below a horizon), against
    a string kept as Redis would keep it (APPEND a frame, or SET a snapshot): equal after
    every commit, float for float, and never past its bound."""
    model: dict[str, float] = {}
    size = timelog.LogSize(min_bytes=min_bytes)
    stored = b""
    for times, drop, horizon in changes:
        drop = [u for u in drop if u not in times]  # as a channel's changes are: disjoint
        for u in drop:
            model.pop(u, None)
        model.update(times)
        below = -math.inf if horizon is None else horizon
        model = {u: t for u, t in model.items() if t >= below}
        whole, blob = size.frame(model, times, drop, below)
        stored = blob if whole else stored + blob
        assert size.stored == len(stored)
        got = timelog.replay(stored)
        assert got == model
        assert all(math.copysign(1, got[u]) == math.copysign(1, t) for u, t in model.items())
        assert len(stored) <= max(min_bytes, timelog.COMPACT_RATIO * size.snapshot)


def test_a_log_read_at_start_is_compacted_once_it_has_tripled() -> None:
    whole = {f"u{i}": float(i) for i in range(50)}
    snap = timelog.frame(whole)
    size = timelog.LogSize(len(snap), min_bytes=0)
    writes = []
    for i in range(200):
        whole["u0"] = 1000.0 + i
        writes.append(size.frame(whole, {"u0": whole["u0"]})[0])
        if writes[-1]:
            break
    assert writes[-1]
    assert not any(writes[:-1])
    assert len(writes) > 10  # a one-user frame is small beside a 50-user snapshot


def test_count_since_and_an_empty_log() -> None:
    log = timelog.frame({"a": 10.0, "b": 20.0}) + timelog.frame({"c": 30.0}, drop=["a"])
    assert timelog.count_since(log, 15.0) == 2
    assert timelog.count_since(log, 0.0) == 2
    assert timelog.replay(None) == {} == timelog.replay(b"")
