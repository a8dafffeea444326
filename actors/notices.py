"""One decoder for the notices stream (actors.keys: `notices`), whatever wrote the entry.

Writers encode differently today: the member shards write `tier` as a msgpack TierChange
(array-like), the voucher service `voucher_scanned` as a msgpack VoucherScanned, the raffle
actor `raffle_drawn` as JSON and the store its redemption records as JSON (`item_redeemed`,
`item_refunded`, ...). The feed reads them all through `decode_notices`, which turns an entry
into flat JSON-ready dicts: {"id", "kind", "network", "user_id", "ts", ...}.

An entry holds one notice, or (a JSON array: the ledger projectors' `reward_earned`, up to
NOTICES_PER_ENTRY of them) several of one kind, which cost one append instead of one each.
The notice of an entry has the entry's stream id as its id; the i-th of several has
"{entry id}/{i}". Either way `Notice.entry_id` is the entry's id: the position to resume from.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from engine.member import TierChange
from engine.streamid import stream_id
from engine.voucher import VoucherScanned

log = logging.getLogger(__name__)

_tier = msgspec.msgpack.Decoder(TierChange)
_scanned = msgspec.msgpack.Decoder(VoucherScanned)
_json = msgspec.json.Decoder(dict[str, Any])
_json_any = msgspec.json.Decoder(dict[str, Any] | list[dict[str, Any]])


NOTICES_MAXLEN = 100_000
"""The notices stream's cap in entries (every writer appends with `MAXLEN ~` this)."""
NOTICES_PER_ENTRY = 20
"""Most notices of one kind a writer puts in one entry (a JSON array). The stream is capped
in entries (NOTICES_MAXLEN, `MAXLEN ~`), so this also bounds what a full stream holds."""


class Notice(msgspec.Struct, frozen=True):
    """A decoded notice: its id, kind and who it concerns; `body` is the JSON sent."""

    id: str
    """Unique: the stream entry's id, or "{entry}/{i}" for the i-th notice of an array."""
    entry_id: str
    """The stream entry it came in (ordering, and `?after=` resumes)."""
    kind: str
    network: str
    user_ids: tuple[str, ...]
    """Members this notice is about (the member, or a raffle's winners)."""
    body: dict[str, Any]


def _tier_body(blob: bytes) -> dict[str, Any]:
    tc = _tier.decode(blob)
    return {"network": tc.network, "user_id": tc.user_id, "old_tier": tc.old_tier,
            "new_tier": tc.new_tier, "ts": tc.ts, "lifetime": tc.lifetime}  # fmt: skip


def _scanned_body(blob: bytes) -> dict[str, Any]:
    return msgspec.to_builtins(_scanned.decode(blob))  # type: ignore[no-any-return]


def _redemption_body(blob: bytes) -> dict[str, Any]:
    red = _json.decode(blob)
    keep = ("network", "user_id", "item_id", "item_name", "cost", "channel", "status", "voucher")
    out = {k: red[k] for k in keep if k in red}
    out["redemption"] = red.get("id", "")
    out["ts"] = red.get("updated_at", red.get("created_at", 0))
    return out


_BINARY = {
    "tier": ("tier_changed", _tier_body),
    "voucher_scanned": ("voucher_scanned", _scanned_body),
}


def notice_position(notice_id: str) -> tuple[str, int]:
    """(entry id, index) of a notice id: -1 for the notice of a whole entry, i for
    "{entry}/{i}"; ValueError if it is neither."""
    entry, slash, item = notice_id.partition("/")
    stream_id(entry)
    if not slash:
        return entry, -1
    if not item.isdigit() or len(item) > 6:
        raise ValueError(f"not a notice index: {item!r}")
    return entry, int(item)


def decode_notices(entry_id: bytes | str, fields: dict[bytes, bytes]) -> list[Notice]:
    """The notices of one stream entry: one, or the items of a JSON array; none (logged)
    if no decoder knows it."""
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    for raw_name, blob in fields.items():
        name = raw_name.decode()
        try:
            if name in _BINARY:
                kind, fn = _BINARY[name]
                body: Any = fn(blob)
            elif name.startswith("item_"):
                kind, body = name, _redemption_body(blob)
            else:
                kind, body = name, _json_any.decode(blob)
            if isinstance(body, list):
                return [_notice(f"{eid}/{i}", eid, kind, b) for i, b in enumerate(body)]
            return [_notice(eid, eid, kind, body)]
        except (msgspec.DecodeError, ValueError, TypeError, KeyError, AttributeError):
            log.warning("notice_undecodable id=%s field=%s", eid, name)
            continue
    return []


def _notice(nid: str, eid: str, kind: str, body: dict[str, Any]) -> Notice:
    winners = body.get("winners")
    users = tuple(winners) if isinstance(winners, list) else ()
    if isinstance(body.get("user_id"), str):
        users = (body["user_id"], *users)
    return Notice(nid, eid, kind, str(body.get("network", "")), users,
                  {"id": nid, "kind": kind, **body})  # fmt: skip
