"""A generated day of traffic for a few channels, as wire dicts, deterministic by seed.

Each member belongs to one channel, so the order in which one member's credits arrive is
the log's order, and the pure engine applied in memory is an exact model of the system.
"""

from __future__ import annotations

import random

import msgspec

from engine.events import Event

T0 = 1_795_000_000.0  # a Wednesday in November 2026, 00:53 UTC
DAY_S = 86_400.0


def day_of_traffic(
    seed: int = 7, channels: int = 3, members: int = 120, chats: int = 6_000
) -> list[dict]:
    rng = random.Random(seed)
    out: list[dict] = []
    seq = 0

    def ev(kind: str, ch: str, ts: float, user: str = "", **extra: object) -> None:
        nonlocal seq
        seq += 1
        out.append({"kind": kind, "id": f"d{seed}-{seq}", "network": "tv", "channel": ch,
                    "ts": round(ts, 3), "user_id": user, "user_name": user.upper(), **extra})  # fmt: skip

    home = {f"m{i}": f"c{i % channels}" for i in range(members)}
    home["botty"] = "c0"
    for c in range(channels):
        ev("online", f"c{c}", T0)
    for user, ch in home.items():
        ev("join", ch, T0 + rng.uniform(0, 600), user)
    times = sorted(T0 + rng.uniform(600, DAY_S) for _ in range(chats))
    users = list(home)
    for i, ts in enumerate(times):
        user = rng.choice(users)
        ch = home[user]
        roll = rng.random()
        if roll < 0.9:
            ev("chat", ch, ts, user, text="gg")
        elif roll < 0.93:
            ev("follow", ch, ts, user)
        elif roll < 0.95:
            ev("sub", ch, ts, user, tier=rng.randint(1, 3), months=rng.randint(1, 24))
        elif roll < 0.96:
            ev("gift_bomb", ch, ts, user, count=rng.randint(1, 5))
        elif roll < 0.98:
            ev("cheer", ch, ts, user, amount=rng.choice([100, 250, 1000]))
        elif roll < 0.99:
            ev("custom", ch, ts, user, action="quiz", points=rng.randint(1, 50))
        elif i % 3 == 0:
            ev("leave", ch, ts, user)
        else:
            ev("join", ch, ts, user)
        if i == chats // 2:
            ev("offline", ch, ts + 1)
            ev("online", ch, ts + 1800)
    return sorted(out, key=lambda e: e["ts"])


def as_events(wire: list[dict]) -> list[Event]:
    return msgspec.convert(wire, list[Event])  # type: ignore[arg-type]


def batches(wire: list[dict], size: int) -> list[list[dict]]:
    return [wire[i : i + size] for i in range(0, len(wire), size)]
