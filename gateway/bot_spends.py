"""The bot's built-ins that move points: !give, !addpoints, !removepoints, !bonusall, and the
raffle and store commands (!raffle, !tickets, !join, !redeem).

Every one goes through the spend path (actors/spend.py; the raffle actor and the store for
theirs) with an idempotency key derived from the chat message id, so a line delivered twice
(a reconnect, a replayed log) moves points once, and answers only once the debit is durable.
A gift is one transfer: the giver's debit to `gift:{network}` carries the recipient, and the
giver's member shard appends the credit leg in the same commit (engine/spend.py `gift_leg`).
Each handler returns the reply text ('' for none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from actors.keys import Keys
from actors.raffle import Command, RaffleClient, RaffleKeys, RaffleTimeout
from actors.spend import SpendClient, SpendTimeout
from engine import raffle as eng_raffle
from engine.commands import render
from engine.events import channel_key
from engine.irc import ChatLine
from engine.member import DAY_S, state_decoder
from engine.rules import RuleBook, TierRules
from engine.spend import (
    COOLDOWN,
    INSUFFICIENT_POINTS,
    LIMIT_REACHED,
    MAX_TEXT,
    Guard,
    Result,
    SpendError,
    Transfer,
)
from engine.store import StoreError, check_item_id, check_redeemable, redemption_id
from gateway.store import Store, StoreRefused

MAX_RAFFLES_SCANNED = 20
"""Newest raffles of the network looked at to find a channel's open raffle."""
RAFFLE_CACHE_S = 1.0
"""How long the bot keeps a channel's open raffle before looking again."""


@dataclass(frozen=True, slots=True)
class SpendLimits:
    """The [bot] limits on points moved from chat."""

    give_max_points: int = 10_000
    give_daily_max_points: int = 50_000
    give_cooldown_s: float = 10.0
    moderator_max_points: int = 1_000_000
    bonusall_max_viewers: int = 10_000


def amount_arg(args: tuple[str, ...], index: int, most: int) -> int | None:
    """The positive integer at `args[index]` (<= most), or None."""
    if len(args) <= index or not args[index].isdigit():
        return None
    n = int(args[index])
    return n if 0 < n <= most else None


