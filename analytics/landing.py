"""What the ledger sink lands beside the ledger: accepted events and member notices.

Two kinds of stream feed the archive besides the ledger logs, each read in stream order and
stored exactly once by the same offset rule (the last stream entry id stored per stream,
committed in the DuckDB transaction that stores its rows, table `feed_offsets`):

    ingest:{p}   field `e` = msgpack list[engine.events.Event]: every event the gateway
                 acknowledged, one row each in `events` (a `clock` entry gives no row).
                 An event id re-sent in a later batch was acknowledged twice and is stored
                 twice; the snapshot views keep its first row (see docs/ANALYTICS.md).
    notices      one field per entry, its name the notice kind: `tier` (msgpack
                 engine.member.TierChange, a row in `tier_changes`), `voucher_scanned`
                 (msgpack engine.voucher.VoucherScanned), `raffle_drawn` and the store's
                 `item_*` notices (JSON): one row each in `notices`, the body as JSON text;
                 a JSON array (the ledger projectors' `reward_earned`) gives a row per item.
                 The notices stream is capped (actors.notices.NOTICES_MAXLEN, in entries): a sink more
                 than that many notices behind loses the oldest (they were never landed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

import msgspec
import pyarrow as pa

from engine import events as ev
from engine.member import TierChange
from engine.streamid import stream_id
from engine.voucher import VoucherScanned

FEED_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id VARCHAR NOT NULL,
    network VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,  -- '' for channel events (online, offline, viewers, raid)
    kind VARCHAR NOT NULL,     -- chat, join, leave, viewers, online, offline, follow, sub, ...
    ts DOUBLE NOT NULL,        -- event time (unix seconds)
    action VARCHAR NOT NULL,   -- a custom event's action, else ''
    viewers INTEGER NOT NULL,  -- a viewers snapshot's size, else 0
    text VARCHAR,              -- chat text when [analytics] chat_text is on, else NULL
    stream VARCHAR NOT NULL,
    entry_id VARCHAR NOT NULL,
    entry_ms BIGINT NOT NULL,
    entry_seq BIGINT NOT NULL,
    pos INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tier_changes (
    network VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,
    old_tier INTEGER NOT NULL,
    new_tier INTEGER NOT NULL,
    ts DOUBLE NOT NULL,
    lifetime BIGINT NOT NULL,
    entry_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS notices (
    kind VARCHAR NOT NULL,     -- voucher_scanned, raffle_drawn, item_redeemed, item_refunded, ...
    ts DOUBLE NOT NULL,        -- the notice's own time if it has one, else the stream entry's
    network VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,
    body VARCHAR NOT NULL,     -- the notice as JSON
    entry_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_offsets (
    stream VARCHAR PRIMARY KEY,
    entry_id VARCHAR NOT NULL, -- the last stream entry landed (with everything before it)
    entries BIGINT NOT NULL,
    rows BIGINT NOT NULL
);
"""

EVENTS_ARROW = pa.schema(
    [
        ("id", pa.string()),
        ("network", pa.string()),
        ("channel", pa.string()),
        ("user_id", pa.string()),
        ("kind", pa.string()),
        ("ts", pa.float64()),
        ("action", pa.string()),
        ("viewers", pa.int32()),
        ("text", pa.string()),
        ("stream", pa.string()),
        ("entry_id", pa.string()),
        ("entry_ms", pa.int64()),
        ("entry_seq", pa.int64()),
        ("pos", pa.int32()),
    ]
)
TIERS_ARROW = pa.schema(
    [
        ("network", pa.string()),
        ("user_id", pa.string()),
        ("old_tier", pa.int32()),
        ("new_tier", pa.int32()),
        ("ts", pa.float64()),
        ("lifetime", pa.int64()),
        ("entry_id", pa.string()),
    ]
)
NOTICES_ARROW = pa.schema(
    [
        ("kind", pa.string()),
        ("ts", pa.float64()),
        ("network", pa.string()),
        ("user_id", pa.string()),
        ("body", pa.string()),
        ("entry_id", pa.string()),
    ]
)

_tier = msgspec.msgpack.Decoder(TierChange)
_TAG: dict[type, str] = {k: k.__struct_config__.tag for k in get_args(ev.Event)}
"""Each event class's kind (decode_events gives these classes, never their checked twins)."""
_voucher = msgspec.msgpack.Decoder(VoucherScanned)
_json = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One entry of an ingest or notices stream as read from Redis."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]


