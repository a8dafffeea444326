"""The command bot behind the IRC connector, against a real InspIRCd and Redis: built-ins
read the state the member shards commit (written here with the engine's own encoder),
custom text commands render templates, roles and cooldowns refuse quietly (counted)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis

from actors.keys import Keys
from engine.commands import CommandSpec
from engine.events import channel_key, member_key
from engine.irc import ChatLine, IrcMessage
from engine.member import MemberState, state_encoder
from engine.rules import NetworkRules, RuleBook
from gateway.bot import CommandBot
from gateway.connectors.irc import IrcConnector
from gateway.redis_server import RedisServer
from tests.gateway.connectors.ircd import InspIRCd, Viewer
from tests.gateway.connectors.test_irc import config, run_with, until

NET = "twitch"


def seed(client: redis.Redis, keys: Keys) -> None:
    members = {"1001": MemberState(name="Alice", balance=420, lifetime=2500, tier=2),
               "2002": MemberState(name="Bob", balance=90, lifetime=90)}  # fmt: skip
    for uid, state in members.items():
        client.hset(keys.mstate, member_key(NET, uid), state_encoder.encode(state))
    client.zadd(keys.lb_all(channel_key(NET, "alpha")), {"1001": 600, "2002": 90})


def test_commands_answer_in_chat(
    ircd: InspIRCd, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    seed(redis_client, keys)
    bots: list[CommandBot] = []
    commands = {
        "*": [CommandSpec(name="discord", aliases=["dc"], response="{user}: join us in {channel}",
                          cooldown_global_s=3600)],
        "alpha": [CommandSpec(name="secret", response="mods only", min_role="moderator"),
                  CommandSpec(name="live", response="we are live", availability="online")],
    }  # fmt: skip

    def handler(conn: IrcConnector) -> Callable[[ChatLine, IrcMessage], Awaitable[None]]:
        import redis.asyncio as aioredis

        bot = CommandBot(
            aioredis.Redis.from_url(redis_server.url), keys,
            RuleBook({NET: NetworkRules()}), NET, commands, conn.say, logins=conn.logins,
        )  # fmt: skip
        bots.append(bot)
        return bot.on_chat

    replies: dict[str, str] = {}

    async def body(conn: IrcConnector) -> None:
        alice = await Viewer(ircd.port, "alice").connect()
        await alice.join("alpha")
        bob = await Viewer(ircd.port, "bob").connect()
        await bob.join("alpha")
        bob.send("@+user-id=2002 PRIVMSG #alpha :hi")
        await until(lambda: conn.logins.get("bob"))

        async def ask(text: str, expect: str) -> None:
            alice.send(f"@+user-id=1001;+display-name=Alice PRIVMSG #alpha :{text}")
            replies[text] = await alice.expect(expect)

        await ask("!points", "420 points")
        await ask("!points @bob", "bob has 90")
        await ask("!rank", "#1 in alpha")
        await ask("!top 2", "Top 2")
        await ask("!tier", "Gold")
        await ask("!streak", "streak")
        await ask("!dc", "join us in alpha")
        alice.send("@+user-id=1001 PRIVMSG #alpha :!discord")  # global cooldown: no reply
        alice.send("@+user-id=1001 PRIVMSG #alpha :!secret")  # not a moderator: no reply
        alice.send("@+user-id=1001 PRIVMSG #alpha :!live")  # offline: no reply
        alice.send("@+user-id=1001 PRIVMSG #alpha :!nosuch")
        alice.send("@+user-id=1001 PRIVMSG #alpha :!give bob 5")  # not wired yet: counted
        alice.send("@+user-id=1001;+badges=moderator/1 PRIVMSG #alpha :!secret")
        replies["mod"] = await alice.expect("mods only")
        await alice.close()
        await bob.close()

    run_with(redis_server, namespace, config(ircd), body, handler)
    assert "Top 2: 1. Alice (600), 2. Bob (90)" in replies["!top 2"]
    assert "Alice is Gold (2500 lifetime points)" in replies["!tier"]
    metrics = bots[0].metrics
    assert metrics.refused == {"cooldown_global": 1, "role": 1, "unavailable": 1, "unknown": 1}
    assert metrics.unsupported == 1
    assert metrics.replies == 8
