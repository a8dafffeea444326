"""The dedupe window (engine/dedupe.py): hashes by event-time minute, a bounded window,
packed chunks that reload to the same set."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.dedupe import (
    BUCKET_S,
    CHUNK_IDS,
    SEAL_AFTER_S,
    Runs,
    SeenWindow,
    bucket_of,
    chunk_writes,
    chunks_of,
    default_window_s,
    expires_at,
    id_hashes,
    min_window_s,
)

WINDOW_S = 3_720.0
T0 = 1_795_000_020.0  # a minute boundary

keys = st.sampled_from([f"n:e{i}" for i in range(40)] + [f"m:e{i}" for i in range(5)])
times = st.floats(min_value=T0, max_value=T0 + 600, allow_nan=False)
batches = st.lists(st.lists(st.tuples(keys, times), max_size=30), max_size=8)


def hashes_of(items: list[tuple[str, float]]) -> np.ndarray:
    return id_hashes(k for k, _ in items)


def test_hashes_are_stable_64_bit_and_differ() -> None:
    h = id_hashes(["acme:1", "acme:2", "acme:1"])
    assert h.dtype == np.uint64
    assert h[0] == h[2] != h[1]
    assert id_hashes(["acme:1"])[0] == h[0]
    assert len(id_hashes([])) == 0


def test_buckets_are_minutes_of_event_time() -> None:
    assert bucket_of(T0) == bucket_of(T0 + 59.999) == bucket_of(T0 + 60) - 1
    assert bucket_of(-0.5) == -1
    assert expires_at(bucket_of(T0), 100.0) == T0 + BUCKET_S + 100.0


def test_windows() -> None:
    assert min_window_s(3600, 60) == 3660
    assert default_window_s(3600, 60) == 3720


@settings(max_examples=200, deadline=None)
@given(batches)
def test_check_marks_the_first_of_each_id_per_minute_fresh(stream) -> None:
    """Against a plain set of (minute, id): whatever the batching, the first delivery of
    an id in its minute is fresh and every later one a duplicate."""
    window = SeenWindow(WINDOW_S)
    model: set[tuple[int, str]] = set()
    for batch in stream:
        got = window.check(hashes_of(batch), [bucket_of(t) for _, t in batch])
        want = []
        for k, t in batch:
            want.append((bucket_of(t), k) not in model)
            model.add((bucket_of(t), k))
        assert got.fresh.tolist() == want
        for b, (before, new) in got.added.items():
            assert bool(np.all(new[1:] > new[:-1]))  # sorted, unique
            assert window.stored[b] == before + len(new)
    assert sum(window.stored.values()) == len(model)


@settings(max_examples=100, deadline=None)
@given(batches)
def test_what_is_stored_reloads_to_the_same_window(stream) -> None:
    """The chunks a shard appends (chunk_writes), read back after a restart, give the same
    answers as the window that wrote them."""
    window = SeenWindow(WINDOW_S)
    chunks: dict[tuple[int, int], bytes] = {}
    for batch in stream:
        got = window.check(hashes_of(batch), [bucket_of(t) for _, t in batch])
        for b, (before, new) in got.added.items():
            for k, packed, _full in chunk_writes(before, new):
                chunks[b, k] = chunks.get((b, k), b"") + packed
    again = SeenWindow(WINDOW_S, window.stored)
    probe = [(k, T0 + m * 60.0) for k in ["n:e1", "n:e2", "m:e3", "z:new"] for m in range(11)]
    buckets = [bucket_of(t) for _, t in probe]
    for b in again.to_load(buckets):
        again.load(b, b"".join(chunks[b, k] for k in range(chunks_of(again.stored[b]))))
    assert again.to_load(buckets) == []
    assert (
        again.check(hashes_of(probe), buckets).fresh.tolist()
        == window.check(hashes_of(probe), buckets).fresh.tolist()
    )


@given(st.integers(0, 3 * CHUNK_IDS), st.integers(0, 2 * CHUNK_IDS + 5))
def test_chunk_writes_fill_chunks_in_order(count: int, n: int) -> None:
    new = np.arange(n, dtype=np.uint64)
    writes = chunk_writes(count, new)
    assert b"".join(p for _, p, _ in writes) == new.astype("<u8").tobytes()
    at = count
    for k, packed, full in writes:
        assert k == at // CHUNK_IDS
        at += len(packed) // 8
        assert at <= (k + 1) * CHUNK_IDS
        assert full == (at == (k + 1) * CHUNK_IDS)
    assert chunks_of(count + n) == (writes[-1][0] + 1 if writes else chunks_of(count))


@given(st.lists(st.sets(st.integers(0, 2**64 - 1), max_size=50), max_size=12))
def test_runs_are_a_set(adds) -> None:
    runs, model = Runs(), set()
    for group in adds:
        new = np.array(sorted(group - model), dtype=np.uint64)
        runs.add(new)
        model |= group
        q = np.array(sorted(model | {0, 2**64 - 1, 12345}), dtype=np.uint64)
        assert runs.contains(q).tolist() == [int(x) in model for x in q]
        assert runs.count == len(model)
        sizes = [len(r) for r in runs.runs]
        assert all(a > 2 * b for a, b in itertools.pairwise(sizes))


def test_buckets_expire_with_the_window_oldest_first_and_bounded() -> None:
    window = SeenWindow(100.0)
    items = [(f"n:{i}", T0 + 60.0 * i) for i in range(5)]
    window.check(hashes_of(items), [bucket_of(t) for _, t in items])
    b0 = bucket_of(T0)
    assert window.expired(T0 + 60 + 99.9, max_chunks=10) == {}
    assert window.is_expired(b0, T0 + 160)
    assert not window.is_expired(b0 + 1, T0 + 160)
    assert window.expired(T0 + 60 * 3 + 100, max_chunks=1) == {b0: 1}  # one string a call
    assert window.is_expired(b0 + 1, T0 + 60 * 3 + 100)  # not dropped yet, expired all the same
    assert window.expired(T0 + 60 * 3 + 100, max_chunks=10) == {b0 + 1: 1, b0 + 2: 1}
    assert sorted(window.stored) == [b0 + 3, b0 + 4]
    assert sorted(window.loaded) == [b0 + 3, b0 + 4]


def test_cold_buckets_are_sealed_once_when_event_time_leaves_them() -> None:
    window = SeenWindow(WINDOW_S)
    items = [("n:a", T0), ("n:b", T0 + 60)]
    window.check(hashes_of(items), [bucket_of(t) for _, t in items])
    b0 = bucket_of(T0)
    cold = T0 + BUCKET_S + SEAL_AFTER_S
    assert window.to_seal(T0, cold - 0.1) == []
    assert window.to_seal(cold - 0.1, cold) == [(b0, 0)]
    assert window.to_seal(cold, cold + 60) == [(b0 + 1, 0)]
    full = SeenWindow(WINDOW_S, {b0: CHUNK_IDS})
    assert full.to_seal(T0, cold) == []  # a full string was sealed when it filled
