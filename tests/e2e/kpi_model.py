"""Weeks of traffic for a known population, and every KPI of docs/ANALYTICS.md computed in
plain Python over the same events (and the pure engine's ledger and tier changes)."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from engine.ledger import Entry
from engine.member import TierChange

DAY_S = 86_400
FIRST_DAY = 20_400  # 2025-11-08
DAYS = 40


def weeks_of_traffic(seed: int = 11, members: int = 36, channels: int = 3) -> list[dict]:
    """Members join on different days and come back with their own habits (every day,
    most days, now and then), each in their home channel (so the pure engine is an exact
    model, see tests/e2e/traffic.py); channels go live from 08:00 to 23:00 every day."""
    rng = random.Random(seed)
    out: list[dict] = []

    def ev(kind: str, ch: str, ts: float, user: str = "", **extra: object) -> None:
        out.append({"kind": kind, "id": f"k{seed}-{len(out)}", "network": "tv", "channel": ch,
                    "ts": float(ts), "user_id": user, "user_name": user.upper(), **extra})  # fmt: skip

    habits = [1.0, 0.85, 0.5, 0.2]
    people = []
    for i in range(members):
        people.append((f"u{i}", f"c{i % channels}", rng.randint(0, DAYS - 10), habits[i % 4]))
    for d in range(FIRST_DAY, FIRST_DAY + DAYS):
        t0 = d * DAY_S
        for c in range(channels):
            ev("online", f"c{c}", t0 + 8 * 3600)
        for user, ch, joined, p in people:
            k = d - FIRST_DAY
            if k < joined or (k > joined and rng.random() >= p):
                continue
            start = t0 + rng.randint(9 * 3600, 20 * 3600)
            ev("join", ch, start, user)
            for j in range(rng.randint(0, 3)):
                ev("chat", ch, start + 60 + 45 * j, user, text="hi")
            if rng.random() < 0.2:
                ev("custom", ch, start + 400, user, action=rng.choice(["quiz", "poll"]), points=5)
            ev("leave", ch, start + rng.randint(6, 40) * 60, user)
        for c in range(channels):
            ev("offline", f"c{c}", t0 + 23 * 3600)
    out.sort(key=lambda e: (e["ts"], e["id"]))
    return out


def day(ts: float) -> int:
    return int(ts // DAY_S)


def flow(x: Entry, kinds: tuple[str, ...], sign: int = 1) -> int:
    """`sign` * the points entry `x` moves from a member to an account of `kinds` (negative
    the other way; 0 for any other entry)."""
    kind = lambda account: account.split(":", 1)[0]  # noqa: E731
    if x.debit.startswith("member:") and kind(x.credit) in kinds:
        return sign * x.amount
    if x.credit.startswith("member:") and kind(x.debit) in kinds:
        return -sign * x.amount
    return 0


def issued(x: Entry) -> int:
    return flow(x, ("treasury", "bonus", "voucher"), -1)


def spent(x: Entry) -> int:
    return flow(x, ("store", "raffle", "payout"))


class Model:
    """The KPIs of one scope, from the accepted events, the ledger and the tier changes."""

    def __init__(self, wire: list[dict], ledger: list[Entry], tiers: list[TierChange],
                 watch_s: int = 300) -> None:  # fmt: skip
        self.wire, self.ledger, self.tiers, self.watch_s = wire, ledger, tiers, watch_s

    def report(self, d0: int, d1: int, net: str | None, chan: str | None) -> dict[str, Any]:
        def ok(n: str, c: str) -> bool:
            return (net is None or n == net) and (chan is None or c == chan)

        act = {(e["network"], e["channel"], e["user_id"], day(e["ts"]), e["kind"])
               for e in self.wire if e["user_id"] and ok(e["network"], e["channel"])}  # fmt: skip
        for x in self.ledger:
            if x.rule == "watch" and x.credit.startswith("member:") and ok(x.network, x.channel):
                act.add((x.network, x.channel, x.credit.split(":", 2)[2], day(x.ts), "watch"))
        who = lambda rows: {(a[0], a[2]) for a in rows}  # noqa: E731
        on = defaultdict(set)
        chat_on = defaultdict(set)
        for a in act:
            on[a[3]].add((a[0], a[2]))
            if a[4] == "chat":
                chat_on[a[3]].add((a[0], a[2]))
        period = range(d0, d1 + 1)
        between = lambda lo, hi, s: set().union(*(s[d] for d in range(lo, hi + 1)))  # noqa: E731
        out: dict[str, Any] = {}
        out["active"] = {
            "dau": sum(len(on[d]) for d in period) / len(period),
            "dau_last_day": len(on[d1]),
            "wau": len(between(d1 - 6, d1, on)),
            "mau": len(between(d1 - 29, d1, on)),
        }
        out["chat"] = {"chat_dau": sum(len(chat_on[d]) for d in period) / len(period),
                       "chat_mau": len(between(d1 - 29, d1, chat_on))}  # fmt: skip
        joined: dict[tuple[str, str], int] = {}
        for a in act:
            k = (a[0], a[2])
            joined[k] = min(joined.get(k, a[3]), a[3])
        cohorts: dict[int, set] = defaultdict(set)
        for k, d in joined.items():
            if d0 <= d <= d1:
                cohorts[d].add(k)
        out["retention"] = [
            {"cohort": c, "members": len(m), **{
                f"day_{k}": (len(m & on[c + k]) / len(m) if c + k <= d1 else None)
                for k in (1, 7, 14, 30)}}
            for c, m in sorted(cohorts.items())
        ]  # fmt: skip
        tier_of: dict[tuple[str, str], tuple[float, int]] = {}
        for t in self.tiers:
            if day(t.ts) <= d1 and tier_of.get((t.network, t.user_id), (-1.0, 0))[0] <= t.ts:
                tier_of[(t.network, t.user_id)] = (t.ts, t.new_tier)
        mix: dict[int, int] = defaultdict(int)
        for k in who(a for a in act if a[3] <= d1):
            mix[tier_of.get(k, (0.0, 0))[1]] += 1
        out["tiers"] = [{"tier": t, "members": n} for t, n in sorted(mix.items())]
        in_chan = {(e["network"], e["user_id"]) for e in self.wire if e["channel"] == chan}
        months: dict[str, int] = defaultdict(int)
        for t in self.tiers:
            if (t.new_tier > t.old_tier and d0 <= day(t.ts) <= d1
                    and (net is None or t.network == net)
                    and (chan is None or (t.network, t.user_id) in in_chan)):  # fmt: skip
                import time

                months[time.strftime("%Y-%m", time.gmtime(t.ts))] += 1
        out["tier_upgrades"] = [{"month": m, "upgrades": n} for m, n in sorted(months.items())]
        mau = between(d1 - 29, d1, on)
        days_of = defaultdict(set)
        for a in act:
            if d1 - 400 <= a[3] <= d1:
                days_of[(a[0], a[2])].add(a[3])
        long = 0
        for k in mau:
            end = d1 if d1 in days_of[k] else d1 - 1
            n = 0
            while end - n in days_of[k]:
                n += 1
            long += n >= 7
        out["streaks"] = {"members": len(mau), "streak_7": long,
                          "share": long / len(mau) if mau else None}  # fmt: skip
        led = [x for x in self.ledger if ok(x.network, x.channel)]
        mem = lambda a: a.startswith("member:")  # noqa: E731
        out["points"] = {
            "issued": sum(issued(x) for x in led if d0 <= day(x.ts) <= d1),
            "spent": sum(spent(x) for x in led if d0 <= day(x.ts) <= d1),
            "imported": sum(flow(x, ("migration",), -1) for x in led if d0 <= day(x.ts) <= d1),
            "outstanding": sum(x.amount for x in led if mem(x.credit) and day(x.ts) <= d1)
            - sum(x.amount for x in led if mem(x.debit) and day(x.ts) <= d1),
        }  # fmt: skip
        engaged: dict[tuple[str, str], set] = defaultdict(set)
        for a in act:
            if d0 <= a[3] <= d1:
                engaged[(a[0], a[1])].add(a[2])
        pts: dict[tuple[str, str], int] = defaultdict(int)
        for x in led:
            if x.channel and d0 <= day(x.ts) <= d1 and issued(x):
                pts[(x.network, x.channel)] += issued(x)
        top = [{"network": n, "channel": c, "engaged": len(engaged.get((n, c), ())),
                "points": pts.get((n, c), 0)} for n, c in set(engaged) | set(pts)]  # fmt: skip
        top.sort(key=lambda r: (-r["engaged"], -r["points"], r["network"], r["channel"]))
        out["top_channels"] = top[:10]
        ticks = [x for x in led if x.rule == "watch" and mem(x.credit) and d0 <= day(x.ts) <= d1]
        viewers = {(x.network, x.credit) for x in ticks}
        out["watch"] = {"ticks": len(ticks), "viewers": len(viewers),
                        "avg_watch_s": len(ticks) * self.watch_s / len(viewers)
                        if viewers else None}  # fmt: skip
        att: dict[str, list] = defaultdict(lambda: [set(), 0])
        for e in self.wire:
            if (e["kind"] == "custom" and e["user_id"] and ok(e["network"], e["channel"])
                    and d0 <= day(e["ts"]) <= d1):  # fmt: skip
                att[e["action"]][0].add((e["network"], e["user_id"]))
                att[e["action"]][1] += 1
        rows = [{"action": a, "members": len(s), "events": n} for a, (s, n) in att.items()]
        out["attendance"] = sorted(rows, key=lambda r: (-r["members"], r["action"]))
        out["daily"] = [
            {"day": d, "active": len(on[d]), "chatters": len(chat_on[d]),
             "issued": sum(issued(x) for x in led if day(x.ts) == d),
             "spent": sum(spent(x) for x in led if day(x.ts) == d)}
            for d in period
        ]  # fmt: skip
        return out
