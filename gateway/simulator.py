"""A simulated live-streaming network: seeded, realistic traffic for `rally demo` and benchmarks.

Channels have Zipf-distributed audiences (a few huge channels, a long tail); members have
log-normal chat rates (a few chatty regulars, many lurkers); viewers join and leave around a
target presence; channels publish viewer snapshots; follows, subscriptions, cheers, gift bombs
(a `gift_bomb` then one gifted `sub` per recipient) and raids (a `raid`, then the raiding
channel's viewers leave it and join the target) happen now and then. All randomness comes from
one seed and time is an argument, so the same seed yields the same events.

Events are plain JSON-able dicts in the wire shape of `engine.events` with unique ids.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec

from gateway.signing import signed_headers

MAX_BATCH_EVENTS = 10_000
"""The gateway's limit on events per request."""
FLUSH_S = 0.1
"""`post_forever` sends what is due at least this often, however small the batch."""


@dataclass(frozen=True, slots=True)
class Mix:
    """Relative weights of what the next event is (snapshots and follow-ups come on top)."""

    chat: float = 0.82
    presence: float = 0.14
    follow: float = 0.015
    sub: float = 0.01
    cheer: float = 0.01
    gift_bomb: float = 0.0005
    raid: float = 0.00005
    custom: float = 0.0005

    def table(self) -> tuple[tuple[str, ...], list[float]]:
        kinds = ("chat", "presence", "follow", "sub", "cheer", "gift_bomb", "raid", "custom")
        weights = [getattr(self, k) for k in kinds]
        return kinds, list(itertools.accumulate(weights))


CHAT_LINES = (
    "hi", "LUL", "gg", "PogChamp", "lets go", "what a play", "!points", "hello chat",
    "KEKW", "no way", "that was close", "first time here", "W", "clip it", "o7",
)  # fmt: skip
GIFT_COUNTS = (1, 5, 5, 10, 10, 20, 50, 100)
CHEER_AMOUNTS = (100, 100, 100, 200, 500, 1_000, 5_000)


class _Present:
    """A set of member indices with O(1) add, remove and random choice."""

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[int] = []
        self.pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, m: int) -> bool:
        return m in self.pos

    def add(self, m: int) -> bool:
        if m in self.pos:
            return False
        self.pos[m] = len(self.items)
        self.items.append(m)
        return True

    def remove(self, m: int) -> bool:
        i = self.pos.pop(m, None)
        if i is None:
            return False
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i
        return True

    def choice(self, rng: random.Random) -> int:
        return self.items[int(rng.random() * len(self.items))]


@dataclass(slots=True)
class _Channel:
    name: str
    audience: list[int]
    """Member indices whose home this channel is."""
    chat_cum: list[float]
    """Cumulative chattiness over `audience`, to pick who speaks."""
    present: _Present = field(default_factory=_Present)
    last_snapshot_ts: float = -math.inf


def zipf_sizes(total: int, n: int, s: float) -> list[int]:
    """Split `total` into `n` Zipf(s) parts, largest first, each at least 1 when total >= n."""
    weights = [1.0 / (i + 1) ** s for i in range(n)]
    scale = total / sum(weights)
    sizes = [max(1, int(w * scale)) if total >= n else int(w * scale) for w in weights]
    sizes[0] += total - sum(sizes)
    return sizes


def channel_name(i: int, channels: int, prefix: str = "ch") -> str:
    """The id of channel i of a simulated network of `channels` (0 has the largest audience)."""
    return f"{prefix}{i:0{max(3, len(str(channels - 1)))}d}"


