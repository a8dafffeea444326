"""Redis stream entry ids (`{ms}-{seq}`) as comparable (ms, seq) pairs. Pure: no I/O."""

from __future__ import annotations


def stream_id(raw: bytes | str) -> tuple[int, int]:
    """A Redis stream id as (ms, seq), for ordering; ValueError if it is not one."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
