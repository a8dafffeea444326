"""Stable placement of virtual actors on shards."""

from __future__ import annotations

import zlib


def shard_of(key: str, shards: int) -> int:
    """The shard hosting `key`: a stable hash (crc32), the same in every process and run."""
    return zlib.crc32(key.encode()) % shards
