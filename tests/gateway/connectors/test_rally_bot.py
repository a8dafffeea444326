"""`rally bot` as a user runs it: a config file with [bot], a running Redis, a real
InspIRCd; a viewer's command is answered, its chat lands in the ingest log, SIGTERM stops
it with exit 0. Bad [bot] settings: a message naming the key and exit code 2."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from actors.keys import Keys
from engine.events import Chat, Join
from gateway.bot import commands_key, version_key
from gateway.bot_runner import bot_parts, logins_key
from gateway.bot_spends import SpendLimits
from gateway.redis_server import RedisServer
from gateway.settings import SettingsError, settings_from_dict
from tests.gateway.connectors.ircd import InspIRCd, Viewer
from tests.gateway.connectors.test_irc import logged_events

CONFIG = """
namespace = "{ns}"
data_dir = "{data_dir}"
[redis]
url = "{redis_url}"
[networks.tv.earn]
chat_points = 1
[bot]
port = {port}
channels = ["lobby", "#Other"]
caps = ["message-tags"]
trust_client_tags = true
[[bot.commands]]
channel = "lobby"
name = "hello"
aliases = ["hi"]
response = "hello {{user}}, welcome to {{channel}}"
"""


def test_rally_bot_answers_and_ingests(
    ircd: InspIRCd, redis_server: RedisServer, redis_client: redis.Redis, namespace: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    conf = tmp_path / "rally.toml"
    conf.write_text(CONFIG.format(ns=namespace, data_dir=tmp_path, redis_url=redis_server.url,
                                  port=ircd.port))  # fmt: skip
    logins = logins_key(Keys(namespace), "tv")
    redis_client.hset(logins, "finn", "88")  # learnt by an earlier run of the bot
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "bot", "--config", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    async def chat() -> str:
        erin = await Viewer(ircd.port, "erin").connect()
        await erin.join("lobby")
        for _ in range(200):  # the bot joins after its own registration
            erin.send("NAMES #lobby")
            names = await erin.expect(" 353 ")
            if "rallybot" in names:
                break
            await asyncio.sleep(0.05)
        erin.send("@+user-id=77;+id=hi-1;+display-name=Erin PRIVMSG #lobby :!hi")
        reply = await erin.expect("PRIVMSG #lobby", timeout_s=20)
        # a command stored through the admin API (its hash + version) is picked up live
        spec = {"name": "promo", "response": "promo for {user}"}
        keys = Keys(namespace)
        redis_client.hset(commands_key(keys, "tv", "lobby"), "promo", json.dumps(spec))
        redis_client.incr(version_key(keys))
        for i in range(100):
            erin.send(f"@+user-id=77;+id=p-{i};+display-name=Erin PRIVMSG #lobby :!promo")
            with contextlib.suppress(TimeoutError):
                await erin.expect("promo for Erin", timeout_s=0.5)
                break
        else:
            raise AssertionError("the stored command was never answered")
        finn = await Viewer(ircd.port, "finn").connect()  # a lurker: JOIN only, no tags
        await finn.join("lobby")
        await finn.close()
        await erin.close()
        return reply

    try:
        reply = asyncio.run(chat())
        assert reply.endswith(":hello Erin, welcome to lobby")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"2 replies" in out
    chats = [e for e in logged_events(redis_client, Keys(namespace)) if isinstance(e, Chat)]
    assert (chats[0].id, chats[0].user_id, chats[0].network, chats[0].channel) == (
        "hi-1", "77", "tv", "lobby",
    )  # fmt: skip
    assert chats[-1].id.startswith("p-")
    joins = [e for e in logged_events(redis_client, Keys(namespace)) if isinstance(e, Join)]
    assert "88" in {e.user_id for e in joins}  # the lurker is present under their user id
    assert redis_client.hget(logins, "erin") == b"77"  # learnt from her tags, kept


def test_bad_bot_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_dict(
            {"bot": {"commands": [{"name": "x", "min_role": "king", "response": "r"}]}}, {}
        )
    assert "bot.commands.0.min_role" in str(err.value)
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"bot": {"commands": [{"name": "custom"}]}}, {})
    assert "bot.commands.0.response" in str(err.value)
    conf = tmp_path / "rally.toml"
    conf.write_text("[networks.tv.earn]\n[bot]\nchannels = []\n")
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "bot", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "[bot] channels and websockets are empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_bot_limits_come_from_the_settings() -> None:
    settings = settings_from_dict(
        {"networks": {"tv": {"earn": {}}},
         "bot": {"give_max_points": 5, "give_daily_max_points": 50, "give_cooldown_s": 2.5,
                 "moderator_max_points": 70, "bonusall_max_viewers": 3}}, {},
    )  # fmt: skip
    assert bot_parts(settings).limits == SpendLimits(5, 50, 2.5, 70, 3)
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"bot": {"give_max_points": -1}}, {})
    assert "bot.give_max_points" in str(err.value)


WS_CONFIG = """
namespace = "{ns}"
data_dir = "{data_dir}"
[redis]
url = "{redis_url}"
[shards]
channel = {shards}
[networks.kick.earn]
[bot]
[[bot.websockets]]
url = "ws://127.0.0.1:{port}/app/key"
pusher = true
channels = ["chatrooms.1"]
[bot.websockets.mapping]
kinds = {{ "App\\\\Events\\\\ChatMessageEvent" = "chat" }}
user_id = "data.sender.id"
user_name = "data.sender.username"
text = "data.content"
channel_prefix = "chatrooms."
"""


def test_rally_bot_runs_a_websocket_network(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    """`rally bot` with only [[bot.websockets]]: it subscribes over the Pusher protocol and
    the network's chat frames land in the durable ingest log."""
    from aiohttp import web

    from gateway.redis_server import free_port
    from tests.gateway.connectors.test_irc import SHARDS, until
    from tests.gateway.connectors.test_websocket import PusherServer

    server, port = PusherServer(), free_port()
    conf = tmp_path / "rally.toml"
    conf.write_text(WS_CONFIG.format(ns=namespace, data_dir=tmp_path, redis_url=redis_server.url,
                                     shards=SHARDS, port=port))  # fmt: skip

    async def go() -> list[Chat]:
        app = web.Application()
        app.router.add_get("/app/key", server.handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "bot", "--config", str(conf),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            await until(lambda: any("chatrooms.1" in subs for _, subs in server.sockets), 60)
            await server.push("chatrooms.1", {"id": "k1", "content": "hello",
                                              "sender": {"id": 9, "username": "Zed"}})  # fmt: skip

            def chats() -> list[Chat]:
                got = logged_events(redis_client, Keys(namespace))
                return [e for e in got if isinstance(e, Chat)]

            return await until(chats, 30)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            await runner.cleanup()

    (chat,) = asyncio.run(go())
    assert (chat.id, chat.user_id, chat.channel, chat.network, chat.text) == (
        "k1", "9", "1", "kick", "hello",
    )  # fmt: skip


def test_bad_websocket_settings_name_the_key() -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_dict({"bot": {"websockets": [{"url": "http://x"}]}}, {})
    assert "bot.websockets.0.url" in str(err.value)
    with pytest.raises(SettingsError) as err:
        settings_from_dict(
            {"bot": {"websockets": [{"url": "ws://x", "mapping": {"idd": "a"}}]}}, {}
        )
    assert "bot.websockets.0.mapping" in str(err.value)
