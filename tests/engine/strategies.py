"""Hypothesis strategies: plausible event streams over a small world of networks, channels
and users (so that members meet cooldowns, caps, tiers, streaks and ignore lists)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from engine.events import Event, Viewer
from engine.rules import EarnRules, NetworkRules, QualityRules, RuleBook, TierRules
from tests.engine.factories import DAY, T0, ev

NETWORKS = ("n1", "n2")
CHANNELS = ("c1", "c2")
USERS = ("u1", "u2", "u3", "u4", "bot")

BOOK = RuleBook(
    {
        "n1": NetworkRules(
            earn=EarnRules(
                watch_interval_s=60,
                watch_points_offline=1,
                max_catchup_ticks=5,
                active_chatter_window_s=120,
                chat_cooldown_s=20,
                chat_daily_cap=4,
                ignore=frozenset({"bot"}),
            ),
        ),
        "n2": NetworkRules(
            earn=EarnRules(
                watch_interval_s=120, chat_points=2, chat_cooldown_s=0, chat_daily_cap=3
            ),
            tiers=TierRules(thresholds=(0, 300, 900, 3_000), multipliers_pct=(100, 133, 171, 250)),
            quality=QualityRules(chat_repeats_max=1, chat_history=3),  # repeats are common
            channels={"c2": {"watch_interval_s": 60, "follow_points": 5, "ignore": ["u4"]}},
        ),
    }
)
"""Two networks: n1 with default tiers and `bot` ignored; n2 with its own tiers and a
channel c2 that overrides the watch interval and ignores u4."""

IGNORED = {("n1", c, "bot") for c in CHANNELS} | {("n2", "c2", "u4")}

_MINUTES_S = (0.0, 0.0, 1.0, 15.0, 20.0, 30.0, 59.0, 60.0, 61.0, 125.0, 600.0, 3_600.0)
GAPS_S: tuple[float, ...] = (*_MINUTES_S, DAY - 61, DAY, 2 * DAY)
"""Steps of event time: within a cooldown, across watch ticks, across UTC days."""

Item = Event | float
"""An event to ingest, or a float: a clock tick to that wall-clock time."""


CHAT_TEXTS = ("", "hi", "Hi!", "gg", "nice one", ":)")
"""Few lines, so that members repeat themselves (engine/quality.py repeated_chat)."""


def _fields(kind: str, draw: Any) -> dict[str, Any]:
    if kind == "chat":
        return {"text": draw(st.sampled_from(CHAT_TEXTS))}
    if kind == "viewers":
        users = draw(st.lists(st.sampled_from(USERS), max_size=4, unique=True))
        return {"viewers": [Viewer(id=u) for u in users]}
    if kind == "sub":
        return {"tier": draw(st.integers(1, 3)), "gifted": draw(st.booleans())}
    if kind == "gift_bomb":
        return {"count": draw(st.integers(1, 20)), "tier": draw(st.integers(1, 3))}
    if kind == "cheer":
        return {"amount": draw(st.integers(1, 1_000))}
    if kind == "raid":
        return {"viewers": draw(st.integers(0, 100))}
    if kind == "custom":
        return {"points": draw(st.integers(0, 500))}
    return {}


KIND_WEIGHTS = (
    ["chat"] * 6
    + ["join"] * 3
    + ["leave"] * 2
    + ["viewers", "online", "online", "offline", "follow", "sub", "gift_bomb", "cheer", "raid"]
    + ["custom", "tick", "tick"]
)


@st.composite
def items(draw: Any, start_ts: float = T0, prefix: str = "e", max_size: int = 40) -> list[Item]:
    """Events (unique ids `{prefix}{i}`) and clock ticks, in mostly increasing event time."""
    n = draw(st.integers(0, max_size))
    t = start_ts
    out: list[Item] = []
    for i in range(n):
        t += draw(st.sampled_from(GAPS_S))
        kind = draw(st.sampled_from(KIND_WEIGHTS))
        if kind == "tick":
            out.append(t)
            continue
        late = draw(st.sampled_from((0.0, 0.0, 0.0, 0.0, 25.0, 90.0)))  # out-of-order arrival
        user = "" if kind in ("viewers", "online", "offline") else draw(st.sampled_from(USERS))
        out.append(
            ev(
                kind,
                f"{prefix}{i}",
                max(t - late, 0.0),
                user,
                network=draw(st.sampled_from(NETWORKS)),
                channel=draw(st.sampled_from(CHANNELS)),
                **_fields(kind, draw),
            )
        )
    return out
