"""The member virtual actor's rules: cooldowns, caps, multipliers, tiers, streaks, welcome."""

from __future__ import annotations

import msgspec

from engine import quality, referral
from engine.gating import CreditRefused, custom_refusal
from engine.ledger import Entry, member_account, treasury_account
from engine.rules import EarnRules, NetworkRules, WeeklyRules

DAY_S = 86_400


class Credit(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    """A channel's claim that a member earned `points` (before multipliers) under `rule`.

    The id is deterministic (an event id, or the channel, tick and user of a watch tick).
    `other` names the other member of a referral credit (engine/referral.py); `digest` is a
    chat credit's normalised message digest (engine/quality.py `chat_digest`, 0: no text).
    """

    id: str
    network: str
    channel: str
    user_id: str
    user_name: str
    ts: float
    rule: str
    points: int
    other: str = ""
    digest: int = 0


class Use(msgspec.Struct, array_like=True):
    """What a member has taken of one spend guard's counter (engine/spend.py Guard)."""

    n: int = 0
    last_ts: float = -1e18
    until: float = 0.0
    """When the counter is forgotten (0: never)."""


WATCHED, ATTENDED, STREAK = 1, 2, 4
"""WeekActivity.flags: the features of the weekly bonus (engine/weekly.py)."""
EPOCH_MONDAY_DAYS = 3
"""1970-01-01 was a Thursday: day d is in week (d + 3) // 7, weeks starting on Monday."""


class WeekActivity(msgspec.Struct, array_like=True, gc=False):
    """What a member did in one week (kept in MemberState for this week and the last)."""

    week: int = -1
    flags: int = 0
    chat_days: int = 0
    last_chat_day: int = -1


class MemberState(msgspec.Struct, array_like=True, gc=False):
    """What Rallypoint knows about one member of one network."""

    name: str = ""
    balance: int = 0
    lifetime: int = 0
    tier: int = 0
    streak: int = 0
    last_day: int = -1
    chat_last_ts: float = -1e18
    chat_day: int = -1
    chat_day_points: int = 0
    entries: int = 0
    uses: dict[str, Use] = {}
    """Spend guard counters (engine/spend.py), by guard key; empty for most members."""
    week_now: WeekActivity = msgspec.field(default_factory=WeekActivity)
    week_before: WeekActivity = msgspec.field(default_factory=WeekActivity)
    """What the member did this week and the week before (the weekly bonus)."""
    presence: quality.Presence = msgspec.field(default_factory=quality.Presence)
    """Presence-quality signals (anti-farming, engine/quality.py)."""
    referral: referral.ReferralState = msgspec.field(default_factory=referral.ReferralState)
    """Who referred the member, and the referral rewards it received (engine/referral.py)."""
    earned_in: dict[str, int] = {}
    """Points earned per channel (ledger entries from the treasury): the member's standing
    in each channel, kept with its balance. Last: a state stored before it decodes empty."""


class TierChange(msgspec.Struct, frozen=True, array_like=True):
    """A member moved from one tier to another: itself an event (notices, bot, feed)."""

    network: str
    user_id: str
    old_tier: int
    new_tier: int
    ts: float
    lifetime: int


class Applied(msgspec.Struct):
    """What applying credits produced: ledger entries and tier changes, in order."""

    entries: list[Entry] = msgspec.field(default_factory=list)
    tier_changes: list[TierChange] = msgspec.field(default_factory=list)
    flags: list[quality.Flag] = msgspec.field(default_factory=list)
    """Members flagged (or cleared) by the presence-quality score, for the admin view."""
    withheld: int = 0
    """Watch points withheld by the presence-quality score (before multipliers)."""
    refused: list[CreditRefused] = msgspec.field(default_factory=list)
    """Credits that earned nothing (custom actions below the channel's custom_min_tier)."""
    chat_withheld: int = 0
    """Chat points withheld as repeated messages (before multipliers)."""


def day_of(ts: float) -> int:
    return int(ts // DAY_S)


def effective_streak(state: MemberState, today: int) -> int:
    """The streak as of `today`: a missed day has reset it."""
    return state.streak if state.last_day >= today - 1 else 0


def _post(
    state: MemberState, out: Applied, credit: Credit, account: str, rule: str, amount: int,
    entry_id: str,
) -> None:  # fmt: skip
    """An entry of `amount` from the network's treasury to `account` (the credited member's:
    built once by the caller, for up to three entries)."""
    if amount <= 0:
        return
    state.balance += amount
    state.lifetime += amount
    state.entries += 1
    earned = state.earned_in
    earned[credit.channel] = earned.get(credit.channel, 0) + amount
    out.entries.append(
        Entry(
            entry_id,
            credit.ts,
            credit.network,
            treasury_account(credit.network),
            account,
            amount,
            rule,
            credit.channel,
        )
    )


def _chat_points(state: MemberState, credit: Credit, earn: EarnRules, day: int) -> int:
    if credit.ts - state.chat_last_ts < earn.chat_cooldown_s:
        return 0
    if state.chat_day != day:
        state.chat_day = day
        state.chat_day_points = 0
    points = min(credit.points, earn.chat_daily_cap - state.chat_day_points)
    if points <= 0:
        return 0
    state.chat_last_ts = credit.ts
    state.chat_day_points += points
    return points


def week_of_day(day: int) -> int:
    return (day + EPOCH_MONDAY_DAYS) // 7


def _current(state: MemberState, week: int) -> WeekActivity:
    cur = state.week_now
    if cur.week != week:
        if cur.week >= 0:
            state.week_before = cur
        cur = state.week_now = WeekActivity(week)
    return cur


def note_week(state: MemberState, rule: str, day: int, rules: WeeklyRules) -> None:
    """Note what a credit of `rule` on `day` (applied to `state`) says about this week."""
    cur = state.week_now
    if cur.week != (day + EPOCH_MONDAY_DAYS) // 7:  # week_of_day, inlined: a hot path
        cur = _current(state, (day + EPOCH_MONDAY_DAYS) // 7)
    if rule == "watch":
        cur.flags |= WATCHED
    elif rule == "attendance":
        cur.flags |= ATTENDED
    elif rule == "chat" and cur.last_chat_day != day:
        cur.last_chat_day = day
        cur.chat_days += 1
    if state.streak >= rules.streak_days > 0:
        cur.flags |= STREAK


def apply_credit(
    state: MemberState, credit: Credit, rules: NetworkRules, earn: EarnRules, out: Applied
) -> None:
    """Apply one credit to `state` (mutated in place), appending entries to `out`.

    Order: welcome (first credit ever), daily streak, then the rule's own points with the
    chat cooldown and daily cap, multiplied by the member's tier before this credit. A custom
    action below its channel's `custom_min_tier` earns nothing at all (engine/gating.py).
    """
    if credit.rule in referral.SPECIAL_RULES:
        apply_referral(state, credit, rules, out)
        return
    if credit.rule == "custom" and earn.custom_min_tier:
        need = custom_refusal(rules.tiers, earn.custom_min_tier, state.tier)
        if need is not None:
            out.refused.append(CreditRefused(credit.network, credit.user_id, credit.channel,
                                             credit.id, credit.rule, credit.ts, "tier_too_low",
                                             need))  # fmt: skip
            return
    if credit.user_name:
        state.name = credit.user_name
    tier_before = state.tier
    pres = state.presence
    account = member_account(credit.network, credit.user_id)
    uid = ""  # "network:user", the welcome and streak entries' id prefix: built when needed
    if state.last_day < 0:
        pres.first_ts = credit.ts  # the account's first credit on the network
        uid = f"{credit.network}:{credit.user_id}"
        _post(state, out, credit, account, "welcome", earn.welcome_points, f"{uid}/welcome")
    day = int(credit.ts // DAY_S)  # day_of
    if day > state.last_day:
        state.streak = state.streak + 1 if state.last_day == day - 1 else 1
        state.last_day = day
        bonus = rules.streak.bonus(state.streak)
        uid = uid or f"{credit.network}:{credit.user_id}"
        _post(state, out, credit, account, "streak", bonus, f"{uid}/streak/{day}")
    before = pres.flags
    rule = credit.rule
    if rule == "watch":
        offered = credit.points
        points, pres.flags = quality.watch_points(pres, credit.ts, offered, rules.quality)
        out.withheld += offered - points
    elif credit.rule == "chat":
        if quality.repeated_chat(pres, credit.digest, credit.ts, rules.quality):
            points = 0  # a repeat earns nothing, is no sign of life, and no chat day
            out.chat_withheld += credit.points
            rule = quality.REPEAT_RULE
        else:
            points = _chat_points(state, credit, earn, day)
            quality.activity(pres, credit.rule)
    else:
        points = credit.points
        quality.activity(pres, credit.rule)
    if pres.flags or pres.flags != before:
        out.flags.append(
            quality.Flag(
                credit.network, credit.user_id, quality.score(pres, rules.quality),
                quality.reasons(pres.flags), pres.idle, pres.withheld, credit.ts,
                pres.repeats, quality.age_days(pres, credit.ts),
            )
        )  # fmt: skip
    if points > 0:
        amount = points * rules.tiers.multipliers_pct[state.tier] // 100
        entry_id = f"{credit.network}:{credit.id}/{credit.rule}"
        _post(state, out, credit, account, credit.rule, amount, entry_id)
    note_week(state, rule, day, rules.weekly)
    tier = rules.tiers.tier_for(state.lifetime)
    if tier != tier_before:
        state.tier = tier
        out.tier_changes.append(
            TierChange(credit.network, credit.user_id, tier_before, tier, credit.ts, state.lifetime)
        )


def apply_referral(state: MemberState, credit: Credit, rules: NetworkRules, out: Applied) -> None:
    """Stage B of a referral credit: a link or upline changes nothing here (stage A noted
    it); a reward pays the recipient, times its tier now, within its daily cap. The entry
    names both members: the recipient's account and, in its id, the referee."""
    if credit.rule not in referral.REWARD_RULES:
        return
    tier_before = state.tier
    pct = rules.tiers.multipliers_pct[state.tier]
    amount = referral.reward(state.referral, credit.points, day_of(credit.ts), pct, rules.referral)
    account = member_account(credit.network, credit.user_id)
    entry_id = f"{credit.network}:{credit.id}/{credit.rule}"
    _post(state, out, credit, account, credit.rule, amount, entry_id)
    tier = rules.tiers.tier_for(state.lifetime)
    if tier != tier_before:
        state.tier = tier
        out.tier_changes.append(
            TierChange(credit.network, credit.user_id, tier_before, tier, credit.ts, state.lifetime)
        )


def roll_over(state: MemberState, today: int) -> bool:
    """The daily streak rollover: a member who missed yesterday loses the streak."""
    if state.streak and state.last_day < today - 1:
        state.streak = 0
        return True
    return False


state_encoder = msgspec.msgpack.Encoder()
state_decoder = msgspec.msgpack.Decoder(MemberState)
credits_decoder = msgspec.msgpack.Decoder(list[Credit])
