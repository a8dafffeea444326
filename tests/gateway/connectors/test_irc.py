"""The IRC connector against a real InspIRCd, viewers on their own connections: one
connection joins many channels, chat reaches the durable ingest streams in Redis keyed on
the user id (idempotent by message id), replies reach viewers within the sliding-window
limit and a bounded queue, a dropped connection is re-established and its channels joined
again, and malformed or oversized lines are counted, never fatal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from actors.keys import Keys
from engine.events import Chat, Cheer, Event, Join, Leave, decode_events
from engine.irc import ChatLine, IrcMessage
from gateway.connectors.irc import IrcConfig, IrcConnector
from gateway.ingest import IngestWriter
from gateway.redis_server import RedisServer
from tests.gateway.connectors.ircd import InspIRCd, Viewer

T = TypeVar("T")
SHARDS = 2


def logged_events(client: redis.Redis, keys: Keys) -> list[Event]:
    out: list[Event] = []
    for p in range(SHARDS):
        for _, fields in client.xrange(keys.ingest(p)):
            if b"e" in fields:
                out.extend(decode_events(fields[b"e"]))
    return out


async def until(check: Callable[[], T | None], timeout_s: float = 15.0) -> T:
    """Poll `check` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def run_with(
    redis_server: RedisServer,
    namespace: str,
    cfg: IrcConfig,
    body: Callable[[IrcConnector], Awaitable[None]],
    on_chat: Callable[[IrcConnector], Callable[[ChatLine, IrcMessage], Awaitable[None]]]
    | None = None,
) -> IrcConnector:
    async def go() -> IrcConnector:
        client = aioredis.Redis.from_url(redis_server.url)
        writer = IngestWriter(
            client,
            Keys(namespace),
            channel_shards=SHARDS,
            coalesce_window_ms=2,
            max_coalesce_events=1000,
            max_queue_events=100_000,
        )
        writer.start()

        async def sink(events: list[Event]) -> None:
            await writer.append(events)

        conn = IrcConnector(cfg, sink)
        if on_chat is not None:
            conn.on_chat = on_chat(conn)
        task = asyncio.create_task(conn.run())
        try:
            await asyncio.wait_for(conn.registered.wait(), 15)
            await until(lambda: conn.joined >= set(cfg.channels))
            await body(conn)
            await conn.flush()
        finally:
            await conn.stop()
            await asyncio.wait_for(task, 10)
            await writer.close()
            await client.aclose()
        return conn

    return asyncio.run(go())


def config(ircd: InspIRCd, **over: object) -> IrcConfig:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": ircd.port,
        "nick": "rallybot",
        "network": "twitch",
        "channels": ("alpha", "beta", "gamma"),
        "caps": ("message-tags",),
        "trust_client_tags": True,
        "reconnect_min_s": 0.05,
    }
    base.update(over)
    return IrcConfig(**base)  # type: ignore[arg-type]


