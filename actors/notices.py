"""One decoder for the notices stream (actors.keys: `notices`), whatever wrote the entry.

Writers encode differently today: the member shards write `tier` as a msgpack TierChange
(array-like), the voucher service `voucher_scanned` as a msgpack VoucherScanned, the raffle
actor `raffle_drawn` as JSON and the store its redemption records as JSON (`item_redeemed`,
`item_refunded`, ...). The feed reads them all through `decode_notice`, which turns an entry
into one flat JSON-ready dict: {"id", "kind", "network", "user_id", "ts", ...}.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from engine.member import TierChange
from engine.voucher import VoucherScanned

log = logging.getLogger(__name__)

_tier = msgspec.msgpack.Decoder(TierChange)
_scanned = msgspec.msgpack.Decoder(VoucherScanned)
_json = msgspec.json.Decoder(dict[str, Any])


class Notice(msgspec.Struct, frozen=True):
    """A decoded notice: its stream id, kind and who it concerns; `body` is the JSON sent."""

    id: str
    kind: str
    network: str
    user_ids: tuple[str, ...]
    """Members this notice is about (the member, or a raffle's winners)."""
    body: dict[str, Any]


def stream_id(raw: bytes | str) -> tuple[int, int]:
    """A Redis stream id as (ms, seq), for ordering; ValueError if it is not one."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


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


def decode_notice(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Notice | None:
    """The notice of one stream entry, or None (logged) if no decoder knows it."""
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    for raw_name, blob in fields.items():
        name = raw_name.decode()
        try:
            if name in _BINARY:
                kind, fn = _BINARY[name]
                body = fn(blob)
            elif name.startswith("item_"):
                kind, body = name, _redemption_body(blob)
            else:
                kind, body = name, _json.decode(blob)
        except (msgspec.DecodeError, ValueError, TypeError, KeyError):
            log.warning("notice_undecodable id=%s field=%s", eid, name)
            continue
        winners = body.get("winners")
        users = tuple(winners) if isinstance(winners, list) else ()
        if isinstance(body.get("user_id"), str):
            users = (body["user_id"], *users)
        return Notice(eid, kind, str(body.get("network", "")), users,
                      {"id": eid, "kind": kind, **body})  # fmt: skip
    return None
