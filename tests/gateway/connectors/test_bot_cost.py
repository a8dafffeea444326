"""A command's cost_points is charged through the spend path (real member shards in Ray):
idempotent by the chat message id, answered only once the debit is durable, refused with a
one-line reply when the member cannot pay; the balance never goes below zero."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from actors.client import RallyClient
from actors.config import RuntimeConfig
from actors.keys import Keys
from actors.spend import SpendClient
from engine.commands import CommandSpec
from engine.events import Custom, member_key
from engine.irc import ChatLine, IrcMessage
from engine.member import state_decoder
from engine.rules import RuleBook
from gateway.bot import CommandBot
from gateway.connectors.irc import IrcConnector
from gateway.redis_server import RedisServer
from tests.actors.conftest import append, make_cfg
from tests.gateway.connectors.ircd import InspIRCd, Viewer
from tests.gateway.connectors.test_irc import config, run_with

NET = "twitch"


@pytest.fixture
def rally(ray_cluster: None, redis_server: RedisServer, namespace: str
          ) -> Iterator[tuple[RallyClient, RuntimeConfig]]:  # fmt: skip
    cfg = make_cfg(redis_server.url, namespace)
    client = RallyClient(cfg).start(scheduler=False)
    yield client, cfg
    client.stop()


def balance(r: redis.Redis, keys: Keys, user: str) -> int | None:
    raw = r.hget(keys.mstate, member_key(NET, user))
    return None if raw is None else int(state_decoder.decode(raw).balance)


def test_command_cost_is_charged_once(
    ircd: InspIRCd, redis_server: RedisServer, redis_client: redis.Redis, namespace: str,
    rally: tuple[RallyClient, RuntimeConfig],
) -> None:  # fmt: skip
    client, cfg = rally
    keys = Keys(namespace)
    append(redis_client, cfg, [Custom(id="seed-1", network=NET, channel="alpha", ts=time.time(),
                                      user_id="501", user_name="Fay", points=60)])  # fmt: skip
    assert client.wait_idle(60)
    start = balance(redis_client, keys, "501")
    assert start is not None
    assert start >= 60
    cost = start // 2  # two uses leave less than a third
    commands = {"alpha": [CommandSpec(name="vip", response="{user} is VIP", cost_points=cost)]}
    bots: list[CommandBot] = []

    def handler(conn: IrcConnector) -> Callable[[ChatLine, IrcMessage], Awaitable[None]]:
        r = aioredis.Redis.from_url(redis_server.url)
        spends = SpendClient(r, keys, cfg.member_shards, timeout_s=30)
        bot = CommandBot(r, keys, RuleBook({}), NET, commands, conn.say, spends=spends)
        bots.append(bot)
        return bot.on_chat

    replies: list[str] = []

    async def body(conn: IrcConnector) -> None:
        fay = await Viewer(ircd.port, "fay").connect()
        await fay.join("alpha")
        for i, expect in enumerate(["is VIP", "is VIP", "costs"]):
            fay.send(f"@+user-id=501;+id=vip-{i};+display-name=Fay PRIVMSG #alpha :!vip")
            replies.append(await fay.expect(expect, timeout_s=60))
        await fay.close()
        assert bots[0].spends is not None
        await bots[0].spends.close()

    run_with(redis_server, namespace, config(ircd), body, handler)
    assert replies[2].endswith(f":@Fay !vip costs {cost} points; you have {start - 2 * cost}")
    assert balance(redis_client, keys, "501") == start - 2 * cost
    assert bots[0].metrics.refused == {"insufficient_points": 1}
