"""Tier gating: an item, raffle or channel action may require a minimum tier; a member below
it is refused with the tier required and the lifetime points still needed to reach it.

Tiers are reached by lifetime points (engine/rules.py TierRules), so what is missing is the
required tier's threshold minus the member's lifetime points. Pure: no I/O.
"""

from __future__ import annotations

import msgspec

from engine.rules import TierRules


class Shortfall(msgspec.Struct, frozen=True):
    """Why a member may not: the tier required and the lifetime points still needed."""

    tier_required: str
    points_needed: int


def shortfall(tiers: TierRules, required: int | str, rank: int, lifetime: int) -> Shortfall | None:
    """None if a member of tier `rank` with `lifetime` points may act where tier `required`
    (an index or a name of `tiers`) is the minimum; otherwise what is missing. A member whose
    stored tier already reaches it passes (tiers never drop)."""
    need = tiers.names.index(required) if isinstance(required, str) else required
    need = max(0, min(need, len(tiers.names) - 1))
    if rank >= need:
        return None
    return Shortfall(tiers.names[need], max(1, tiers.thresholds[need] - lifetime))


def required_tier(names: tuple[str, ...], *minimums: str) -> str:
    """The highest of several minimum tiers (an item's, its channel's); "" if none is set."""
    set_ = [m for m in minimums if m]
    return max(set_, key=names.index) if set_ else ""


class CreditRefused(msgspec.Struct, frozen=True):
    """A credit that earned nothing, and why (a notice: `credit_refused`)."""

    network: str
    user_id: str
    channel: str
    credit_id: str
    rule: str
    ts: float
    reason: str
    tier_required: str


def custom_refusal(tiers: TierRules, custom_min_tier: str, rank: int) -> str | None:
    """The tier a channel's custom actions need that a member of tier `rank` lacks, or None
    (the member may earn). Applied in the member's event-time order with the tier held then,
    like the tier multiplier, so it is as deterministic as the rest of the member's rules."""
    if not custom_min_tier or rank >= tiers.names.index(custom_min_tier):
        return None
    return custom_min_tier


UNREACHABLE_STEP = 10**60
"""Threshold steps of network tiers above the token's top tier: out of reach on chain."""


def chain_tiers(names: tuple[str, ...], thresholds_units: list[int], decimals: int) -> TierRules:
    """The network's tiers reckoned in whole tokens: tier i needs the token's on-chain
    threshold i (the contract's tierFor; tiers matched by position, a network tier above the
    token's top one is out of reach). With a member's balance as `lifetime` (whole tokens,
    rounded down), `shortfall` then says the whole tokens still needed: thresholds are whole
    tokens, so that is exact."""
    unit = 10**decimals
    whole = [-(-t // unit) for t in thresholds_units[: len(names)]]
    while len(whole) < len(names):
        whole.append((whole[-1] if whole else 0) + UNREACHABLE_STEP)
    whole[0] = 0
    for i in range(1, len(whole)):  # the contract keeps them increasing; stay valid if not
        whole[i] = max(whole[i], whole[i - 1] + 1)
    return TierRules(names=names, thresholds=tuple(whole), multipliers_pct=(100,) * len(names))
