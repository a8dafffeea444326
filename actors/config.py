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
    linger_ms: float = 0.0
    """After a read that drained its stream and gave fewer than LINGER_BELOW_ITEMS items, a
    shard waits this long and reads again before it applies them (0: never waits)."""
    max_entry_failures: int = 5
    """A stream entry whose processing fails this many times goes to the dead-letter stream."""
    lateness_s: float = 2.0
    """Allowed lateness: events are applied in event-time order once the watermark (the
    newest event time seen, minus this) has passed them; an event older than the watermark
    when read is late (see README, "Event time")."""
    max_event_age_s: float = 3_600.0
    """The gateway rejects events older than this (by the server clock)."""
    max_future_s: float = 60.0
    """The gateway rejects events dated more than this ahead of the server clock."""
    dedupe_window_s: float = 3_720.0
    """Event ids are remembered until the partition's event time is this far past their
    event-time minute (engine/dedupe.py); at least max_event_age_s + max_future_s."""
    watch_clock_interval_s: float = 1.0
    """How often the scheduler advances every channel's clock; 0 turns it off."""
    streak_rollover: bool = True
    member_cache_max: int = 2_000_000
    archive_path: str = ""
    """The DuckDB ledger archive; "" = none: no ledger sink runs and ledgerlog is never trimmed."""
    archive_chat_text: bool = False
    """The ledger sink lands chat messages' text with the events (else NULL)."""
    snapshot_dir: str = ""
    """Where the ledger sink writes analytics snapshots (analytics/snapshot.py); "" = none."""
    snapshot_interval_s: float = 0.0
    """How often the ledger sink takes a snapshot; 0 = never (only when asked)."""
    snapshots_kept: int = 3
    trim_interval_s: float = 1.0
    """How often the scheduler trims the streams to what every consumer committed; 0 = never."""
    notices_kept: int = 1_000
    """The newest notices stream entries kept for the feed whatever the consumers committed
    (the feed's backlog_max: what a client resuming with ?after= is replayed)."""
    spend_record_ttl_s: int = 7 * 86_400
    """How long a member shard remembers a transfer's key and result (engine/spend.py)."""
    rules: dict[str, Any] = {}
    """engine.rules.RuleBook.to_builtins()"""
    payouts: PayoutConfig | None = None
    """The payout actor's settings; None: no payout actor runs."""


class PayoutConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The payout actor's settings ([payouts]; engine.payout.PayoutRules as builtins)."""

    enabled: bool = True
    rules: dict[str, Any] = {}
    parallelism: int = 16
    """Most deliveries in flight at once."""
    tick_s: float = 0.2
    """How long the payout loop waits when nothing is due."""
    webhook_secret: str = ""
    webhook_timeout_s: float = 10.0
    jitter_seed: int = 0
    """Seed of the backoff jitter draws (0: from the process id and the time)."""
    chain_rpc: str = ""
    """A JSON-RPC node; "" = the embedded EVM (in the payout actor's process)."""
    chain_private_key: str = ""
    """The minter's key on chain_rpc (the embedded EVM uses its first funded account)."""
    token_address: str = ""
    """The deployed RallyToken; "" = deployed at start (once per chain: kept in Redis)."""
    confirmations: int = 1
    chain_batch: int = 200
    """Most payouts one mintBatch carries."""
    retention_s: float = 0.0
    """A final payout (settled, or voided and refunded) is kept this long; 0 = forever."""
    event_subscriptions: list[dict[str, Any]] = []
    """[events] subscriptions: engine.event_hooks.Subscription fields."""
    event_retention_s: float = 86_400.0
    """A delivered event webhook is kept (for reading back) this long."""
