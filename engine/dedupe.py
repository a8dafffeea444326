"""Remembering event ids for a bounded window, compactly: the channel shard's dedupe.

An event is identified by `network:id`; a duplicate is the same id delivered again (a
retry, a replay), **whatever its ts**: a producer may re-stamp ts when it retries. Ids are
kept as 64-bit hashes (blake2b, 8 bytes of `network:id`), each in the **bucket** of the
event that brought it first: the minute of its ts (`ts // BUCKET_S`). An event is a
duplicate when its hash is in any bucket of the window (or earlier in its batch): memory
holds the hashes of every live bucket as one set (`Runs`, each hash tagged with its
bucket), so one lookup checks them all.

A bucket is kept until the partition's event time (`ChannelProgress.newest`: the newest
time seen in its log, which follows the server clocks) passes the bucket's end by the
window, `dedupe_window_s`. So an id is remembered until event time passes its first copy's
ts by the window, and every copy read before then is a duplicate, whatever its own ts:

- A copy dated earlier than the first (in an older bucket) is expired itself, or finds the
  first copy's bucket, which ends later than its own, still live.
- A copy dated later (a retry re-stamped) finds the first copy's hash in an older bucket
  that expires earlier. The gateway accepted the first copy at server time A1 with
  ts >= A1 - max_event_age_s, and event time never runs more than max_future_s ahead of
  the server clock, so with `window_s >= max_event_age_s + max_future_s` that bucket lives
  at least until server time A1 + (window_s - max_event_age_s - max_future_s), and until
  A1 + window_s - max_future_s when the first copy was stamped when it was sent (ts ~ A1:
  an hour by default). A copy of an old-dated event retried later than that is fresh
  again: the window is counted in event time from the first copy's ts.

The gateway accepts no event older than `max_event_age_s` by its clock, so every accepted
event finds its own bucket live however long it waited in the log. An event read after
its own bucket expired (one the gateway would reject: a dead letter retried later than the
window, or an append that bypassed the gateway) is *expired*: it is not applied (its
duplicates could no longer be recognised) and is counted. Events dated ahead (up to
`max_future_s`) sit in later buckets, kept longer.

Forgetting is lazy in memory: the hashes of a forgotten bucket stay in the set, dead,
until runs merge over them or they outnumber the live ones (then the set is compacted).
Meanwhile a copy re-sent after the window may still be found a duplicate (after a restart
it would be fresh): beyond the window either answer is allowed, never a double credit of
an id within it.

A hash collision (two different ids of one partition's window with equal hashes) makes the
later event a duplicate: it is dropped, never credited twice. For n ids in the window, the
chance that a fresh event collides is about n / 2**64 (README, "Duplicates").

Storage (actors/shards.py): each bucket is a few Redis strings of packed little-endian
uint64 (chunks of at most CHUNK_IDS hashes, appended by each commit: a commit appends at
most 8 bytes per event it carries, so it stays short); the shard keeps them in memory as
the tagged sorted runs, checked with numpy, and after a (re)start loads every live bucket
of its partition (in bounded pipelined round trips) before it checks anything.
"""

from __future__ import annotations

import hashlib
import itertools
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
TAG_MIN, TAG_MAX = -(2**31), 2**31 - 1
"""The range of the int32 bucket tags memory keeps next to each hash (4 bytes a hash)."""
COMPACT_MIN = 65_536
"""Hashes of forgotten buckets are dropped from memory once they are this many and at least
as many as the live ones (or sooner, when runs merge)."""

Hashes = npt.NDArray[np.uint64]
Tags = npt.NDArray[np.int32]


def default_window_s(max_event_age_s: float, max_future_s: float) -> float:
    """The window when none is configured: what the gateway accepts, plus a margin."""
    return max_event_age_s + max_future_s + MARGIN_S


def min_window_s(max_event_age_s: float, max_future_s: float) -> float:
    """The shortest safe window: every accepted event must find its own bucket live."""
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


def tags_of(buckets: npt.ArrayLike) -> Tags:
    """Buckets as the int32 tags Runs keeps (clipped: a bucket past year 6000, only from an
    append that bypassed the gateway, stays in memory until its Redis strings expire)."""
    return np.clip(np.asarray(buckets, dtype=np.int64), TAG_MIN, TAG_MAX).astype(np.int32)


class Runs:
    """A set of uint64, each tagged with its bucket, as a few sorted arrays (each merged
    with the next while it is not twice as long: O(log n) runs, each hash merged O(log n)
    times). Hashes tagged at or below `floor` are dead: dropped when runs merge or on
    `drop_dead`."""

    __slots__ = ("count", "floor", "runs", "tags")

    def __init__(self) -> None:
        self.runs: list[Hashes] = []
        self.tags: list[Tags] = []
        self.count = 0
        self.floor = TAG_MIN - 1

    def contains(self, q: Hashes) -> npt.NDArray[np.bool_]:
        """Which of `q` (sorted) are in the set (dead ones included)."""
        hit = np.zeros(len(q), dtype=np.bool_)
        for run in self.runs:
            at = np.searchsorted(run, q)
            inside = at < len(run)
            hit[inside] |= run[at[inside]] == q[inside]
        return hit

    def add(self, new: Hashes, tags: Tags | int = 0) -> None:
        """Add sorted hashes, none of them present, tagged with their buckets."""
        if not len(new):
            return
        tag = np.broadcast_to(np.asarray(tags, dtype=np.int32), new.shape)
        self.runs.append(new)
        self.tags.append(np.array(tag, dtype=np.int32))
        self.count += len(new)
        runs, all_tags = self.runs, self.tags
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
            h = np.concatenate((runs[-2], runs.pop()))
            t = np.concatenate((all_tags[-2], all_tags.pop()))
            order = np.argsort(h, kind="stable")  # two sorted runs: a linear merge
            live = t[order] > self.floor
            self.count -= len(h) - int(np.count_nonzero(live))
            order = order[live]
            runs[-1], all_tags[-1] = h[order], t[order]

    def drop_dead(self) -> None:
        """Drop every hash tagged at or below `floor` (each run stays sorted)."""
        runs, tags = [], []
        for run, tag in zip(self.runs, self.tags, strict=True):
            live = tag > self.floor
            if live.any():
                runs.append(run[live])
                tags.append(tag[live])
        self.runs, self.tags = [], []
        self.count = 0
        for run, tag in sorted(zip(runs, tags, strict=True), key=lambda rt: -len(rt[0])):
            self.runs.append(run)
            self.tags.append(tag)
            self.count += len(run)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            h = np.concatenate((self.runs[-2], self.runs.pop()))
            t = np.concatenate((self.tags[-2], self.tags.pop()))
            order = np.argsort(h, kind="stable")
            self.runs[-1], self.tags[-1] = h[order], t[order]


