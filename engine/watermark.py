"""Event time: the watermark and the reorder buffer that both shard kinds run on.

Rallypoint applies events, and the credits they produce, in event-time order: by
(ts, network, id). A reader of a log cannot know that no older event will come, so it keeps
a watermark, the newest event time it has seen minus the allowed lateness, and holds back
whatever is not older than the watermark. Items older than the watermark are released, in
order. An item that arrives already older than the watermark is *late*: it is retimed to
the watermark (it counts as having happened at the earliest moment still open), so that
the order of everything released stays a function of the log alone.

Released means strictly older than the watermark: an item retimed to the watermark is
never behind something released before it, however the log was cut into batches.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Generic, TypeVar

NEVER = float("-inf")

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    """Items keyed by (ts, key), released in that order once the watermark passes them.

    What is held is a few sorted runs, each a list of (ts, key, seq, item) from a read
    offset on; a pushed batch is sorted on its own and becomes a run (or extends the newest
    run it follows on), and the newest runs merge while the older is at most twice the
    newer, so there are O(log n) runs and an item is merged O(log n) times, all in C (a
    list sort over sorted runs is a merge). A release cuts each run at the watermark (a
    binary search) and merges the cut-off heads. A heap paid a Python-level push and pop
    per item; one sorted list paid for the whole overlapped tail on every batch when events
    come far out of order."""

    __slots__ = ("_len", "_runs", "_seq", "_starts", "lateness_s", "watermark")

    MAX_RUNS = 24
    """More runs than this (releases shrank the older ones) are merged into one."""

    def __init__(
        self, lateness_s: float, watermark: float = NEVER, after: ReorderBuffer[T] | None = None
    ) -> None:
        """`after`: the buffer whose released entries this one takes as they are
        (push_entries): the two number their items from one sequence."""
        assert lateness_s >= 0
        self.lateness_s = lateness_s
        self.watermark = watermark
        self._runs: list[list[tuple[float, str, int, T]]] = []
        """Each sorted by (ts, key, seq); seq (arrival order) is unique, so items themselves
        are never compared. A run holds its items from its start on, and is never empty."""
        self._starts: list[int] = []
        self._len = 0
        self._seq: list[int] = after._seq if after is not None else [0]
        """The next seq, shared with the `after` buffer (a one-item list)."""

    def __len__(self) -> int:
        return self._len

    def observe(self, ts: float) -> None:
        """An event time was seen in the log: the watermark follows it, `lateness_s` behind."""
        mark = ts - self.lateness_s
        if mark > self.watermark:
            self.watermark = mark

    def advance_to(self, watermark: float) -> None:
        """Move the watermark (never back): for a reader fed by several logs."""
        if watermark > self.watermark:
            self.watermark = watermark

    def admit(self, ts: float) -> tuple[float, bool]:
        """The time an item arriving now is ordered at, and whether it was late."""
        if ts < self.watermark:
            return self.watermark, True
        return ts, False

    def push(self, ts: float, key: str, item: T) -> None:
        # seq breaks ties between equal keys in arrival order (equal keys do not occur for
        # deduplicated events)
        self.push_all([(ts, key, item)])

    def push_all(self, items: list[tuple[float, str, T]]) -> None:
        """push(ts, key, item) for each of `items`, in order."""
        seq = self.reserve(len(items))
        self.push_numbered([(ts, key, seq + i, item) for i, (ts, key, item) in enumerate(items)])

    def reserve(self, n: int) -> int:
        """The first of `n` sequence numbers taken for push_numbered (unused ones are left
        as gaps: only their order matters)."""
        seq = self._seq[0]
        self._seq[0] = seq + n
        return seq

    def push_numbered(self, entries: list[tuple[float, str, int, T]]) -> None:
        """push_all() for entries the caller built with numbers from reserve(), in arrival
        order (the list is this buffer's from now on)."""
        if entries:
            entries.sort()
            self._add_run(entries)

    def push_entries(self, entries: list[tuple[float, str, int, T]]) -> None:
        """Take what release_entries() of the `after` buffer returned (sorted, numbered from
        the shared sequence), without building or sorting anything again; the list is this
        buffer's from now on."""
        if entries:
            self._add_run(entries)

    def _add_run(self, new: list[tuple[float, str, int, T]]) -> None:
        """A sorted, non-empty run of new entries."""
        self._len += len(new)
        runs, starts = self._runs, self._starts
        if runs and runs[-1][-1] < new[0]:  # follows on (events mostly come in time order)
            runs[-1] += new
        else:
            runs.append(new)
            starts.append(0)
        while len(runs) > 1 and len(runs[-2]) - starts[-2] <= 2 * (len(runs[-1]) - starts[-1]):
            self._merge_last_two()
        if len(runs) > self.MAX_RUNS:
            while len(runs) > 1:
                self._merge_last_two()

    def _merge_last_two(self) -> None:
        runs, starts = self._runs, self._starts
        b, sb = runs.pop(), starts.pop()
        a, sa = runs[-1], starts[-1]
        merged = a[sa:] if sa else a
        merged += b[sb:] if sb else b
        merged.sort()  # two sorted runs: one merge
        runs[-1], starts[-1] = merged, 0

    def _pop_released(self) -> list[tuple[float, str, int, T]]:
        """Remove and return the entries strictly older than the watermark, in order."""
        watermark = self.watermark
        parts: list[list[tuple[float, str, int, T]]] = []
        runs: list[list[tuple[float, str, int, T]]] = []
        starts: list[int] = []
        for run, start in zip(self._runs, self._starts, strict=True):
            if run[start][0] >= watermark:
                runs.append(run)
                starts.append(start)
            elif run[-1][0] < watermark:  # all of it (a watch tick's credits)
                parts.append(run[start:] if start else run)
            else:
                cut = bisect.bisect_left(run, (watermark,), start)  # (w,) < (w, key, ...)
                parts.append(run[start:cut])
                if 2 * cut > len(run):  # drop the released head once it is most of the run
                    del run[:cut]
                    cut = 0
                runs.append(run)
                starts.append(cut)
        self._runs, self._starts = runs, starts
        if not parts:
            return []
        out = parts[0]
        if len(parts) > 1:
            out = [x for part in parts for x in part]
            out.sort()  # sorted runs: a merge
        self._len -= len(out)
        return out

    def release(self) -> list[T]:
        """Everything strictly older than the watermark, in (ts, key) order."""
        return [e[3] for e in self._pop_released()]

    def release_entries(self) -> list[tuple[float, str, int, T]]:
        """release(), each item as its (ts, key, seq, item) entry: for the buffer built
        `after` this one (push_entries)."""
        return self._pop_released()

    def held(self) -> Iterator[tuple[float, str, T]]:
        """What is held back, unordered."""
        for run, start in zip(self._runs, self._starts, strict=True):
            for ts, key, _, item in run[start:]:
                yield ts, key, item

    def clear(self) -> None:
        self._runs.clear()
        self._starts.clear()
        self._len = 0
