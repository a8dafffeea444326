"""The referral graph a channel shard keeps for the networks whose referral partition it is.

Referral events are applied in (ts, network, id) order like every event; each is decided
by engine/referral.py `decide_link` against the links of the events before it. The graph
lives in Redis (`refby:{network}`: referee -> referrer; `refkids:{network}:{referrer}`:
who named a member before it had a referrer of its own), written in the shard's commit, and
is cached here for the walk. Accepted links become credits to the referee's member shard
(and upline credits to the referees of a member linked late); see engine/referral.py.
"""

from __future__ import annotations

import redis

from actors.keys import Keys
from actors.lua import Commit
from engine.events import Referral
from engine.member import Credit
from engine.referral import LINK, link


class ReferralGraph:
    """Cached links and the writes of the batch being applied."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self.refby: dict[tuple[str, str], str] = {}
        self.links: list[tuple[str, str, str]] = []
        """(network, referee, referrer) accepted in this batch."""
        self.kids: dict[tuple[str, str], list[str]] = {}
        """Referees that named a still unlinked member in this batch (not yet in Redis)."""
        self.outcomes: dict[str, int] = {}

    def clear(self) -> None:
        self.refby.clear()
        self.links.clear()
        self.kids.clear()
        self.outcomes.clear()

    def referrer_of(self, network: str, user: str) -> str:
        key = (network, user)
        found = self.refby.get(key)
        if found is None:
            raw = self.r.hget(self.keys.k("refby", network), user)
            found = self.refby[key] = raw.decode() if raw else ""
        return found

    def kids_of(self, network: str, user: str) -> list[str]:
        """Who named `user` while it had no referrer: in Redis, then in this batch."""
        stored = [k.decode() for k in self.r.smembers(self.keys.k("refkids", network, user))]
        return sorted(stored) + self.kids.pop((network, user), [])

    def apply(self, ev: Referral, ignore: frozenset[str], out: list[Credit]) -> None:
        """Decide one referral event; an accepted link appends its credits to `out`."""
        net, x, y = ev.network, ev.user_id, ev.referrer
        if x in ignore or y in ignore:
            outcome, made = "ignored", []
        else:
            outcome, made = link(
                x, y, lambda u: self.referrer_of(net, u), lambda u: self.kids_of(net, u)
            )
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome != "ok":
            return
        self.refby[(net, x)] = y
        self.links.append((net, x, y))
        if not self.referrer_of(net, y):
            self.kids.setdefault((net, y), []).append(x)
        for o in made:
            name = ev.user_name if o.rule == LINK else ""
            out.append(Credit(o.id, net, ev.channel, o.user_id, name, ev.ts, o.rule, 0, o.other))

    def write(self, c: Commit) -> None:
        """The batch's links and outcome counters, into the shard's commit."""
        for net, x, y in self.links:
            c.cmd("HSET", self.keys.k("refby", net), x, y)
            if not self.referrer_of(net, y):  # y may be linked later: its referees get word
                c.cmd("SADD", self.keys.k("refkids", net, y), x)
            c.cmd("DEL", self.keys.k("refkids", net, x))  # x is linked: told once, forgotten
        for outcome, n in sorted(self.outcomes.items()):
            c.cmd("HINCRBY", self.keys.stats, f"referrals_{outcome}", n)
        self.links.clear()
        self.kids.clear()
        self.outcomes.clear()