class SimulatedNetwork:
    """A seeded streaming network that produces wire events (dicts) on demand.

    `events(now, n)` returns exactly `n` events stamped `now`; the first calls bring every
    channel online with its starting audience. Ids are `{run_id}.{seq}`: pass a `run_id`
    unique to the run when replaying the same seed into the same deployment, or every event
    would be a duplicate.
    """

    def __init__(
        self,
        network: str = "demo",
        channels: int = 5,
        members: int = 2_000,
        seed: int = 1,
        *,
        run_id: str | None = None,
        channel_prefix: str = "ch",
        member_prefix: str = "u",
        zipf_s: float = 1.1,
        chat_sigma: float = 1.5,
        mix: Mix = Mix(),
        present_fraction: float = 0.35,
        start_present: bool = True,
        snapshot_interval_s: float = 60.0,
        snapshot_max_viewers: int = 5_000,
        raid_max_viewers: int = 5_000,
        population_seed: int | None = None,
    ) -> None:
        if channels < 1 or members < 1:
            raise ValueError("a network needs at least one channel and one member")
        self.network = network
        self.run_id = run_id if run_id is not None else f"s{seed}"
        self.member_prefix = member_prefix
        self.members = members
        self.mix = mix
        self.present_fraction = present_fraction
        self.snapshot_interval_s = snapshot_interval_s
        self.snapshot_max_viewers = snapshot_max_viewers
        self.raid_max_viewers = raid_max_viewers
        self._kinds, self._kind_cum = mix.table()
        self._seq = 0
        self._pending: deque[dict[str, object]] = deque()
        self._started = False
        self._start_present = start_present
        self.rng = random.Random(seed)
        # The population (who watches what, who talks) may be shared by several generators
        # that each draw their own traffic from it: seed it separately.
        pop = random.Random(population_seed if population_seed is not None else seed)
        sizes = zipf_sizes(members, channels, zipf_s)
        chattiness = [pop.lognormvariate(0.0, chat_sigma) for _ in range(members)]
        order = list(range(members))
        pop.shuffle(order)
        self.channels: list[_Channel] = []
        start = 0
        for i, size in enumerate(sizes):
            audience = order[start : start + size]
            start += size
            cum = list(itertools.accumulate(chattiness[m] for m in audience))
            name = channel_name(i, channels, channel_prefix)
            self.channels.append(_Channel(name, audience, cum))
        self._chan_cum = list(itertools.accumulate(float(len(c.audience)) for c in self.channels))

    # ---- identities -------------------------------------------------------------------

    def user_id(self, m: int) -> str:
        return f"{self.member_prefix}{m}"

    def user_name(self, m: int) -> str:
        return f"viewer_{m}"

    def broadcaster(self, ci: int) -> str:
        return f"owner-{self.channels[ci].name}"

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def present_count(self) -> int:
        return sum(len(c.present) for c in self.channels)

    # ---- events -----------------------------------------------------------------------

    def _event(self, kind: str, ci: int, now: float, m: int | None = None, **extra: object) -> dict:
        self._seq += 1
        ev: dict[str, object] = {
            "kind": kind,
            "id": f"{self.run_id}.{self._seq}",
            "network": self.network,
            "channel": self.channels[ci].name,
            "ts": now,
        }
        if m is not None:
            ev["user_id"] = self.user_id(m)
            ev["user_name"] = self.user_name(m)
        ev.update(extra)
        return ev

    def _start(self, now: float) -> None:
        self._started = True
        for ci, c in enumerate(self.channels):
            self._pending.append(self._event("online", ci, now))
            if not self._start_present:
                continue
            want = int(len(c.audience) * self.present_fraction)
            for m in self.rng.sample(c.audience, want):
                c.present.add(m)
            if len(c.present) <= self.snapshot_max_viewers:
                self._pending.append(self._snapshot(ci, now))
            else:
                self._pending.extend(self._event("join", ci, now, m) for m in c.present.items)

    def _snapshot(self, ci: int, now: float) -> dict:
        c = self.channels[ci]
        c.last_snapshot_ts = now
        viewers = [{"id": self.user_id(m), "name": self.user_name(m)} for m in c.present.items]
        return self._event("viewers", ci, now, viewers=viewers)

    def _pick_channel(self) -> int:
        x = self.rng.random() * self._chan_cum[-1]
        return bisect.bisect_right(self._chan_cum, x)

    def _chatter(self, ci: int) -> int:
        c = self.channels[ci]
        x = self.rng.random() * c.chat_cum[-1]
        return c.audience[min(bisect.bisect_right(c.chat_cum, x), len(c.audience) - 1)]

    def _viewer(self, ci: int) -> int:
        """Someone present, or else someone from the audience."""
        c = self.channels[ci]
        if c.present:
            return c.present.choice(self.rng)
        return self.rng.choice(c.audience)

    def _presence(self, ci: int, now: float) -> dict:
        c = self.channels[ci]
        target = len(c.audience) * self.present_fraction
        p_join = 0.5 + 0.4 * math.tanh((target - len(c.present)) / max(1.0, 0.1 * target))
        if self.rng.random() < p_join or not c.present:
            for _ in range(4):
                m = self.rng.choice(c.audience)
                if m not in c.present:
                    break
            c.present.add(m)
            return self._event("join", ci, now, m)
        m = c.present.choice(self.rng)
        c.present.remove(m)
        return self._event("leave", ci, now, m)

    def _next(self, now: float) -> dict:
        ci = self._pick_channel()
        kind = self._kinds[
            bisect.bisect_right(self._kind_cum, self.rng.random() * self._kind_cum[-1])
        ]
        rng = self.rng
        if kind == "chat":
            m = self._chatter(ci)
            chat = self._event("chat", ci, now, m, text=rng.choice(CHAT_LINES))
            if not self.channels[ci].present.add(m):
                return chat
            self._pending.appendleft(chat)  # one joins before speaking
            return self._event("join", ci, now, m)
        if kind == "presence":
            return self._presence(ci, now)
        if kind == "follow":
            return self._event("follow", ci, now, self._viewer(ci))
        if kind == "sub":
            tier = 1 if rng.random() < 0.85 else (2 if rng.random() < 0.7 else 3)
            months = min(1_000, 1 + int(rng.expovariate(1 / 6)))
            return self._event("sub", ci, now, self._viewer(ci), tier=tier, months=months)
        if kind == "cheer":
            return self._event("cheer", ci, now, self._viewer(ci), amount=rng.choice(CHEER_AMOUNTS))
        if kind == "gift_bomb":
            return self.gift_bomb(now, ci)[0]
        if kind == "raid" and len(self.channels) > 1:
            return self.raid(now, target=ci)[0]
        return self._event("custom", ci, now, self._viewer(ci), action="quiz", points=10)

    def events(self, now: float, n: int) -> list[dict]:
        """The next `n` events, stamped `now`."""
        if not self._started:
            self._start(now)
        out: list[dict] = []
        pending = self._pending
        if self.snapshot_interval_s > 0:
            for ci, c in enumerate(self.channels):
                if len(out) >= n:
                    break
                due = now - c.last_snapshot_ts >= self.snapshot_interval_s
                if due and 0 < len(c.present) <= self.snapshot_max_viewers:
                    out.append(self._snapshot(ci, now))
        while len(out) < n:
            if pending:
                ev = pending.popleft()
                ev["ts"] = now
                out.append(ev)
            else:
                out.append(self._next(now))
        return out

    def gift_bomb(self, now: float, ci: int | None = None, count: int | None = None) -> list[dict]:
        """A gift bomb and its gifted subs; the subs are queued behind it (returned too)."""
        ci = self._pick_channel() if ci is None else ci
        count = count if count is not None else self.rng.choice(GIFT_COUNTS)
        tier = 1 if self.rng.random() < 0.9 else 2
        bomb = self._event("gift_bomb", ci, now, self._viewer(ci), count=count, tier=tier)
        subs = [
            self._event("sub", ci, now, self._viewer(ci), tier=tier, months=1, gifted=True)
            for _ in range(count)
        ]
        self._pending.extend(subs)
        return [bomb, *subs]

    def raid(
        self,
        now: float,
        target: int | None = None,
        source: int | None = None,
        viewers: int | None = None,
    ) -> list[dict]:
        """A raid on `target`: the raid event, then `viewers` arrive (the source's first).

        The arrivals (leave the source, join the target) are queued behind the raid event
        and returned too, so a caller may send them itself and `events()` still yields them.
        """
        n = len(self.channels)
        target = self._pick_channel() if target is None else target
        if source is None:
            source = self.rng.randrange(n - 1) if n > 1 else 0
            source += source >= target and n > 1
        src, dst = self.channels[source], self.channels[target]
        limit = self.raid_max_viewers if viewers is None else viewers
        movers = src.present.items[:limit] if source != target else []
        if viewers is not None and len(movers) < viewers:
            extra = (
                m for m in range(self.members) if m not in dst.present and m not in src.present
            )
            movers = movers + list(itertools.islice(extra, viewers - len(movers)))
        owner = self.broadcaster(source)
        raid = self._event("raid", target, now, user_id=owner, user_name=owner, viewers=len(movers))
        moves: list[dict] = []
        for m in movers:
            if src.present.remove(m):
                moves.append(self._event("leave", source, now, m))
            dst.present.add(m)
            moves.append(self._event("join", target, now, m))
        self._pending.extend(moves)
        return [raid, *moves]

    def take_pending(self) -> list[dict]:
        """Drop the queued follow-ups (after a caller sent the list `raid()` returned)."""
        out = list(self._pending)
        self._pending.clear()
        return out