class Fresh:
    """The outcome of checking a batch: which events are new, and what to store where."""

    __slots__ = ("added", "fresh")

    def __init__(self, fresh: npt.NDArray[np.bool_], added: dict[int, tuple[int, Hashes]]):
        self.fresh = fresh
        self.added = added
        """bucket -> (hashes it held before, the sorted new hashes)."""


class SeenWindow:
    """The ids of one channel partition. `stored` mirrors what Redis holds (bucket ->
    hashes stored); `ids` holds, in memory, the hashes of every bucket loaded (`loaded`)
    or written since, tagged with their bucket, so that one lookup checks them all."""

    def __init__(self, window_s: float, stored: Mapping[int, int] | None = None) -> None:
        assert window_s > 0
        self.window_s = window_s
        self.stored: dict[int, int] = dict(stored or {})
        self.loaded: set[int] = set()
        self.ids = Runs()

    def to_load(self) -> list[int]:
        """Buckets that Redis holds but memory does not yet: all must be loaded before a
        check (a duplicate may be in any of them)."""
        if len(self.loaded) == len(self.stored):
            return []
        return sorted(b for b in self.stored if b not in self.loaded)

    def load(self, bucket: int, packed: bytes) -> None:
        data = np.frombuffer(packed, dtype=HASH_DTYPE).astype(np.uint64)
        assert len(data) == self.stored[bucket], (bucket, len(data), self.stored[bucket])
        uniq = np.unique(data)  # ids stored twice (by an earlier version): kept once
        self.ids.add(uniq[~self.ids.contains(uniq)], int(tags_of(bucket)))
        self.loaded.add(bucket)

    def check(self, hashes: Hashes, buckets: Sequence[int], newest: float) -> Fresh:
        """Mark each event fresh (the first of its id in this batch and in the window,
        whatever its bucket) or duplicate, and remember the fresh ones in their buckets.
        Events whose bucket is expired at event time `newest` are neither: they are not
        remembered and do not hide a later copy of their id. Every stored bucket must be
        loaded."""
        fresh = np.zeros(len(hashes), dtype=np.bool_)
        added: dict[int, tuple[int, Hashes]] = {}
        if not len(hashes):
            return Fresh(fresh, added)
        assert not self.to_load(), "stored buckets are not loaded"
        barr = np.asarray(buckets, dtype=np.int64)
        live = np.flatnonzero((barr + 1) * BUCKET_S + self.window_s > newest)
        if len(live) < len(barr):
            hashes, barr = hashes[live], barr[live]
        uniq, first = np.unique(hashes, return_index=True)
        new = ~self.ids.contains(uniq)
        uniq, at = uniq[new], first[new]
        fresh[live[at]] = True
        if not len(uniq):
            return Fresh(fresh, added)
        barr = barr[at]
        self.ids.add(uniq, tags_of(barr))
        lo, hi = int(barr.min()), int(barr.max())
        if lo == hi:
            groups = [(lo, uniq)]
        else:
            order = np.argsort(barr, kind="stable")  # hashes stay sorted in each bucket
            sb = barr[order]
            cuts = np.flatnonzero(sb[1:] != sb[:-1]) + 1
            groups = [
                (int(sb[s]), uniq[order[s:e]])
                for s, e in itertools.pairwise([0, *cuts.tolist(), len(sb)])
            ]
        for b, h in groups:
            before = self.stored.get(b, 0)
            self.stored[b] = before + len(h)
            self.loaded.add(b)
            added[b] = (before, h)
        return Fresh(fresh, added)

    def expired(self, newest: float, max_chunks: int) -> dict[int, int]:
        """Forget the oldest buckets whose window has passed at event time `newest`, as
        many as fit in `max_chunks` stored strings (at least one); returns them with the
        number of hashes Redis held for each. Buckets left for later stay known, and
        `is_expired` still says their events are expired. Memory lets go of forgotten
        hashes lazily (they only make a re-sent id a duplicate meanwhile)."""
        gone: dict[int, int] = {}
        chunks = 0
        for b in sorted(self.stored):
            if not self.is_expired(b, newest):
                break
            chunks += chunks_of(self.stored[b])
            if gone and chunks > max_chunks:
                break
            gone[b] = self.stored.pop(b)
            self.loaded.discard(b)
            self.ids.floor = max(self.ids.floor, int(tags_of(b)))
        if gone:
            live = sum(self.stored.values())
            if self.ids.count - live >= max(COMPACT_MIN, live):
                self.ids.drop_dead()
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
