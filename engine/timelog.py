"""A map of user id -> event time kept as one string of appended frames (a packed delta log).

A channel's last chat time per chatter and last sign of life per present viewer change with
nearly every event. Written as sorted-set members, each change cost Redis a skiplist update
(~3 us of its single thread) and the shard a float's shortest repr (~1 us). Here a commit
appends one frame per map instead: the times set, the users dropped and a horizon below which
every time goes, msgpack-encoded (a float is its 8 bytes, exact), behind a 4-byte length.
Reading replays the frames in order. When the frames outgrow `COMPACT_RATIO` times the last
snapshot (and `COMPACT_MIN_BYTES`), the writer replaces them with one snapshot frame of the
whole map (`LogSize.frame`), so what is stored stays within a few times the map's own size.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping

import msgspec

COMPACT_MIN_BYTES = 64 * 1024
"""Frames below this many bytes in all are never compacted (a quiet channel's log)."""
COMPACT_RATIO = 3
"""Compact when the stored frames exceed this many times the last snapshot's size."""

_LENGTH = struct.Struct("<I")


class Frame(msgspec.Struct, array_like=True):
    """One commit's changes to the map, applied in this order: `drop`, `times`, `below`."""

    times: dict[str, float] = {}
    drop: list[str] = []
    below: float = -math.inf
    """Times before this are forgotten (-inf: none)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def frame(times: Mapping[str, float], drop: Iterable[str] = (), below: float = -math.inf) -> bytes:
    """One frame, ready to append."""
    body = _encoder.encode(Frame(dict(times), sorted(drop), below))
    return _LENGTH.pack(len(body)) + body


def apply(into: dict[str, float], f: Frame) -> None:
    for user in f.drop:
        into.pop(user, None)
    into.update(f.times)
    if f.below > -math.inf:
        for user in [u for u, t in into.items() if t < f.below]:
            del into[user]


def replay(blob: bytes | None) -> dict[str, float]:
    """The map a stored string of frames holds (empty for none)."""
    out: dict[str, float] = {}
    if not blob:
        return out
    view = memoryview(blob)
    at = 0
    while at < len(view):
        (n,) = _LENGTH.unpack_from(view, at)
        at += _LENGTH.size
        assert at + n <= len(view), "a truncated time-log frame"
        apply(out, _decoder.decode(view[at : at + n]))
        at += n
    return out


def count_since(blob: bytes | None, since: float) -> int:
    """How many users a stored string of frames holds at `since` or later."""
    return sum(1 for t in replay(blob).values() if t >= since)


class LogSize:
    """What one stored log holds, for the writer: bytes in all, bytes of its last snapshot."""

    __slots__ = ("min_bytes", "snapshot", "stored")

    def __init__(self, stored: int = 0, min_bytes: int = COMPACT_MIN_BYTES) -> None:
        self.stored = stored
        self.snapshot = stored
        """A log read at start counts as a snapshot: it is compacted once it has tripled."""
        self.min_bytes = min_bytes

    def frame(
        self,
        whole: Mapping[str, float],
        times: Mapping[str, float],
        drop: Iterable[str] = (),
        below: float = -math.inf,
    ) -> tuple[bool, bytes]:
        """What to write for a commit that changed the map to `whole` by (`times`, `drop`,
        `below`): (False, a frame to append), or (True, a snapshot of `whole` that replaces
        the log) once the log would outgrow its bound."""
        delta = frame(times, drop, below)
        if self.stored + len(delta) > max(self.min_bytes, COMPACT_RATIO * self.snapshot):
            return True, self.rewrite(whole)
        self.stored += len(delta)
        return False, delta

    def rewrite(self, whole: Mapping[str, float]) -> bytes:
        """A snapshot of `whole` to replace the log with."""
        snap = frame(whole)
        self.stored = self.snapshot = len(snap)
        return snap
