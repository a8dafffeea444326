"""Remembering event ids for a bounded window, compactly: the channel shard's dedupe.

An event is identified by `network:id`; a duplicate is the same event delivered again (a
retry, a replay), so it carries the same `ts`. Ids are kept per **bucket**: the minute of
the event's ts (`ts // BUCKET_S`), as 64-bit hashes (blake2b, 8 bytes of `network:id`).
An event is a duplicate when its hash is already in its bucket.

A bucket is kept until the partition's event time (`ChannelProgress.newest`: the newest
time seen in its log, which follows the server clocks) passes the bucket's end by the
window, `dedupe_window_s`. The gateway accepts no event older than `max_event_age_s` by its
clock, so with `window_s >= max_event_age_s + max_future_s` (the future skew bounds how far
server clocks may disagree) every accepted event finds its bucket, and so its duplicates,
however long it waited in the log. An event read after its bucket expired (one the gateway
would reject: a dead letter retried later than the window, or an append that bypassed the
gateway) is *expired*: it is not applied (its duplicates could no longer be recognised)
and is counted. Events dated ahead (up to `max_future_s`) sit in later buckets, kept
longer.

A hash collision (two different ids of one bucket with equal hashes) makes the later event
a duplicate: it is dropped, never credited twice. For n ids in one bucket, the chance that a
fresh event collides is about n / 2**64 (README, "Duplicates").

Storage (actors/shards.py): each bucket is a few Redis strings of packed little-endian
uint64 (chunks of at most CHUNK_IDS hashes, appended by each commit: a commit appends at
most 8 bytes per event it carries, so it stays short); the shard keeps them in memory as
sorted runs, checked with numpy, loaded from Redis once after a (re)start.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

BUCKET_S = 60
"""Width of a bucket in event time."""
MARGIN_S = 60.0
"""Added to max_event_age_s + max_future_s when no window is configured."""
CHUNK_IDS = 65_534
"""Most hashes in one stored string: appends never copy a larger value, and a full one,
sealed (rewritten at its exact size: APPEND over-allocates up to twice), fills a 512 KiB
allocation exactly (8 * 65,534 bytes + a 10-byte header)."""
SEAL_AFTER_S = 60.0
"""A bucket's last string is sealed once the partition's event time is this far past the
bucket's end: by then it gets few appends (only events that arrive late)."""
HASH_DTYPE = np.dtype("<u8")

Hashes = npt.NDArray[np.uint64]


def default_window_s(max_event_age_s: float, max_future_s: float) -> float:
    """The window when none is configured: what the gateway accepts, plus a margin."""
    return max_event_age_s + max_future_s + MARGIN_S


def min_window_s(max_event_age_s: float, max_future_s: float) -> float:
    """The shortest safe window: duplicates of accepted events must find their bucket."""
    return max_event_age_s + max_future_s


def id_hashes(keys: Iterable[str]) -> Hashes:
    """The 64-bit hash of each `network:id`, in order."""
    digest = hashlib.blake2b
    raw = b"".join([digest(k.encode(), digest_size=8).digest() for k in keys])
    return np.frombuffer(raw, dtype=HASH_DTYPE).astype(np.uint64)


def bucket_of(ts: float) -> int:
    return math.floor(ts / BUCKET_S)


def expires_at(bucket: int, window_s: float) -> float:
    """The event time from which a bucket is forgotten."""
    return (bucket + 1) * BUCKET_S + window_s