class ChatSpends:
    """Spend-backed built-ins for one bot (one network)."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        keys: Keys,
        network: str,
        spends: SpendClient | None,
        logins: Mapping[str, str],
        *,
        limits: SpendLimits | None = None,
        raffles: RaffleClient | None = None,
        store: Store | None = None,
        tiers: tuple[str, ...] = TierRules().names,
        rules: RuleBook | None = None,
        prefix: str = "!",
    ) -> None:
        self.redis = redis_client
        self.keys = keys
        self.network = network
        self.spends = spends
        self.logins = logins
        self.limits = limits or SpendLimits()
        self.raffles = raffles
        self.store = store
        self.tiers = tiers
        self.rules = rules
        """The earning rules: !bonusall skips each channel's ignored accounts (bots)."""
        self.prefix = prefix
        self._open: dict[str, tuple[float, eng_raffle.Raffle | None]] = {}

    def _key(self, line: ChatLine, suffix: str = "") -> str:
        return f"bot.{line.channel}.{line.msg_id}{suffix}"[:MAX_TEXT]

    async def _user(self, login: str) -> str:
        """The user id of a login this bot learnt, or another bot of the network stored."""
        login = login.lstrip("@").lower()
        found = self.logins.get(login)
        if found is None:
            raw = cast("bytes | None", await self.redis.hget(self.keys.logins(self.network), login))
            found = raw.decode() if raw else ""
        return found

    async def _submit(self, ts: list[Transfer]) -> list[Result] | None:
        if self.spends is None:
            return None
        try:
            return await self.spends.submit_many(ts)
        except SpendTimeout:
            return None

    # -- !give ------------------------------------------------------------------------------
    async def give(self, line: ChatLine, args: tuple[str, ...], now: float) -> str:
        lim = self.limits
        usage = f"@{line.display_name} usage: {self.prefix}give <user> <1-{lim.give_max_points}>"
        if lim.give_max_points <= 0:
            return ""  # !give is off
        amount = amount_arg(args, 1, lim.give_max_points)
        if amount is None:
            return usage
        to = await self._user(args[0])
        if not to:
            return f"@{line.display_name} I don't know {args[0].lstrip('@')} yet"
        if to == line.user_id:
            return f"@{line.display_name} you cannot give points to yourself"
        guards = [Guard(f"give:{int(now // DAY_S)}", limit=lim.give_daily_max_points,
                        add=amount, keep_s=DAY_S)]  # fmt: skip
        if lim.give_cooldown_s > 0:
            guards.append(Guard("give", cooldown_s=lim.give_cooldown_s, keep_s=lim.give_cooldown_s))
        t = Transfer(
            key=self._key(line), network=self.network, user_id=line.user_id, amount=amount,
            direction="debit", account=f"gift:{self.network}", rule="gift", ref=to,
            channel=line.channel, guards=tuple(guards), ts=now, to_user=to,
        )  # fmt: skip
        got = await self._submit([t])
        if got is None:
            return ""
        res = got[0]
        who = args[0].lstrip("@")
        if res.ok:
            return f"@{line.display_name} gave {amount} points to {who} ({res.balance} left)"
        if res.code == INSUFFICIENT_POINTS:
            return f"@{line.display_name} you have only {res.balance} points"
        if res.code == LIMIT_REACHED:
            return f"@{line.display_name} you may give {lim.give_daily_max_points} points a day"
        if res.code == COOLDOWN:
            wait = max(1, int(res.retry_at - now + 0.999))
            return f"@{line.display_name} wait {wait} s before giving again"
        return ""

    # -- moderators -------------------------------------------------------------------------
    async def adjust(self, line: ChatLine, args: tuple[str, ...], now: float, add: bool) -> str:
        """!addpoints / !removepoints <user> <n>: a credit from / debit to `bonus:{network}`."""
        name = "addpoints" if add else "removepoints"
        most = self.limits.moderator_max_points
        amount = amount_arg(args, 1, most)
        if amount is None:
            return f"@{line.display_name} usage: {self.prefix}{name} <user> <1-{most}>"
        to = await self._user(args[0])
        who = args[0].lstrip("@")
        if not to:
            return f"@{line.display_name} I don't know {who} yet"
        t = Transfer(
            key=self._key(line), network=self.network, user_id=to, amount=amount,
            direction="credit" if add else "debit", account=f"bonus:{self.network}",
            rule="moderator", ref=line.user_id, channel=line.channel, ts=now,
        )  # fmt: skip
        got = await self._submit([t])
        if got is None:
            return ""
        res = got[0]
        if res.ok:
            verb = "gave" if add else "took"
            prep = "to" if add else "from"
            return f"@{line.display_name} {verb} {amount} points {prep} {who} (now {res.balance})"
        if res.code == INSUFFICIENT_POINTS:
            return f"@{line.display_name} {who} has only {res.balance} points"
        return ""

    async def bonusall(self, line: ChatLine, args: tuple[str, ...], now: float) -> str:
        """!bonusall <n>: `n` points to every viewer present in the channel (one transfer each,
        keyed by the message id and the viewer)."""
        most = self.limits.moderator_max_points
        amount = amount_arg(args, 0, most)
        if amount is None:
            return f"@{line.display_name} usage: {self.prefix}bonusall <1-{most}>"
        nc = channel_key(self.network, line.channel)
        present = cast("list[bytes]", await self.redis.hkeys(self.keys.presence(nc)))
        ignore = self.rules.earn(self.network, line.channel).ignore if self.rules else frozenset()
        viewers = sorted(u.decode() for u in present if u.decode() not in ignore)
        viewers = viewers[: self.limits.bonusall_max_viewers]
        transfers = [self._bonus(line, uid, amount, now) for uid in viewers]
        if not transfers:
            return f"@{line.display_name} nobody is here yet"
        got = await self._submit(transfers)
        if got is None:
            return ""
        paid = sum(1 for r in got if r.ok)
        return f"{amount} points to each of {paid} viewers in {line.channel}!"

    def _bonus(self, line: ChatLine, uid: str, amount: int, now: float) -> Transfer:
        return Transfer(
            key=self._key(line, f".{uid}"), network=self.network, user_id=uid,
            amount=amount, direction="credit", account=f"bonus:{self.network}",
            rule="moderator", ref=line.user_id, channel=line.channel, ts=now,
        )  # fmt: skip

    # -- raffles ----------------------------------------------------------------------------
    async def open_raffle(self, channel: str, now: float) -> eng_raffle.Raffle | None:
        """The channel's open raffle (its own channel first, else a network-wide ticket
        raffle), the newest of the last MAX_RAFFLES_SCANNED; cached RAFFLE_CACHE_S."""
        cached = self._open.get(channel)
        if cached is not None and now - cached[0] < RAFFLE_CACHE_S:
            return cached[1]
        rk = RaffleKeys(self.keys)
        ids = cast(
            "list[bytes]",
            await self.redis.zrevrange(rk.index(self.network), 0, MAX_RAFFLES_SCANNED - 1),
        )
        found: eng_raffle.Raffle | None = None
        if ids:
            raws = cast(
                "list[bytes | None]",
                await self.redis.mget([rk.meta(self.network, i.decode()) for i in ids]),
            )
            opened = [eng_raffle.raffle_decoder.decode(r) for r in raws if r is not None]
            opened = [r for r in opened if r.status == "open"]
            found = next((r for r in opened if r.terms.channel == channel), None) or next(
                (r for r in opened if not r.terms.channel), None
            )
        if len(self._open) > 10_000:
            self._open.clear()
        self._open[channel] = (now, found)
        return found

    async def raffle_status(self, line: ChatLine, now: float) -> str:
        raffle = await self.open_raffle(line.channel, now)
        if raffle is None:
            return f"@{line.display_name} no raffle is open in {line.channel}"
        t = raffle.terms
        how = {
            "ticket": f"{self.prefix}tickets <n> ({t.price_points} points each, "
            f"up to {t.max_tickets_per_member})",
            "keyword": f"type {t.keyword}" + (f" ({t.price_points} points)" if t.price_points
                                              else ""),
            "giveaway": "stay in chat: every viewer present enters",
        }[t.kind]  # fmt: skip
        title = t.title or t.id
        return (f"Raffle {title}: {raffle.tickets} tickets from {raffle.entrants} entrants; "
                f"enter with {how}")  # fmt: skip

    async def tickets(self, line: ChatLine, args: tuple[str, ...], now: float) -> str:
        raffle = await self.open_raffle(line.channel, now)
        if raffle is None:
            return f"@{line.display_name} no raffle is open in {line.channel}"
        most = raffle.terms.max_tickets_per_member
        n = amount_arg(args, 0, eng_raffle.MAX_TICKETS_PER_MEMBER) if args else 1
        if n is None:
            return f"@{line.display_name} usage: {self.prefix}tickets <1-{most}>"
        return await self._enter(line, raffle, n, now)

    async def join(self, line: ChatLine, now: float) -> str:
        raffle = await self.open_raffle(line.channel, now)
        if raffle is None:
            return f"@{line.display_name} no raffle is open in {line.channel}"
        if raffle.terms.kind == "giveaway":
            return f"@{line.display_name} you are in: every viewer present enters"
        return await self._enter(line, raffle, 1, now)

    async def _enter(self, line: ChatLine, raffle: eng_raffle.Raffle, n: int, now: float) -> str:
        if self.raffles is None:
            return ""
        t = raffle.terms
        op: Any = "enter" if t.kind == "keyword" else "buy"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.mstate, f"{self.network}:{line.user_id}")
            pipe.hget(RaffleKeys(self.keys).subscribers(self.network), line.user_id)
            raw, sub_until = await pipe.execute()
        tier = state_decoder.decode(raw).tier if raw else 0
        # a subscriber badge, or a sub event seen lately (as the gateway's purchase route)
        subscriber = line.role == "subscriber" or (sub_until is not None and float(sub_until) > now)
        cmd = Command(op=op, network=self.network, raffle=t.id, ts=now, user_id=line.user_id,
                      key=self._key(line), tickets=n, tier=tier, subscriber=subscriber)  # fmt: skip
        try:
            reply = await self.raffles.send(cmd)
        except RaffleTimeout:
            return ""
        self._open.pop(line.channel, None)
        if reply.ok:
            b = reply.body
            paid = f" for {b.get('cost_points', 0)} points" if b.get("cost_points") else ""
            return (f"@{line.display_name} you hold {b.get('tickets', n)} tickets in "
                    f"{t.title or t.id}{paid}")  # fmt: skip
        if reply.code == INSUFFICIENT_POINTS:
            return f"@{line.display_name} you have only {reply.body.get('balance', 0)} points"
        return f"@{line.display_name} {reply.message or reply.code}"

    # -- store ------------------------------------------------------------------------------
    async def redeem(self, line: ChatLine, args: tuple[str, ...], now: float) -> str:
        if self.store is None:
            return ""
        if not args:
            return f"@{line.display_name} usage: {self.prefix}redeem <item>"
        try:
            item_id = check_item_id(args[0].lower())
        except StoreError:
            return f"@{line.display_name} no item {args[0][:40]!r}"
        found = await self.store.item(self.network, item_id)
        if found is None or (found[0].channel and found[0].channel != line.channel):
            return f"@{line.display_name} no item {item_id!r}"
        item = found[0]
        rid = redemption_id(self.network, line.user_id, self._key(line))
        try:
            before = await self.store.redemption(self.network, rid)
            if before is None:
                tier_ix = await self.store.member_tier(self.network, line.user_id)
                tier = self.tiers[min(tier_ix, len(self.tiers) - 1)]
                check_redeemable(item, tier, self.tiers, now)
                red, _, result = await self.store.redeem(item, line.user_id, rid)
            else:
                red, result = before, None
        except StoreError as err:
            return f"@{line.display_name} {err}"
        except StoreRefused as err:
            return f"@{line.display_name} {err.message}"
        except (SpendTimeout, SpendError):
            return ""
        if red.status == "failed":
            if red.reason == INSUFFICIENT_POINTS:
                have = f": you have {result.balance}" if result is not None else ""
                return f"@{line.display_name} {item.name or item.id} costs {item.cost}{have}"
            return f"@{line.display_name} cannot redeem {item.id}: {red.reason}"
        left = f" ({result.balance} points left)" if result is not None else ""
        return render(
            "@{user} redeemed {args}{count}",
            {"user": line.display_name, "args": item.name or item.id, "count": left},
        )
