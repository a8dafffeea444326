"""Built-ins that move points, from chat through a real InspIRCd to real member shards, the
raffle actor and the store (Ray + Redis): !give (a gift, exactly once even when the line
comes twice), !addpoints / !removepoints / !bonusall (moderators), !tickets / !raffle / !join,
!redeem. Balances never go negative, and `rally audit`'s checks pass afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from actors.client import RallyClient
from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.raffle import Command, RaffleClient, SyncRaffleClient
from actors.spend import SpendClient
from engine import raffle as eng
from engine.events import Custom, Join, channel_key, member_key
from engine.irc import ChatLine, IrcMessage
from engine.member import state_decoder
from engine.rules import EarnRules, NetworkRules, RuleBook, StreakRules, TierRules
from engine.store import ItemSpec, build_item
from gateway.audit import audit
from gateway.bot import CommandBot
from gateway.bot_spends import ChatSpends, SpendLimits
from gateway.connectors.irc import IrcConnector
from gateway.redis_server import RedisServer
from gateway.store import Store
from tests.actors.conftest import append, make_cfg
from tests.gateway.connectors.ircd import InspIRCd, Viewer
from tests.gateway.connectors.test_irc import config, run_with

NET = "twitch"
ALICE, BOB, CAROL, MAX = "1001", "2002", "3003", "9009"
QUIET = EarnRules(chat_points=0, welcome_points=0, watch_points_live=0, active_chatter_bonus=0,
                  ignore=frozenset({"8008"}))  # fmt: skip
BOOK = RuleBook({NET: NetworkRules(earn=QUIET, streak=StreakRules(points_per_day=0))})
"""Chat earns nothing here: every balance change below is one of the commands'."""
LIMITS = SpendLimits(give_max_points=1_000, give_daily_max_points=100, give_cooldown_s=0)


@pytest.fixture
def rally(ray_cluster: None, redis_server: RedisServer, namespace: str
          ) -> Iterator[tuple[RallyClient, RuntimeConfig]]:  # fmt: skip
    cfg = make_cfg(redis_server.url, namespace, BOOK)
    client = RallyClient(cfg).start(scheduler=False)
    yield client, cfg
    client.stop()


def balance(r: redis.Redis, keys: Keys, user: str) -> int:
    raw = r.hget(keys.mstate, member_key(NET, user))
    return 0 if raw is None else int(state_decoder.decode(raw).balance)


