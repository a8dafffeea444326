"""Earning rules, tiers and streaks, configured per network with per-channel overrides."""

from __future__ import annotations

import bisect
from typing import Any, Literal

import msgspec

from engine.referral import ReferralRules


class EarnRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Points for what viewers do in one channel. All points are whole numbers."""

    watch_interval_s: int = 300
    watch_points_live: int = 10
    watch_points_offline: int = 0
    max_catchup_ticks: int = 12
    presence_timeout_s: int = 3_600
    """A viewer with no sign of life (JOIN, chat, a viewer-list snapshot naming them) this
    long leaves at the next watch tick (engine/channel.py `silent`); 0 = never."""
    active_chatter_window_s: int = 600
    active_chatter_bonus: int = 5
    chat_points: int = 1
    chat_cooldown_s: int = 30
    chat_daily_cap: int = 100
    follow_points: int = 50
    sub_points_by_tier: tuple[int, int, int] = (500, 1_000, 2_500)
    gifted_sub_points: int = 250
    cheer_points_per_100: int = 100
    raid_points: int = 100
    raid_points_per_viewer: int = 0
    welcome_points: int = 100
    ignore: frozenset[str] = frozenset()
    attendance_min_s: int = 900
    """Presence during one live stream that earns `attendance_points` (engine/attendance.py)."""
    attendance_points: int = 0
    """0: no attendance reward."""
    attendance_milestones_s: tuple[int, ...] = (1_800, 3_600, 5_400)
    attendance_milestone_points: tuple[int, ...] = (0, 0, 0)
    """Points for reaching each of `attendance_milestones_s` (same length)."""
    min_tier: str = ""
    """A tier name: the least tier a member needs to redeem the channel's store items and buy
    tickets of its raffles (on top of their own `min_tier`); "" = none. Set per channel
    (engine/gating.py)."""
    custom_min_tier: str = ""
    """A tier name: custom actions of the channel from a member below it earn nothing (counted
    as `custom_gated` and noticed as `credit_refused`, reason tier_too_low); "" = none."""

    def __post_init__(self) -> None:
        if self.watch_interval_s <= 0:
            raise ValueError("watch_interval_s must be positive")
        if len(self.attendance_milestones_s) != len(self.attendance_milestone_points):
            raise ValueError(
                "attendance_milestones_s and attendance_milestone_points differ in length"
            )
        if self.attendance_min_s <= 0 or any(s <= 0 for s in self.attendance_milestones_s):
            raise ValueError("attendance_min_s and attendance_milestones_s must be positive")
        for name in ("attendance_milestones_s", "attendance_milestone_points"):
            if any(v < 0 for v in getattr(self, name)):
                raise ValueError(f"{name} must not be negative")
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{name} must not be negative")


class TierRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tiers by lifetime points; each tier multiplies what its members earn."""

    names: tuple[str, ...] = ("Bronze", "Silver", "Gold", "Diamond")
    thresholds: tuple[int, ...] = (0, 500, 2_000, 10_000)
    multipliers_pct: tuple[int, ...] = (100, 125, 150, 200)

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.thresholds) == len(self.multipliers_pct)):
            raise ValueError("tiers: names, thresholds and multipliers_pct differ in length")
        if self.thresholds[0] != 0 or list(self.thresholds) != sorted(set(self.thresholds)):
            raise ValueError("tiers: thresholds must start at 0 and increase")

    def tier_for(self, lifetime: int) -> int:
        """The highest tier whose threshold `lifetime` reaches (thresholds increase from 0;
        a negative lifetime is tier 0): once per credit, so a bisection, not a loop."""
        return max(bisect.bisect_right(self.thresholds, lifetime) - 1, 0)

    def points_to_next(self, lifetime: int) -> int | None:
        tier = self.tier_for(lifetime)
        if tier + 1 >= len(self.thresholds):
            return None
        return self.thresholds[tier + 1] - lifetime


class StreakRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Daily streak bonus: ceil(points_per_day * min(streak, cap_days) / divisor)."""

    points_per_day: int = 5
    cap_days: int = 30
    divisor: int = 10
    at_risk_min_days: int = 3
    """Members with a streak this long get a `streak_at_risk` notice (engine/streak.py);
    0 = no notices."""
    at_risk_hour_utc: int = 20
    """... when they have not been active by this hour (UTC) of the day."""

    def __post_init__(self) -> None:
        if not 0 <= self.at_risk_hour_utc <= 23:
            raise ValueError("at_risk_hour_utc must be 0-23")
        if self.at_risk_min_days < 0:
            raise ValueError("at_risk_min_days must not be negative")

    def bonus(self, streak: int) -> int:
        return -(-self.points_per_day * min(streak, self.cap_days) // self.divisor)


class WeeklyRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The weekly bonus: `bonus_points` times the multiplier of the features used."""

    bonus_points: int = 50
    """0: no weekly bonus."""
    multipliers_pct: tuple[int, int, int, int] = (100, 150, 200, 300)
    chat_days: int = 3
    streak_days: int = 7
    pay_delay_s: int = 3_600

    def __post_init__(self) -> None:
        if min(self.bonus_points, self.chat_days, self.streak_days, self.pay_delay_s) < 0:
            raise ValueError("weekly: values must not be negative")
        if any(m < 0 for m in self.multipliers_pct):
            raise ValueError("weekly: multipliers_pct must not be negative")


class QualityRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The presence-quality score that scales or withholds watch points (engine/quality.py)."""

    max_channels_at_once: int = 4
    """Watch credits of one tick from more channels than this are withheld; 0 = no limit."""
    idle_ticks: int = 144
    """Consecutive watch ticks without other activity before the score drops; 0 = never."""
    left_after_s: int = 900
    """A gap this long between two watch ticks means the member left: the idle run restarts."""
    scale_below: int = 60
    """A score below this scales watch points by score/100 ..."""
    withhold_below: int = 30
    """... and below this withholds them."""
    new_account_days: int = 7
    """An account is new for this many days after its first credit on the network ..."""
    new_account_max_channels: int = 3
    """... and a new account's watch credits of one tick from more channels than this are
    withheld (flag `new_account`); 0 = no lower limit for new accounts."""
    chat_repeats_max: int = 3
    """A chat message already among the member's recent messages this many times (case,
    spacing and punctuation aside, any channel) is a repeat: no chat points, no activity,
    flag `repeated_chat`; 0 = repeats are not checked."""
    chat_repeat_window_s: int = 3_600
    """Recent messages: those of the past this many seconds ..."""
    chat_history: int = 20
    """... and at most this many of them (kept in the member's state); 0 = none."""

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if getattr(self, name) < 0:
                raise ValueError(f"quality: {name} must not be negative")
        if self.chat_history > 1_000:
            raise ValueError("quality: chat_history must be at most 1000")
        if not 0 <= self.withhold_below <= self.scale_below <= 100:
            raise ValueError("quality: need 0 <= withhold_below <= scale_below <= 100")


class GatingRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the tier that gates store items and raffle tickets comes from (engine/gating.py)."""

    source: Literal["engine", "chain"] = "engine"
    """engine: the member's tier by lifetime points; chain: the tier the summed token balance
    of the member's linked wallets reaches against the token's on-chain thresholds."""


class NetworkRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    earn: EarnRules = EarnRules()
    tiers: TierRules = TierRules()
    streak: StreakRules = StreakRules()
    weekly: WeeklyRules = WeeklyRules()
    quality: QualityRules = QualityRules()
    gating: GatingRules = GatingRules()
    referral: ReferralRules = ReferralRules()
    channels: dict[str, dict[str, Any]] = {}
    """Per-channel overrides of `earn` fields, by channel id."""

    def __post_init__(self) -> None:
        names = self.tiers.names
        for field in ("min_tier", "custom_min_tier"):
            for where, tier in (("earn", getattr(self.earn, field)),
                                *((f"channels.{c}", o.get(field, "")) for c, o in self.channels.items())):  # fmt: skip
                if tier and tier not in names:
                    raise ValueError(f"{where}.{field} must be one of {', '.join(names)}")


class RuleBook:
    """Resolves the rules that apply to a network and channel, overrides merged once."""

    def __init__(self, networks: dict[str, NetworkRules]) -> None:
        self.networks = networks
        self._earn: dict[tuple[str, str], EarnRules] = {}
        for network, rules in networks.items():
            base = msgspec.to_builtins(rules.earn)
            for channel, override in rules.channels.items():
                # convert, not replace: overrides arrive as builtins (lists for frozensets and
                # tuples) and must be typed and validated like the network's own rules.
                merged = {**base, **msgspec.to_builtins(override)}
                self._earn[(network, channel)] = msgspec.convert(merged, EarnRules)

    def network(self, network: str) -> NetworkRules:
        rules = self.networks.get(network)
        return rules if rules is not None else _DEFAULT

    def earn(self, network: str, channel: str) -> EarnRules:
        found = self._earn.get((network, channel))
        return found if found is not None else self.network(network).earn

    def to_builtins(self) -> dict[str, Any]:
        return {n: msgspec.to_builtins(r) for n, r in self.networks.items()}

    @classmethod
    def from_builtins(cls, data: dict[str, Any]) -> RuleBook:
        return cls({n: msgspec.convert(r, NetworkRules) for n, r in data.items()})


_DEFAULT = NetworkRules()
