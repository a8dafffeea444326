"""Rewards: the ledger entries that are news to a member (and to a network's webhooks).

Routine earning (watch ticks, chat lines) is not news; a welcome, a streak bonus, an
attendance reward, the weekly bonus or points for a follow, sub, gift, cheer, raid or custom
action, or a referral reward (either level) is. The ledger projector of the member shard's
log appends one `reward_earned` notice per such entry to the notices stream, in the
transaction that moves its offset past the entry, so each is noticed exactly once (and
balances do not wait for it); the feed shows it and event webhooks deliver it as `reward.earned`. Voucher scans have their own
notice (`voucher_scanned`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine import referral
from engine.ledger import Entry

REWARD_RULES = frozenset(
    {"welcome", "streak", "attendance", "weekly_bonus",
     "follow", "sub", "gift", "cheer", "raid", "custom"}
) | referral.REWARD_RULES  # fmt: skip
"""Ledger rules whose entries are rewards (engine/member.py, engine/attendance.py,
engine/weekly.py RULE, engine/channel.py, engine/referral.py: both levels)."""
MEMBER_PREFIX = "member:"


class RewardEarned(msgspec.Struct, frozen=True):
    """A member earned a reward: the notice `reward_earned` (JSON on the notices stream)."""

    network: str
    user_id: str
    rule: str
    points: int
    channel: str
    entry: str
    ts: float


def rewards(entries: Iterable[Entry]) -> list[RewardEarned]:
    """The reward notices of a batch's ledger entries, in their order."""
    out = []
    for e in entries:
        if e.rule not in REWARD_RULES or not e.credit.startswith(MEMBER_PREFIX):
            continue
        user_id = e.credit[len(MEMBER_PREFIX) + len(e.network) + 1 :]
        out.append(RewardEarned(e.network, user_id, e.rule, e.amount, e.channel, e.id, e.ts))
    return out