def test_points_move_from_chat_exactly_once(
    ircd: InspIRCd, redis_server: RedisServer, redis_client: redis.Redis, namespace: str,
    rally: tuple[RallyClient, RuntimeConfig],
) -> None:  # fmt: skip
    client, cfg = rally
    keys = Keys(namespace)
    now = time.time()
    append(redis_client, cfg, [
        Custom(id="seed-a", network=NET, channel="alpha", ts=now, user_id=ALICE,
               user_name="Alice", points=300),
        Custom(id="seed-b", network=NET, channel="alpha", ts=now, user_id=BOB,
               user_name="Bob", points=50),
        Join(id="join-c", network=NET, channel="alpha", ts=now, user_id=CAROL, user_name="carol"),
        Join(id="join-b", network=NET, channel="alpha", ts=now, user_id="8008", user_name="abot"),
    ])  # fmt: skip
    assert client.wait_idle(60)
    start = {u: balance(redis_client, keys, u) for u in (ALICE, BOB, CAROL, MAX)}
    terms = eng.Terms(id="r1", network=NET, title="Big draw", channel="alpha", price_points=10,
                      max_tickets_per_member=5)  # fmt: skip
    sync = SyncRaffleClient(redis_client, keys, timeout_s=60)
    for op in ("create", "open"):
        reply = sync.send(Command(op=op, network=NET, raffle="r1", ts=0.0, terms=terms))  # type: ignore[arg-type]
        assert reply.ok, reply
    redis_client.hset(keys.logins(NET), "dora", "4004")  # learnt by another bot process
    bots: list[CommandBot] = []

    def handler(conn: IrcConnector) -> Callable[[ChatLine, IrcMessage], Awaitable[None]]:
        r = aioredis.Redis.from_url(redis_server.url)
        spends = SpendClient(r, keys, cfg.member_shards, timeout_s=30)
        store = Store(r, keys, spends, failed_ttl_s=3600)
        chat = ChatSpends(r, keys, NET, spends, conn.logins, raffles=RaffleClient(r, keys),
                          store=store, limits=LIMITS, rules=BOOK)  # fmt: skip
        bot = CommandBot(r, keys, BOOK, NET, {}, conn.say, logins=conn.logins,
                         spends=spends, chat_spends=chat)  # fmt: skip
        bots.append(bot)
        return bot.on_chat

    async def body(conn: IrcConnector) -> None:
        cs = bots[0].chat_spends
        assert cs is not None
        assert cs.store is not None
        mug = build_item("mug", NET, ItemSpec(name="Mug", cost=20), TierRules().names, now)
        await cs.store.put_item(mug, None)
        alice = await Viewer(ircd.port, "alice").connect()
        bob = await Viewer(ircd.port, "bob").connect()
        mod = await Viewer(ircd.port, "max").connect()
        for v in (alice, bob, mod):
            await v.join("alpha")
        n = iter(range(1000))

        async def say(v: Viewer, uid: str, text: str, expect: str, mid: str = "") -> str:
            badges = ";+badges=moderator/1" if v is mod else ""
            mid = mid or f"m-{next(n)}"
            v.send(f"@+user-id={uid};+id={mid};+display-name={v.nick}{badges} "
                   f"PRIVMSG #alpha :{text}")  # fmt: skip
            return await alice.expect(expect, timeout_s=60)

        await say(bob, BOB, "hi", "hi")  # the bot learns bob's user id from his tags
        await say(mod, MAX, "hello", "hello")
        await say(alice, ALICE, "!give bob 30", "gave 30 points to bob", mid="gift-1")
        await say(alice, ALICE, "!give bob 30", "gave 30 points to bob", mid="gift-1")  # again
        await say(alice, ALICE, "!give bob 71", "you may give 100 points a day")
        await say(alice, ALICE, "!give bob 5000", "usage: !give <user> <1-1000>")
        await say(alice, ALICE, "!give alice 5", "yourself")
        await say(alice, ALICE, "!give nobody 5", "I don't know nobody")
        await say(alice, ALICE, "!give bob x", "usage: !give")
        await say(bob, BOB, "!addpoints bob 5", "!addpoints")  # not a moderator: refused
        await say(mod, MAX, "!addpoints bob 5", "gave 5 points to bob")
        await say(mod, MAX, "!addpoints dora 4", "gave 4 points to dora")  # stored login
        await say(mod, MAX, "!removepoints bob 100000", "bob has only")
        await say(mod, MAX, "!removepoints alice 1", "took 1 points from alice")
        nc = channel_key(NET, "alpha")
        assert await asyncio.to_thread(client.wait_idle, 60)  # the chat lines are applied
        assert redis_client.hlen(keys.presence(nc)) == 5  # with an ignored bot
        bonus = await say(mod, MAX, "!bonusall 7", "points to each of")
        assert "7 points to each of 4 viewers" in bonus
        await say(alice, ALICE, "!tickets 2", "you hold 2 tickets in Big draw for 20 points")
        await say(alice, ALICE, "!raffle", "Raffle Big draw: 2 tickets from 1 entrants")
        await say(bob, BOB, "!join", "you hold 1 tickets")
        await say(alice, ALICE, "!redeem mug", "redeemed Mug")
        await say(alice, ALICE, "!redeem sofa", "no item 'sofa'")
        for v in (alice, bob, mod):
            await v.close()

    run_with(redis_server, namespace, config(ircd, rate_limit=1000), body, handler)
    assert client.wait_idle(60)
    got = {u: balance(redis_client, keys, u) for u in (ALICE, BOB, CAROL, MAX)}
    assert got[ALICE] == start[ALICE] - 30 - 1 + 7 - 20 - 20
    assert got[BOB] == start[BOB] + 30 + 5 + 7 - 10
    assert got[CAROL] == start[CAROL] + 7
    assert got[MAX] == start[MAX] + 7
    assert balance(redis_client, keys, "4004") == 4
    assert balance(redis_client, keys, "8008") == 0  # an ignored account gets no bonus
    assert int(redis_client.hget(keys.accounts, f"gift:{NET}") or 0) == 0
    report = audit(redis_client, keys, BOOK)
    assert report.ok, report.problems
    assert bots[0].metrics.refused == {"role": 1}