@dataclass
class Landed:
    """The Arrow tables of a run of feed entries, and the rows each stream gave."""

    events: pa.Table
    tiers: pa.Table
    notices: pa.Table
    rows: dict[str, int]
    skipped: int = 0
    """Stream entries that did not decode (poison: dead-lettered by the shards too)."""


def land(feed: Sequence[FeedEntry], chat_text: bool) -> Landed:
    """The rows of `feed`: events of ingest entries, tier changes and notices."""
    evs: list[list[Any]] = [[] for _ in EVENTS_ARROW]
    tiers: list[list[Any]] = [[] for _ in TIERS_ARROW]
    notes: list[list[Any]] = [[] for _ in NOTICES_ARROW]
    rows: dict[str, int] = {}
    skipped = 0
    for x in feed:
        n = 0
        blob = x.fields.get(b"e")
        try:
            if blob is not None:
                n = _events(x, ev.decode_events(blob), chat_text, evs)
            elif x.stream.rpartition(":")[2] == "notices":
                n = _notices(x, tiers, notes)
            # else an ingest entry without events (clock, flush): no row
        except (msgspec.DecodeError, msgspec.ValidationError):
            # an entry the channel shards dead-letter too: never applied, never landed (rows
            # are appended only once the entry's blob decoded: nothing of it is half in)
            skipped += 1
            n = 0
        rows[x.stream] = rows.get(x.stream, 0) + n
    return Landed(_table(evs, EVENTS_ARROW), _table(tiers, TIERS_ARROW),
                  _table(notes, NOTICES_ARROW), rows, skipped)  # fmt: skip


def _events(x: FeedEntry, events: list[ev.Event], chat_text: bool, cols: list[list[Any]]) -> int:
    """Column by column (a comprehension each, not a row tuple per event): the sink lands
    every accepted event, so this is on the busiest consumer's path. The columns only a few
    kinds fill (action, viewers, text) are read from events only when the entry holds one."""
    ms, seq = stream_id(x.entry_id)
    n = len(events)
    (c_id, c_network, c_channel, c_user, c_kind, c_ts, c_action, c_viewers, c_text,
     c_stream, c_entry, c_ms, c_seq, c_pos) = cols  # fmt: skip
    c_id += [e.id for e in events]
    c_network += [e.network for e in events]
    c_channel += [e.channel for e in events]
    c_user += [e.user_id for e in events]
    kinds = [_TAG[type(e)] for e in events]
    c_kind += kinds
    c_ts += [e.ts for e in events]
    present = set(kinds)
    if "custom" in present:
        c_action += [e.action if type(e) is ev.Custom else "" for e in events]
    else:
        c_action += [""] * n
    if "viewers" in present:
        c_viewers += [len(e.viewers) if type(e) is ev.Viewers else 0 for e in events]
    else:
        c_viewers += [0] * n
    if chat_text and "chat" in present:
        c_text += [e.text if type(e) is ev.Chat else None for e in events]
    else:
        c_text += [None] * n
    c_stream += [x.stream] * n
    c_entry += [x.entry_id] * n
    c_ms += [ms] * n
    c_seq += [seq] * n
    c_pos += range(n)
    return n


def _notices(x: FeedEntry, tiers: list[list[Any]], notes: list[list[Any]]) -> int:
    n = 0
    for raw_kind, blob in x.fields.items():
        kind = raw_kind.decode()
        if kind == "tier":
            t = _tier.decode(blob)
            row: tuple[Any, ...] = (
                t.network,
                t.user_id,
                t.old_tier,
                t.new_tier,
                t.ts,
                t.lifetime,
                x.entry_id,
            )
            for col, v in zip(tiers, row, strict=True):
                col.append(v)
            n += 1
            continue
        got = _body(kind, blob)
        for body in got if isinstance(got, list) else [got]:  # a JSON array: one row each
            ts = body.get("ts") if isinstance(body, dict) else None
            if not isinstance(ts, int | float):
                ts = stream_id(x.entry_id)[0] / 1000
            net = str(body.get("network", "")) if isinstance(body, dict) else ""
            user = str(body.get("user_id", "")) if isinstance(body, dict) else ""
            row = (kind, float(ts), net, user, msgspec.json.encode(body).decode(), x.entry_id)
            for col, v in zip(notes, row, strict=True):
                col.append(v)
            n += 1
    return n


def _body(kind: str, blob: bytes) -> Any:
    if kind == "voucher_scanned":
        return msgspec.to_builtins(_voucher.decode(blob))
    try:
        return _json.decode(blob)
    except msgspec.DecodeError:
        return {"raw": blob.hex()}


def _table(cols: list[list[Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, schema, strict=True)], schema=schema
    )
