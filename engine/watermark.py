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

import heapq
from collections.abc import Iterator
from typing import Generic, TypeVar

NEVER = float("-inf")

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    """Items keyed by (ts, key), released in that order once the watermark passes them."""

    __slots__ = ("_heap", "_newest", "_seq", "lateness_s", "watermark")

    def __init__(self, lateness_s: float, watermark: float = NEVER) -> None:
        assert lateness_s >= 0
        self.lateness_s = lateness_s
        self.watermark = watermark
        self._heap: list[tuple[float, str, int, T]] = []
        self._seq = 0
        self._newest = NEVER
        """At least the newest ts held (an upper bound): past the watermark, all goes."""

    def __len__(self) -> int:
        return len(self._heap)

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
        # deduplicated events); items themselves are never compared
        heapq.heappush(self._heap, (ts, key, self._seq, item))
        self._seq += 1
        if ts > self._newest:
            self._newest = ts

    def push_all(self, items: list[tuple[float, str, T]]) -> None:
        """push(ts, key, item) for each of `items`, in order (one heapify when they
        outnumber what is held)."""
        heap, seq = self._heap, self._seq
        if len(items) > len(heap):
            heap.extend([(ts, key, seq + i, item) for i, (ts, key, item) in enumerate(items)])
            heapq.heapify(heap)
        else:
            push = heapq.heappush
            for i, (ts, key, item) in enumerate(items):
                push(heap, (ts, key, seq + i, item))
        self._seq = seq + len(items)
        if items:
            self._newest = max(self._newest, max(ts for ts, _, _ in items))

    def _pop_released(self) -> list[tuple[float, str, int, T]]:
        """Remove and return the entries strictly older than the watermark, in order. When
        all of them go (a watch tick's credits), one sort instead of a pop each: (ts, key,
        seq) is a total order, so both ways give the same sequence."""
        heap, watermark = self._heap, self.watermark
        if not heap or heap[0][0] >= watermark:
            return []
        if self._newest < watermark:
            heap.sort()
            out = heap[:]
            heap.clear()
            self._newest = NEVER
            return out
        pop = heapq.heappop
        out = []
        while heap and heap[0][0] < watermark:
            out.append(pop(heap))
        return out

    def release(self) -> list[T]:
        """Everything strictly older than the watermark, in (ts, key) order."""
        return [e[3] for e in self._pop_released()]

    def release_keyed(self) -> list[tuple[float, str, T]]:
        """release(), each item with its (ts, key): to pass on to another buffer."""
        return [(ts, key, item) for ts, key, _, item in self._pop_released()]

    def held(self) -> Iterator[tuple[float, str, T]]:
        """What is held back, unordered."""
        for ts, key, _, item in self._heap:
            yield ts, key, item

    def clear(self) -> None:
        self._heap.clear()
        self._newest = NEVER
