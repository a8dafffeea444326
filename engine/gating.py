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
