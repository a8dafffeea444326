"""The plain values the actors run with, built once by the gateway's settings and passed down."""

from __future__ import annotations

from typing import Any

import msgspec


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str
    namespace: str = "rally"
    channel_shards: int = 2
    member_shards: int = 2
    read_count: int = 2_000
    """Most stream entries a shard reads per XREADGROUP."""
    block_ms: int = 50
    dedupe_days: int = 2
    """Event ids are remembered for this many UTC days (today and the days before)."""
    watch_clock_interval_s: float = 10.0
    """How often the scheduler advances every channel's clock; 0 turns it off."""
    streak_rollover: bool = True
    member_cache_max: int = 2_000_000
    ledger_sink: bool = False
    rules: dict[str, Any] = {}
    """engine.rules.RuleBook.to_builtins()"""
