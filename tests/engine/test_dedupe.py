"""The dedupe window (engine/dedupe.py): an id is a duplicate in any minute of a bounded
window, hashes stored by event-time minute, packed chunks that reload to the same set."""

from __future__ import annotations

import itertools
import math

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


SMALL_WINDOW_S = 300.0
spread = st.floats(min_value=T0, max_value=T0 + 1_500, allow_nan=False)
long_batches = st.lists(st.lists(st.tuples(keys, spread), max_size=30), max_size=10)


@settings(max_examples=300, deadline=None)
@given(long_batches, st.integers(1, 3))
def test_an_id_is_a_duplicate_in_any_bucket_while_its_first_bucket_lives(
    stream, max_chunks
) -> None:
    """Against a model, a set of ids with expiry (id -> the bucket remembering it):
    whatever its ts, an id is a duplicate while the bucket of its first copy lives; an
    event whose own bucket has expired is neither fresh nor remembered; an id whose bucket
    has expired may be either (memory forgets lazily), and is remembered again if fresh."""
    window = SeenWindow(SMALL_WINDOW_S)
    model: dict[str, int] = {}
    newest = -math.inf
    for batch in stream:
        got = window.check(hashes_of(batch), [bucket_of(t) for _, t in batch], newest)
        for (k, t), fresh in zip(batch, got.fresh.tolist(), strict=True):
            b = bucket_of(t)
            if expires_at(b, SMALL_WINDOW_S) <= newest:
                assert not fresh, (k, t)  # expired: the caller drops it
            elif k in model and expires_at(model[k], SMALL_WINDOW_S) > newest:
                assert not fresh, (k, t)  # a duplicate, whatever its minute
            elif k in model:
                if fresh:  # forgotten: either answer, remembered again if fresh
                    model[k] = b
            else:
                assert fresh, (k, t)
                model[k] = b
        for b, (before, new) in got.added.items():
            assert bool(np.all(new[1:] > new[:-1]))  # sorted, unique
            assert window.stored[b] == before + len(new)
        newest = max([newest, *(t for _, t in batch)])
        window.expired(newest, max_chunks)
        live = {k for k, b in model.items() if b in window.stored}
        assert sum(window.stored.values()) == len(live)


def test_the_same_id_dated_in_another_minute_is_a_duplicate_after_a_reload() -> None:
    """A producer re-stamps ts on retry: the copy lands in another bucket and is still a
    duplicate, also for a window reloaded from what was stored (a restarted shard), and
    a copy dated earlier too; a copy whose own bucket expired hides nothing."""
    window = SeenWindow(WINDOW_S)
    chunks: dict[tuple[int, int], bytes] = {}

    def check(w: SeenWindow, items: list[tuple[str, float]], newest: float) -> list[bool]:
        got = w.check(hashes_of(items), [bucket_of(t) for _, t in items], newest)
        for b, (before, new) in got.added.items():
            for k, packed, _full in chunk_writes(before, new):
                chunks[b, k] = chunks.get((b, k), b"") + packed
        return got.fresh.tolist()

    assert check(window, [("n:x", T0 + 1), ("n:y", T0 + 2)], T0) == [True, True]
    assert check(window, [("n:x", T0 + 301), ("n:y", T0 - 120)], T0 + 2) == [False, False]
    assert window.stored == {bucket_of(T0): 2}  # duplicates are not stored
    again = SeenWindow(WINDOW_S, window.stored)
    assert again.to_load() == [bucket_of(T0)]
    for b in again.to_load():
        again.load(b, b"".join(chunks[b, k] for k in range(chunks_of(again.stored[b]))))
    late = T0 + 1_800  # half an hour later, in a minute never stored
    assert check(again, [("n:x", late), ("n:z", late), ("n:z", late + 90)], T0 + 2) == [
        False,
        True,
        False,
    ]
    # a copy of "n:w" too old for the window, then one in it: the second is the fresh one
    newest = T0 + 2 * WINDOW_S
    assert check(again, [("n:w", T0), ("n:w", newest)], newest) == [False, True]


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
    window.check(hashes_of(items), [bucket_of(t) for _, t in items], T0)
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
    window.check(hashes_of(items), [bucket_of(t) for _, t in items], T0)
    b0 = bucket_of(T0)
    cold = T0 + BUCKET_S + SEAL_AFTER_S
    assert window.to_seal(T0, cold - 0.1) == []
    assert window.to_seal(cold - 0.1, cold) == [(b0, 0)]
    assert window.to_seal(cold, cold + 60) == [(b0 + 1, 0)]
    full = SeenWindow(WINDOW_S, {b0: CHUNK_IDS})
    assert full.to_seal(T0, cold) == []  # a full string was sealed when it filled


def test_forgotten_hashes_leave_memory_when_runs_merge_or_on_compaction() -> None:
    u64 = np.uint64
    runs = Runs()
    runs.add(np.array([1, 5, 9], dtype=u64), 10)
    runs.add(np.array([2, 3], dtype=u64), np.array([11, 12], dtype=np.int32))
    assert runs.count == 5
    assert len(runs.runs) == 1
    runs.floor = 10
    q = np.array([1, 2, 3, 5, 9], dtype=u64)
    assert runs.contains(q).all()  # dead, still found: a re-sent id stays a duplicate
    runs.drop_dead()
    assert runs.count == 2
    assert runs.contains(q).tolist() == [False, True, True, False, False]
    runs.add(np.array([7, 8], dtype=u64), 13)  # merges with the run of 2, none dead
    runs.floor = 12
    runs.add(np.array([4, 6], dtype=u64), 13)  # merges: 2 and 3 go
    assert runs.count == 4
    assert runs.contains(np.arange(10, dtype=u64)).tolist() == [
        i in {4, 6, 7, 8} for i in range(10)
    ]

    window = SeenWindow(100.0)
    n = 70_000
    items = [(f"n:{i}", T0) for i in range(n)] + [("n:late", T0 + 60)]
    window.check(hashes_of(items), [bucket_of(t) for _, t in items], T0)
    assert window.ids.count == n + 1
    assert window.expired(T0 + 60 + 100, max_chunks=10) == {bucket_of(T0): n}
    assert window.ids.count == 1  # compacted: the dead outnumbered the live
