"""A seeded multi-channel workload for the metamorphic test, and the arrival orders it is sent in.

Two UTC days of a network of five channels whose members watch and chat in several
channels at once (the case where balances used to depend on commit timing): live sessions
with viewer snapshots, joins and leaves, chat bursts that hop between channels, follows,
subscriptions, gift bombs, cheers, raids and custom actions, a few chats while offline and
a few display-name changes. Every channel ends offline, so nothing is owed to the watch
clock after the last event. Events are wire dicts with network NETWORK (replaced per
variant), sorted by (ts, id); ids are random, so ties in ts are broken by an id order that
is not the order of generation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DAY_S = 86_400.0
NETWORK = "N"
CHANNELS = ("alpha", "bravo", "charlie", "delta", "echo")
BOT = "botty"


@dataclass(frozen=True)
class Workload:
    events: list[dict]
    """Sorted by (ts, id), network NETWORK."""
    channels: tuple[str, ...]
    users: tuple[str, ...]
    """Every user id that appears (members, gift recipients, raiding broadcasters, the bot)."""
    days: tuple[int, ...]
    """UTC days (days since the epoch) the events fall on."""

    def for_network(self, network: str) -> list[dict]:
        return [{**e, "network": network} for e in self.events]


class _Gen:
    def __init__(self, rng: random.Random, day0: float, users: list[str]) -> None:
        self.rng = rng
        self.day0 = day0
        self.out: list[dict] = []
        self.renamed = {u: f"{u.upper()}_2" for u in rng.sample(users, 3)}
        self.rename_at = day0 + 1.3 * DAY_S

    def ev(self, kind: str, channel: str, ts: float, user: str = "", **extra: object) -> None:
        e: dict = {"kind": kind, "network": NETWORK, "channel": channel, "ts": round(ts, 3)}
        if user:
            name = self.renamed.get(user) if ts >= self.rename_at else None
            e |= {"user_id": user, "user_name": name or user.upper()}
        self.out.append(e | extra)


def generate(
    day0: float,
    seed: int = 20_261_122,
    channels: tuple[str, ...] = CHANNELS,
    members: int = 60,
    gap_s: float = 80.0,
) -> Workload:
    """Two days from `day0` (a UTC midnight). `gap_s` is the mean time between a live
    channel's events, so a live channel makes about 3600/gap_s events an hour."""
    rng = random.Random(seed)
    users = [f"u{i:02d}" for i in range(members)]
    regulars = users[: members // 5]
    pools: dict[str, list[str]] = {c: [] for c in channels}
    for u in users:
        k = rng.choice((2, 3)) if u in regulars else rng.choice((1, 1, 2))
        for c in rng.sample(channels, min(k, len(channels))):
            pools[c].append(u)
    for c in channels:  # every channel has an audience
        if len(pools[c]) < 4:
            pools[c] += [u for u in rng.sample(users, 4) if u not in pools[c]]
    g = _Gen(rng, day0, users)
    end = day0 + 2 * DAY_S - 1_800
    for c in channels:
        t = day0 + rng.uniform(1, 6) * 3_600
        while t < end - 3 * 3_600:
            length = min(rng.uniform(1.5, 3.5) * 3_600, end - 60 - t)
            _session(g, c, channels, pools, regulars, t, t + length, gap_s)
            _offline_chatter(g, c, pools[c], t + length, min(end, t + length + 4 * 3_600))
            t += length + rng.uniform(4, 9) * 3_600
    events = [e for e in g.out if e["ts"] < end]
    ids = rng.sample(range(10**6), len(events))
    for e, n in zip(events, ids, strict=True):
        e["id"] = f"{e['kind'][:2]}{n:06d}"
    events += _referrals(random.Random(seed + 1), users, channels, day0, end)
    events.sort(key=lambda e: (e["ts"], e["id"]))
    seen_users = {e["user_id"] for e in events if e.get("user_id")}
    seen_users |= {v["id"] for e in events if e["kind"] == "viewers" for v in e["viewers"]}
    days = sorted({int(e["ts"] // DAY_S) for e in events})
    return Workload(events, channels, tuple(sorted(seen_users)), tuple(days))


def _referrals(
    rng: random.Random, users: list[str], channels: tuple[str, ...], day0: float, end: float
) -> list[dict]:
    """Referral events (their own generator: the rest of the workload is unchanged): most in
    the first hour, before sessions start, so referees are new when they first earn; some
    later (referees who already earned); self-referrals, second referrers and cycles."""
    out: list[dict] = []
    ids = rng.sample(range(10**6), 40)

    def refer(x: str, y: str, ts: float) -> None:
        out.append({"kind": "referral", "id": f"re{ids[len(out)]:06d}", "network": NETWORK,
                    "channel": rng.choice(channels), "ts": round(ts, 3), "user_id": x,
                    "user_name": x.upper(), "referrer": y})  # fmt: skip

    for _ in range(24):
        x, y = rng.sample(users, 2)
        refer(x, y, day0 + rng.uniform(0, 3_600))
    for _ in range(8):
        x, y = rng.sample(users, 2)
        refer(x, y, rng.uniform(day0 + 3_600, end))
    a, b = rng.sample(users, 2)
    refer(a, b, day0 + 10)
    refer(b, a, day0 + 20)  # closes a cycle: refused
    refer(a, a, day0 + 30)  # self: refused
    return out


def _session(
    g: _Gen,
    c: str,
    channels: tuple[str, ...],
    pools: dict[str, list[str]],
    regulars: list[str],
    start: float,
    stop: float,
    gap_s: float,
) -> None:
    rng, pool = g.rng, pools[c]
    present = set(rng.sample(pool, max(1, len(pool) // 2)))
    g.ev("online", c, start)
    g.ev("viewers", c, start, viewers=_viewers(present | {BOT}))
    t, next_snapshot = start, start + 900
    while True:
        t += rng.expovariate(1 / gap_s)
        if t >= stop:
            break
        if t >= next_snapshot:  # a snapshot that also says who left and came unseen
            present -= set(rng.sample(sorted(present), min(2, len(present) // 3)))
            present |= set(rng.sample(pool, min(2, len(pool))))
            g.ev("viewers", c, t, viewers=_viewers(present | {BOT}))
            next_snapshot = t + rng.uniform(600, 1_200)
            continue
        roll = rng.random()
        if roll < 0.62:
            _chat_burst(g, c, channels, pools, regulars, present, t)
        elif roll < 0.72:
            absent = [u for u in pool if u not in present]
            if absent:
                u = rng.choice(absent)
                present.add(u)
                g.ev("join", c, t, u)
        elif roll < 0.80:
            if present:
                u = rng.choice(sorted(present))
                present.discard(u)
                g.ev("leave", c, t, u)
        elif roll < 0.83:
            g.ev("follow", c, t, rng.choice(pool))
        elif roll < 0.85:
            g.ev("sub", c, t, rng.choice(pool), tier=rng.choice((1, 1, 1, 2, 3)),
                 months=rng.randint(1, 24))  # fmt: skip
        elif roll < 0.90:
            g.ev("cheer", c, t, rng.choice(pool), amount=rng.choice((100, 100, 250, 1_000)))
        elif roll < 0.91:
            n = rng.randint(1, 4)
            g.ev("gift_bomb", c, t, rng.choice(pool), count=n, tier=1)
            for u in rng.sample(pool, min(n, len(pool))):  # the gifted subs, at the same ts
                g.ev("sub", c, t, u, tier=1, months=1, gifted=True)
        else:
            g.ev("custom", c, t, rng.choice(pool), action=rng.choice(("quiz", "attend")),
                 points=rng.randint(1, 60))  # fmt: skip
    if len(channels) > 1 and rng.random() < 0.6:  # raid another channel, bringing viewers
        target = rng.choice([x for x in channels if x != c])
        movers = sorted(present)[: rng.randint(0, len(present))]
        g.ev("raid", target, stop, f"owner-{c}", viewers=len(movers))
        for u in movers:
            g.ev("leave", c, stop, u)
            g.ev("join", target, stop, u)
    g.ev("offline", c, stop + 1)


def _chat_burst(
    g: _Gen,
    c: str,
    channels: tuple[str, ...],
    pools: dict[str, list[str]],
    regulars: list[str],
    present: set[str],
    t: float,
) -> None:
    """One member chats, often again within the cooldown, often in another channel too."""
    rng = g.rng
    if rng.random() < 0.03:
        g.ev("chat", c, t, BOT, text="!points")
        return
    talkers = sorted(present & set(regulars)) if rng.random() < 0.6 else sorted(present)
    u = rng.choice(talkers) if talkers else rng.choice(pools[c])
    present.add(u)  # a chat makes its author present
    g.ev("chat", c, t, u, text="gg")
    for _ in range(rng.choice((0, 0, 1, 2))):
        t += rng.choice((0.0, rng.uniform(1, 25), rng.uniform(25, 90)))
        others = [x for x in channels if u in pools[x]] or [c]
        g.ev("chat", rng.choice(others), t, u, text="hop")


def _offline_chatter(g: _Gen, c: str, pool: list[str], start: float, stop: float) -> None:
    rng = g.rng
    for _ in range(rng.randint(0, 4)):
        g.ev("chat", c, rng.uniform(start + 60, stop), rng.choice(pool), text="anyone?")


def _viewers(users: set[str]) -> list[dict]:
    return [{"id": u, "name": u.upper()} for u in sorted(users)]


# ---- arrival orders --------------------------------------------------------------------


def interleaved(events: list[dict], seed: int, skew_s: float, window_s: float) -> list[dict]:
    """Channels merged in a random interleaving: each channel keeps its own order but lags
    event time by a random delay in [0, skew_s) that changes along the way; then events are
    shuffled within consecutive windows of `window_s` of arrival time. No event arrives
    more than skew_s + window_s after a newer one."""
    rng = random.Random(seed)
    arrival: list[tuple[float, int, dict]] = []
    last: dict[str, float] = {}
    delay: dict[str, tuple[float, float]] = {}  # channel -> (delay, until ts)
    for i, e in enumerate(events):
        c = e["channel"]
        d, until = delay.get(c, (0.0, -1.0))
        if e["ts"] >= until:
            d, until = rng.uniform(0, skew_s), e["ts"] + rng.uniform(300, 3_600)
            delay[c] = (d, until)
        at = max(last.get(c, 0.0), e["ts"] + d)
        last[c] = at
        arrival.append((at, i, e))
    arrival.sort(key=lambda a: (a[0] // window_s, rng.random()))
    return [e for _, _, e in arrival]


def worst_lateness_s(order: list[dict]) -> float:
    """How far, at most, an event's ts lies behind the newest ts sent before it."""
    newest, worst = float("-inf"), 0.0
    for e in order:
        worst = max(worst, newest - e["ts"])
        newest = max(newest, e["ts"])
    return worst
