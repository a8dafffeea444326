"""The reward store: catalog items, what a redemption must satisfy, and its records.

An item belongs to a network, optionally to one channel of it. Redeeming one debits its
cost from the member (a transfer to the `store:{network}` account, engine/spend.py) and
takes one from its stock, atomically: the stock is reserved first, then the debit is
applied; a refused debit gives the stock back. Limits are split by who can hold them
without a lock: stock, the per-stream limit and the global cooldown are the item's (Redis,
in one script); the per-member limit and the per-member cooldown are the member's (spend
guards, checked with the debit by the member's shard). The minimum tier and the
availability window are checked by the gateway (a tier never goes down).

No I/O here; time is an argument.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

from engine.gating import required_tier, shortfall
from engine.rules import TierRules
from engine.spend import Guard, Transfer

Status = Literal["reserving", "pending", "fulfilled", "refunding", "refunded", "failed"]
MAX_NAME = 100
MAX_DESCRIPTION = 2_000
MAX_COST = 10**9
MAX_STOCK = 10**9
MAX_LIMIT = 10**6
MAX_COOLDOWN_S = 366 * 86_400
ITEM_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."
UNLIMITED = -1
"""The stored stock of an item with no stock limit."""


class StoreError(ValueError):
    """An item definition or a redemption that cannot be accepted; names the field."""

    def __init__(
        self,
        message: str,
        field: str,
        code: str = "invalid_item",
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
        self.extra = extra or {}
        """More of the refusal (tier_too_low: tier_required, points_needed)."""


class ItemSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An item as an admin writes it (JSON). On update, every field given replaces the old."""

    name: str | None = None
    description: str | None = None
    cost: int | None = None
    stock: int | msgspec.UnsetType | None = msgspec.UNSET
    """Items left; null = unlimited. On update: sets what is left now."""
    channel: str | None = None
    """"" or absent: every channel of the network; else only redeemable "in" this channel."""
    per_member_limit: int | None = None
    per_stream_limit: int | None = None
    cooldown_s: float | None = None
    member_cooldown_s: float | None = None
    min_tier: str | None = None
    available_from: float | None = None
    available_until: float | None = None
    enabled: bool | None = None


class Item(msgspec.Struct, frozen=True, omit_defaults=False):
    """A catalog item (its stock lives beside it, in Redis, as a counter)."""

    id: str
    network: str
    name: str
    cost: int
    description: str = ""
    channel: str = ""
    per_member_limit: int = 0
    """Redemptions per member, ever (0: no limit; a refund gives one back)."""
    per_stream_limit: int = 0
    """Redemptions per live stream of `channel`, everyone together (0: no limit)."""
    cooldown_s: float = 0.0
    """Seconds between two redemptions of the item, by anyone."""
    member_cooldown_s: float = 0.0
    """Seconds between two redemptions of the item by one member."""
    min_tier: str = ""
    available_from: float = 0.0
    available_until: float = 0.0
    """0: no bound."""
    enabled: bool = True
    created_at: float = 0.0
    updated_at: float = 0.0


class Redemption(msgspec.Struct, frozen=True):
    """One redemption of an item by a member, from its reservation to its end."""

    id: str
    network: str
    user_id: str
    item_id: str
    item_name: str
    cost: int
    channel: str
    status: Status
    created_at: float
    updated_at: float
    spend_key: str
    entry_id: str = ""
    refund_entry_id: str = ""
    reason: str = ""
    """Why it failed (a spend result code), or an admin's note on fulfil or refund."""
    voucher: str = ""
    """The code id of the voucher that paid for it (then `cost` is 0: no point moves)."""


item_encoder = msgspec.json.Encoder()
item_decoder = msgspec.json.Decoder(Item)
spec_decoder = msgspec.json.Decoder(ItemSpec)
redemption_decoder = msgspec.json.Decoder(Redemption)


def _ok_text(value: str, field: str, limit: int, *, empty: bool = False) -> str:
    if (not value and not empty) or len(value) > limit or not value.isprintable():
        raise StoreError(f"{field} must be {0 if empty else 1}-{limit} printable characters", field)
    return value


def check_item_id(value: str, field: str = "item_id") -> str:
    if not 0 < len(value) <= 64 or any(c not in ITEM_ID_CHARS for c in value):
        raise StoreError(
            f"{field} must be 1-64 characters of A-Z a-z 0-9 _ - .", field, "invalid_item_id"
        )
    return value