def test_chat_and_presence_reach_the_ingest_log(
    ircd: InspIRCd, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    async def body(conn: IrcConnector) -> None:
        alice = await Viewer(ircd.port, "alice").connect()
        bob = await Viewer(ircd.port, "bob").connect()
        for ch in ("alpha", "beta"):
            await alice.join(ch)
        await bob.join("gamma")
        alice.send("@+user-id=1001;+id=m-1;+display-name=Alice PRIVMSG #alpha :hello")
        alice.send("@+user-id=1001;+id=m-2 PRIVMSG #beta :hi beta")
        bob.send("@+user-id=2002;+id=m-3;+bits=50 PRIVMSG #gamma :cheer50")
        # the same message id again (a replayed line): one id in the log, deduped downstream
        bob.send("@+user-id=2002;+id=m-3;+bits=50 PRIVMSG #gamma :cheer50")
        await until(lambda: conn.logins.get("bob") == "2002")
        alice.send("PART #beta")
        await until(lambda: conn.metrics.by_command.get("PART"))
        await alice.close()
        await bob.close()

    conn = run_with(redis_server, namespace, config(ircd), body)
    events = logged_events(redis_client, Keys(namespace))
    chats = {e.id: e for e in events if isinstance(e, Chat)}
    assert set(chats) == {"m-1", "m-2", "m-3"}
    assert (chats["m-1"].user_id, chats["m-1"].channel, chats["m-1"].user_name) == (
        "1001",
        "alpha",
        "Alice",
    )
    assert chats["m-3"].user_id == "2002"
    assert [e.id for e in events if isinstance(e, Cheer)] == ["m-3.bits", "m-3.bits"]
    leaves = [e for e in events if isinstance(e, Leave)]
    assert [(e.user_id, e.channel) for e in leaves] == [("1001", "beta")]
    assert not [e for e in events if isinstance(e, Join)]  # logins were unknown when joining
    assert conn.metrics.connects == 1


def test_replies_are_rate_limited_and_bounded(
    ircd: InspIRCd, redis_server: RedisServer, namespace: str
) -> None:
    seen: list[str] = []

    def handler(conn: IrcConnector) -> Callable[[ChatLine, IrcMessage], Awaitable[None]]:
        async def on_chat(line: ChatLine, msg: IrcMessage) -> None:
            if line.text == "!ping":
                conn.say(line.channel, f"pong @{line.display_name}")

        return on_chat

    async def body(conn: IrcConnector) -> None:
        carol = await Viewer(ircd.port, "carol").connect()
        await carol.join("alpha")
        carol.send("@+user-id=3003 PRIVMSG #alpha :!ping")
        reply = await carol.expect("PRIVMSG #alpha")
        seen.append(reply)
        for i in range(10):
            conn.say("alpha", f"n{i}")
        for i in range(2):  # the window allows 3 per 30 s: the first reply and 2 more
            seen.append(await carol.expect(f"n{i}"))
        with pytest.raises(TimeoutError):  # nothing more inside the window
            await carol.expect("PRIVMSG #alpha", timeout_s=0.3)
        await carol.close()

    cfg = config(ircd, rate_limit=3, max_outbound_queue=5)
    conn = run_with(redis_server, namespace, cfg, body, handler)
    assert "pong @carol" in seen[0]
    assert conn.metrics.replies_sent == 3
    assert conn.metrics.replies_dropped >= 10 - 5 - 2  # queue of 5 while the window is full


def test_reconnect_rejoins_and_keeps_ingesting(
    ircd: InspIRCd, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    async def body(conn: IrcConnector) -> None:
        dave = await Viewer(ircd.port, "dave").connect()
        await dave.join("beta")
        dave.send("@+user-id=4004;+id=r-1 PRIVMSG #beta :before")
        await until(lambda: conn.metrics.by_command.get("PRIVMSG"))
        conn.drop_connection()
        await until(lambda: conn.metrics.connects == 2)
        await until(lambda: conn.joined >= {"alpha", "beta", "gamma"})
        dave.send("@+user-id=4004;+id=r-2 PRIVMSG #beta :after")
        await until(lambda: conn.metrics.by_command.get("PRIVMSG", 0) >= 2)
        await dave.close()

    run_with(redis_server, namespace, config(ircd), body)
    ids = [e.id for e in logged_events(redis_client, Keys(namespace)) if isinstance(e, Chat)]
    assert ids == ["r-1", "r-2"]


def test_malformed_and_oversized_lines_are_counted(
    ircd: InspIRCd, redis_server: RedisServer, namespace: str
) -> None:
    async def body(conn: IrcConnector) -> None:
        await conn._line(b"\x00garbage\r\n")
        await conn._line(b"@a=b\r\n")
        await conn._line(b"@user-id=1 :x!x@x PRIVMSG #alpha :" + b"y" * 20_000 + b"\r\n")
        await conn._line(b":x!x@x PRIVMSG #alpha :no user id\r\n")

    conn = run_with(redis_server, namespace, config(ircd), body)
    assert conn.metrics.parse_errors == 2
    assert conn.metrics.oversized == 1
    assert conn.metrics.events_out == 0


def test_names_refresh_keeps_known_lurkers_present(
    ircd: InspIRCd, redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    """A lurker (JOIN only, no tags) whose login is known is refreshed by every NAMES reply:
    `join` events, so the presence timeout does not drop someone still in the channel."""

    async def body(conn: IrcConnector) -> None:
        conn.know({"finn": "88"})
        finn = await Viewer(ircd.port, "finn").connect()
        await finn.join("alpha")
        ghost = await Viewer(ircd.port, "ghost").connect()  # never learnt: no event
        await ghost.join("alpha")
        seen = conn.metrics.by_command.get("353", 0)
        await until(lambda: conn.metrics.by_command.get("353", 0) >= seen + 2)  # asked twice
        await finn.close()
        await ghost.close()

    run_with(redis_server, namespace, config(ircd, names_interval_s=0.2), body)
    joins = [e for e in logged_events(redis_client, Keys(namespace)) if isinstance(e, Join)]
    assert {(e.user_id, e.channel) for e in joins} == {("88", "alpha")}
    assert len([e for e in joins if e.id.startswith("irc.names.alpha.finn.")]) >= 1