def chunk_writes(count: int, new: Hashes) -> list[tuple[int, bytes, bool]]:
    """Where hashes appended to a bucket holding `count` go: (chunk index, packed bytes,
    whether the chunk is now full) for each chunk they touch, each holding at most
    CHUNK_IDS."""
    out: list[tuple[int, bytes, bool]] = []
    done = 0
    while done < len(new):
        at = count + done
        take = min(CHUNK_IDS - at % CHUNK_IDS, len(new) - done)
        packed = new[done : done + take].astype(HASH_DTYPE).tobytes()
        out.append((at // CHUNK_IDS, packed, (at + take) % CHUNK_IDS == 0))
        done += take
    return out


def chunks_of(count: int) -> int:
    """How many stored strings hold a bucket of `count` hashes."""
    return -(-count // CHUNK_IDS)


class Runs:
    """A set of uint64 as a few sorted arrays (each merged with the next while it is not
    twice as long: O(log n) runs, each hash merged O(log n) times)."""

    __slots__ = ("count", "runs")

    def __init__(self, packed: bytes = b"") -> None:
        data = np.frombuffer(packed, dtype=HASH_DTYPE).astype(np.uint64)
        self.runs: list[Hashes] = [np.sort(data, kind="stable")] if len(data) else []
        self.count = len(data)

    def contains(self, q: Hashes) -> npt.NDArray[np.bool_]:
        """Which of `q` (sorted) are in the set."""
        hit = np.zeros(len(q), dtype=np.bool_)
        for run in self.runs:
            at = np.searchsorted(run, q)
            inside = at < len(run)
            hit[inside] |= run[at[inside]] == q[inside]
        return hit

    def add(self, new: Hashes) -> None:
        """Add sorted hashes, none of them present."""
        if not len(new):
            return
        self.runs.append(new)
        self.count += len(new)
        runs = self.runs
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
            last = runs.pop()
            runs[-1] = np.sort(np.concatenate((runs[-1], last)), kind="stable")


class Fresh:
    """The outcome of checking a batch: which events are new, and what to store where."""

    __slots__ = ("added", "fresh")

    def __init__(self, fresh: npt.NDArray[np.bool_], added: dict[int, tuple[int, Hashes]]):
        self.fresh = fresh
        self.added = added
        """bucket -> (hashes it held before, the sorted new hashes)."""


class SeenWindow:
    """The ids of one channel partition, by bucket. `stored` mirrors what Redis holds
    (bucket -> hashes stored); `loaded` the buckets read back into memory."""

    def __init__(self, window_s: float, stored: Mapping[int, int] | None = None) -> None:
        assert window_s > 0
        self.window_s = window_s
        self.stored: dict[int, int] = dict(stored or {})
        self.loaded: dict[int, Runs] = {}

    def to_load(self, buckets: Iterable[int]) -> list[int]:
        """Buckets that Redis holds but memory does not yet."""
        return sorted(b for b in set(buckets) if b in self.stored and b not in self.loaded)

    def load(self, bucket: int, packed: bytes) -> None:
        runs = Runs(packed)
        assert runs.count == self.stored[bucket], (bucket, runs.count, self.stored[bucket])
        self.loaded[bucket] = runs

    def check(self, hashes: Hashes, buckets: Sequence[int]) -> Fresh:
        """Mark each event fresh (first of its hash in its bucket, in this batch and before)
        or duplicate, and remember the fresh ones. Every stored bucket among `buckets` must
        be loaded."""
        fresh = np.zeros(len(hashes), dtype=np.bool_)
        added: dict[int, tuple[int, Hashes]] = {}
        if not len(hashes):
            return Fresh(fresh, added)
        barr = np.asarray(buckets, dtype=np.int64)
        for b in np.unique(barr).tolist():
            at = np.flatnonzero(barr == b)
            uniq, first = np.unique(hashes[at], return_index=True)
            runs = self.loaded.get(b)
            if runs is None:
                assert b not in self.stored, f"bucket {b} is stored but not loaded"
                runs = self.loaded[b] = Runs()
            new = ~runs.contains(uniq)
            fresh[at[first[new]]] = True
            if new.any():
                before = runs.count
                runs.add(uniq[new])
                self.stored[b] = runs.count
                added[b] = (before, uniq[new])
        return Fresh(fresh, added)

    def expired(self, newest: float, max_chunks: int) -> dict[int, int]:
        """Forget the oldest buckets whose window has passed at event time `newest`, as
        many as fit in `max_chunks` stored strings (at least one); returns them with the
        number of hashes Redis held for each. Buckets left for later stay known, and
        `is_expired` still says their events are expired."""
        gone: dict[int, int] = {}
        chunks = 0
        for b in sorted(self.stored):
            if not self.is_expired(b, newest):
                break
            chunks += chunks_of(self.stored[b])
            if gone and chunks > max_chunks:
                break
            gone[b] = self.stored.pop(b)
            self.loaded.pop(b, None)
        return gone

    def to_seal(self, before: float, newest: float) -> list[tuple[int, int]]:
        """(bucket, chunk) of the last, partly filled string of every bucket that event time
        has just left SEAL_AFTER_S behind (moving from `before` to `newest`)."""
        out: list[tuple[int, int]] = []
        for b, n in sorted(self.stored.items()):
            cold = (b + 1) * BUCKET_S + SEAL_AFTER_S
            if before < cold <= newest and n % CHUNK_IDS:
                out.append((b, n // CHUNK_IDS))
        return out

    def is_expired(self, bucket: int, newest: float) -> bool:
        return expires_at(bucket, self.window_s) <= newest