def _int(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise StoreError(f"{field} must be an integer from {low} to {high}", field)
    return value


def _secs(value: float, field: str, high: float) -> float:
    if not 0 <= value <= high:
        raise StoreError(f"{field} must be a number of seconds from 0 to {high:g}", field)
    return float(value)


def field_of(err: msgspec.ValidationError) -> str:
    """The field a msgspec validation error names ("body" when it names none)."""
    text = str(err)
    if "unknown field `" in text:
        return text.split("unknown field `", 1)[1].split("`", 1)[0]
    if "at `$." in text:
        return text.rpartition("at `$.")[2].rstrip("`").split("[", 1)[0] or "body"
    return "body"


def decode_spec(body: bytes) -> ItemSpec:
    """The JSON body of an item create or update; StoreError naming the field."""
    try:
        return spec_decoder.decode(body)
    except msgspec.ValidationError as err:
        raise StoreError(str(err), field_of(err)) from err
    except msgspec.DecodeError as err:
        raise StoreError(f"malformed JSON: {err}", "body", "malformed_json") from err


def build_item(
    item_id: str,
    network: str,
    spec: ItemSpec,
    tiers: tuple[str, ...],
    now: float,
    old: Item | None = None,
) -> Item:
    """The item `spec` creates (old None) or makes of `old`; StoreError naming the field."""
    check_item_id(item_id)
    fields: dict[str, Any] = {} if old is None else msgspec.structs.asdict(old)
    given = {
        f: getattr(spec, f)
        for f in spec.__struct_fields__
        if f != "stock" and getattr(spec, f) is not None
    }
    if old is None:
        for required in ("name", "cost"):
            if required not in given:
                raise StoreError(f"{required} is required", required, "missing_field")
    fields.update(given)
    fields.update(id=item_id, network=network, updated_at=now)
    if old is None:
        fields["created_at"] = now
    _ok_text(fields["name"], "name", MAX_NAME)
    _ok_text(fields.get("description", ""), "description", MAX_DESCRIPTION, empty=True)
    if fields.get("channel"):
        check_item_id(fields["channel"], "channel")
    _int(fields["cost"], "cost", 1, MAX_COST)
    _int(fields.get("per_member_limit", 0), "per_member_limit", 0, MAX_LIMIT)
    _int(fields.get("per_stream_limit", 0), "per_stream_limit", 0, MAX_LIMIT)
    if fields.get("per_stream_limit") and not fields.get("channel"):
        raise StoreError("per_stream_limit needs the item's channel", "per_stream_limit")
    _secs(fields.get("cooldown_s", 0.0), "cooldown_s", MAX_COOLDOWN_S)
    _secs(fields.get("member_cooldown_s", 0.0), "member_cooldown_s", MAX_COOLDOWN_S)
    tier = fields.get("min_tier", "")
    if tier and tier not in tiers:
        raise StoreError(f"min_tier must be one of {', '.join(tiers)}", "min_tier")
    start, end = fields.get("available_from", 0.0), fields.get("available_until", 0.0)
    if start < 0 or end < 0 or (start and end and end <= start):
        raise StoreError("available_until must be after available_from", "available_until")
    return msgspec.convert(fields, Item)


def stock_of(spec: ItemSpec, creating: bool) -> int | None:
    """The stock to store: UNLIMITED for null, None when an update leaves it alone."""
    if spec.stock is msgspec.UNSET:
        return UNLIMITED if creating else None
    if spec.stock is None:
        return UNLIMITED
    return _int(spec.stock, "stock", 0, MAX_STOCK)


def check_redeemable(
    item: Item,
    tier: str,
    tiers: tuple[str, ...],
    now: float,
    rules: TierRules | None = None,
    lifetime: int = 0,
    channel_min_tier: str = "",
) -> None:
    """What the gateway checks before reserving: enabled, in its window, tier high enough
    for the item and its channel (`channel_min_tier`); given the network's tier `rules` and
    the member's `lifetime` points, a refusal says the tier required and the points still
    needed."""
    if not item.enabled:
        raise StoreError(f"item {item.id!r} is not available", "item_id", "item_disabled")
    if item.available_from and now < item.available_from:
        raise StoreError(f"item {item.id!r} is not available yet", "item_id", "not_available_yet")
    if item.available_until and now >= item.available_until:
        raise StoreError(
            f"item {item.id!r} is no longer available", "item_id", "no_longer_available"
        )
    need = required_tier(tiers, item.min_tier, channel_min_tier)
    if need and tiers.index(tier) < tiers.index(need):
        extra: dict[str, object] = {"tier_required": need}
        if rules is not None:
            short = shortfall(rules, need, tiers.index(tier), lifetime)
            extra["points_needed"] = short.points_needed if short else 0
        raise StoreError(
            f"item {item.id!r} needs tier {need} (member is {tier})",
            "min_tier",
            "tier_too_low",
            extra,
        )


def redemption_id(network: str, user_id: str, idempotency_key: str) -> str:
    """A redemption's id: a function of the member and their Idempotency-Key."""
    raw = f"{len(network)}:{network}{len(user_id)}:{user_id}{idempotency_key}".encode()
    return "rd_" + hashlib.blake2b(raw, digest_size=12).hexdigest()


def member_guard(item: Item, add: int = 1) -> tuple[Guard, ...]:
    """The member's counter for `item`: the per-member limit and cooldown (none: no guard)."""
    if not item.per_member_limit and not item.member_cooldown_s:
        return ()
    g = Guard(
        f"store:{item.id}", limit=item.per_member_limit, add=add, cooldown_s=item.member_cooldown_s
    )
    if item.per_member_limit == 0:  # a cooldown only: the counter may go once it has passed
        g = msgspec.structs.replace(g, keep_s=item.member_cooldown_s)
    return (g,)


def needs_spend(t: Transfer) -> bool:
    """False for a free redemption (or its refund) with no member guard: nothing for the
    member's shard to do."""
    return t.amount > 0 or bool(t.guards)


def redeem_transfer(item: Item, red: Redemption) -> Transfer:
    return Transfer(
        red.spend_key, red.network, red.user_id, red.cost, "debit", f"store:{red.network}",
        "store_redeem", ref=f"{item.id}/{red.id}", channel=red.channel,
        guards=member_guard(item), ts=red.created_at,
    )  # fmt: skip


def refund_transfer(item: Item | None, red: Redemption, now: float) -> Transfer:
    """Points back to the member; the per-member limit gets its use back."""
    guards = () if item is None or not item.per_member_limit else member_guard(item, add=-1)
    return Transfer(
        f"{red.spend_key}/refund", red.network, red.user_id, red.cost, "credit",
        f"store:{red.network}", "store_refund", ref=f"{red.item_id}/{red.id}",
        channel=red.channel, guards=guards, ts=now,
    )  # fmt: skip
