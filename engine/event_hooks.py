"""Event webhooks: what a network subscribes to, and each delivery's life.

A network subscribes a URL to event types. The notices stream (tier changes, raffle draws,
redemptions, voucher scans, rewards) is read once by the payout actor; every notice of a subscribed
type becomes one delivery per matching subscription, sent by the same signed, retried
sender as cashback payouts (engine/webhook.py; the [payouts] schedule).

    notice kind       event type
    voucher_scanned   reward.earned     (a member redeemed a voucher: points earned)
    reward_earned     reward.earned     (welcome, streak, attendance, weekly bonus, ...:
                                         engine/rewards.py)
    tier_changed      tier.upgraded     (only a move to a higher tier)
    raffle_drawn      raffle.drawn
    item_redeemed     item.redeemed

A delivery's id (`webhook-id`, and `id` in the body) is a function of the subscription and
the notice's stream id: the same on every retry and on a re-read after a crash, so the
receiver dedupes on it.

    pending -(claimed: attempts+1, leased)-> pending -> delivered (2xx)
                                                     -> pending (retry after backoff)
                                                     -> dead (max_attempts, or HTTP 410)
    dead -(admin retry)-> pending

Pure: time and the jitter draw are arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from engine.payout import PayoutRules, backoff_s

EVENT_TYPES: tuple[str, ...] = ("reward.earned", "tier.upgraded", "raffle.drawn", "item.redeemed")
NOTICE_EVENTS: dict[str, str] = {
    "voucher_scanned": "reward.earned",
    "reward_earned": "reward.earned",
    "tier_changed": "tier.upgraded",
    "raffle_drawn": "raffle.drawn",
    "item_redeemed": "item.redeemed",
}
"""Notice kind (actors/notices.py) -> the event type delivered for it."""
MAX_URL = 2_000
MAX_ID = 64

Status = Literal["pending", "delivered", "dead"]


class HookError(ValueError):
    """A subscription or delivery move that cannot apply; `field` names the input."""

    def __init__(self, message: str, field: str = "", code: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


class Subscription(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A network's subscription: `url` receives `events` (all of EVENT_TYPES if empty)."""

    id: str
    network: str
    url: str
    events: tuple[str, ...] = ()
    secret: str = ""
    """Signs this subscription's deliveries; "" = the [payouts] webhook_secret."""

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event sent to one subscription (stored under its id)."""

    id: str
    sub_id: str
    network: str
    url: str
    event: str
    notice_id: str
    body: bytes
    """The JSON POSTed: {"id", "type", "data"}, fixed at creation (same bytes every retry)."""
    created_at: float
    status: Status = "pending"
    attempts: int = 0
    next_at: float = 0.0
    updated_at: float = 0.0
    reason: str = ""


sub_encoder = msgspec.msgpack.Encoder()
sub_decoder = msgspec.msgpack.Decoder(Subscription)
delivery_encoder = msgspec.msgpack.Encoder()
delivery_decoder = msgspec.msgpack.Decoder(Delivery)


def validate(sub: Subscription) -> Subscription:
    """`sub` if well formed; HookError naming the field otherwise."""
    for field, value in (("id", sub.id), ("network", sub.network)):
        if not value or len(value) > MAX_ID or not value.isprintable() or " " in value:
            raise HookError(f"{field} must be 1-{MAX_ID} printable characters, no spaces", field)
    if not sub.url.startswith(("http://", "https://")) or len(sub.url) > MAX_URL:
        raise HookError(f"url must be an http(s) URL of at most {MAX_URL} characters", "url")
    for ev in sub.events:
        if ev not in EVENT_TYPES:
            raise HookError(f"events must be among {', '.join(EVENT_TYPES)}", "events")
    return sub


def event_of(kind: str, body: Mapping[str, Any]) -> str | None:
    """The event type a notice is delivered as, or None (not an event anyone subscribes to)."""
    event = NOTICE_EVENTS.get(kind)
    if event == "tier.upgraded":
        old, new = body.get("old_tier"), body.get("new_tier")
        if not (isinstance(old, int) and isinstance(new, int) and new > old):
            return None
    return event


def delivery_id(sub_id: str, notice_id: str) -> str:
    """Stable: the same subscription and notice always give the same id."""
    h = hashlib.blake2b(f"{sub_id}\x00{notice_id}".encode(), digest_size=12).hexdigest()
    return f"evt_{h}"


def deliveries(
    subs: Iterable[Subscription],
    notice_id: str,
    kind: str,
    network: str,
    data: Mapping[str, Any],
    now: float,
) -> list[Delivery]:
    """The deliveries one notice makes: one per subscription of its network wanting it."""
    event = event_of(kind, data)
    if event is None:
        return []
    out = []
    for sub in subs:
        if sub.network != network or not sub.wants(event):
            continue
        did = delivery_id(sub.id, notice_id)
        body = msgspec.json.encode({"id": did, "type": event, "data": dict(data)})
        out.append(
            Delivery(
                id=did,
                sub_id=sub.id,
                network=network,
                url=sub.url,
                event=event,
                notice_id=notice_id,
                body=body,
                created_at=now,
                next_at=now,
                updated_at=now,
            )
        )
    return out


def _move(d: Delivery, to: Status, now: float, **changes: object) -> Delivery:
    return msgspec.structs.replace(d, status=to, updated_at=now, **changes)


def claimed(rules: PayoutRules, d: Delivery, now: float) -> Delivery:
    """Handed to the sender: one more attempt, leased until now + lease_s (a sender that dies
    leaves it to be sent again then)."""
    if d.status != "pending" or now < d.next_at:
        raise HookError(f"delivery {d.id} is not due", "status", "bad_transition")
    return _move(d, "pending", now, attempts=d.attempts + 1, next_at=now + rules.lease_s)


def delivered(d: Delivery, now: float) -> Delivery:
    return _move(d, "delivered", now, next_at=0.0, reason="")


def failed(
    rules: PayoutRules, d: Delivery, now: float, reason: str, jitter: float, *, final: bool = False
) -> Delivery:
    """Retried after the payout backoff, or dead after max_attempts (at once when `final`)."""
    if d.status != "pending":
        raise HookError(f"delivery {d.id} is {d.status}", "status", "bad_transition")
    if final or d.attempts >= rules.max_attempts:
        return _move(d, "dead", now, next_at=0.0, reason=reason)
    return _move(d, "pending", now, next_at=now + backoff_s(rules, d.attempts, jitter),
                 reason=reason)  # fmt: skip


def retried(d: Delivery, now: float) -> Delivery:
    """An admin sends a dead delivery again: attempts start over, due now."""
    if d.status != "dead":
        raise HookError(f"delivery {d.id} is {d.status}: only a dead one is retried", "status",
                        "bad_transition")  # fmt: skip
    return _move(d, "pending", now, attempts=0, next_at=now, reason="")