def peak_factor(ts: float, peak_hour_utc: float = 20.0, trough: float = 0.25) -> float:
    """The network's activity at `ts` relative to its peak hour (1.0 at the peak)."""
    hour = (ts % 86_400) / 3_600
    d = min(abs(hour - peak_hour_utc), 24 - abs(hour - peak_hour_utc))
    return trough + (1 - trough) * math.exp(-(d**2) / (2 * 3.0**2))


@dataclass(slots=True)
class PostCounts:
    """What `post_forever` sent and what the gateway said."""

    requests: int = 0
    events_sent: int = 0
    accepted: int = 0
    rejected: int = 0
    """Events in requests answered 4xx."""
    errors: int = 0
    """Requests that failed (5xx, connection errors, timeouts)."""
    last_error: str = ""


async def post_forever(
    url: str,
    key: str,
    secret: str,
    rate_per_s: float = 50.0,
    stop_at: float | None = None,
    batch_size: int = 100,
    *,
    sim: SimulatedNetwork | None = None,
    network: str = "demo",
    diurnal: bool = False,
    clock: Callable[[], float] = time.time,
    timeout_s: float = 30.0,
) -> PostCounts:
    """POST simulated traffic to `url`/v1/events at `rate_per_s` until `stop_at` (unix time).

    Sends a batch whenever `batch_size` events are due, and what is due every FLUSH_S, so the rate
    holds at any batch size. With `diurnal`, the rate follows `peak_factor` of the wall clock.
    Never raises for a failed request: failures are counted. Cancel it to stop early.
    """
    sim = sim if sim is not None else SimulatedNetwork(network=network, run_id=f"d{int(clock())}")
    batch_size = max(1, min(batch_size, MAX_BATCH_EVENTS))
    counts = PostCounts()
    endpoint = url.rstrip("/") + "/v1/events"
    owed = 0.0
    last = next_flush = clock()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while stop_at is None or clock() < stop_at:
            now = clock()
            rate = rate_per_s * (peak_factor(now) if diurnal else 1.0)
            owed = min(owed + (now - last) * rate, float(MAX_BATCH_EVENTS))
            last = now
            if owed >= batch_size or (owed >= 1 and now >= next_flush):
                n = min(batch_size, int(owed))
                owed -= n
                next_flush = now + FLUSH_S
                await _post_batch(session, endpoint, key, secret, sim.events(now, n), counts)
            else:
                await asyncio.sleep(min(FLUSH_S, max(0.001, (batch_size - owed) / max(rate, 1e-3))))
    return counts


async def _post_batch(
    session: aiohttp.ClientSession,
    endpoint: str,
    key: str,
    secret: str,
    events: list[dict],
    counts: PostCounts,
) -> None:
    body = msgspec.json.encode({"events": events})
    headers = {"Content-Type": "application/json", **signed_headers(key, secret, body)}
    counts.requests += 1
    counts.events_sent += len(events)
    try:
        async with session.post(endpoint, data=body, headers=headers) as resp:
            if resp.status < 300:
                answer = await resp.json(content_type=None)
                counts.accepted += int(answer.get("accepted", len(events)))
            elif resp.status < 500:
                counts.rejected += len(events)
                counts.last_error = f"{resp.status}: {(await resp.text())[:200]}"
            else:
                counts.errors += 1
                counts.last_error = f"{resp.status}: {(await resp.text())[:200]}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        counts.errors += 1
        counts.last_error = f"{type(err).__name__}: {err}"
