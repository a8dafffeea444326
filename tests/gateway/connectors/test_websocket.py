"""The generic WebSocket connector against a small Pusher-protocol server (aiohttp, in the
test): it subscribes once the connection is established, answers pings, maps chat frames
to events appended to the real ingest log, counts malformed frames, and after the server
drops it, reconnects and subscribes again."""

from __future__ import annotations

import asyncio
import json

import redis
import redis.asyncio as aioredis
from aiohttp import web

from actors.keys import Keys
from engine.events import Chat, Event
from engine.wsmap import FrameMapping
from gateway.connectors.websocket import WsConfig, WsConnector
from gateway.ingest import IngestWriter
from gateway.redis_server import RedisServer, free_port
from tests.gateway.connectors.test_irc import SHARDS, logged_events, until

EVENT = "App\\Events\\ChatMessageEvent"
MAPPING = FrameMapping(kinds={EVENT: "chat"}, id="data.id", user_id="data.sender.id",
                       user_name="data.sender.username", text="data.content",
                       channel_prefix="chatrooms.")  # fmt: skip


class PusherServer:
    def __init__(self) -> None:
        self.sockets: list[tuple[web.WebSocketResponse, set[str]]] = []
        self.pongs = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        subs: set[str] = set()
        self.sockets.append((ws, subs))
        data = json.dumps({"socket_id": "1.2", "activity_timeout": 120})
        await ws.send_str(json.dumps({"event": "pusher:connection_established", "data": data}))
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame["event"] == "pusher:subscribe":
                ch = frame["data"]["channel"]
                subs.add(ch)
                await ws.send_str(json.dumps({"event": "pusher_internal:subscription_succeeded",
                                              "channel": ch, "data": "{}"}))  # fmt: skip
            elif frame["event"] == "pusher:pong":
                self.pongs += 1
        return ws

    async def push(self, channel: str, payload: dict[str, object] | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        for ws, subs in self.sockets:
            if channel in subs and not ws.closed:
                await ws.send_str(json.dumps({"event": EVENT, "channel": channel, "data": data}))


def test_pusher_connector(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    server = PusherServer()

    async def go() -> WsConnector:
        app = web.Application()
        app.router.add_get("/app/key", server.handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        client = aioredis.Redis.from_url(redis_server.url)
        writer = IngestWriter(client, Keys(namespace), channel_shards=SHARDS, coalesce_window_ms=2,
                              max_coalesce_events=1000, max_queue_events=10_000)  # fmt: skip
        writer.start()

        async def sink(events: list[Event]) -> None:
            await writer.append(events)

        cfg = WsConfig(url=f"ws://127.0.0.1:{port}/app/key", network="kick", mapping=MAPPING,
                       channels=("chatrooms.1", "chatrooms.2"), pusher=True, reconnect_min_s=0.05)  # fmt: skip
        conn = WsConnector(cfg, sink)
        task = asyncio.create_task(conn.run())
        await until(lambda: conn.metrics.subscribed == {"chatrooms.1", "chatrooms.2"})
        await server.push("chatrooms.1", {"id": "k1", "content": "hello",
                                          "sender": {"id": 9, "username": "Zed"}})  # fmt: skip
        await server.push("chatrooms.2", "{broken json")
        ws, _ = server.sockets[0]
        await ws.send_str(json.dumps({"event": "pusher:ping", "data": {}}))
        await ws.send_str("not json at all")
        await until(
            lambda: (
                conn.metrics.events_out == 1 and server.pongs == 1 and conn.metrics.malformed == 1
            )
        )
        await ws.close()  # the server drops the connection: reconnect and resubscribe
        await until(lambda: conn.metrics.connects == 2 and len(conn.metrics.subscribed) == 2)
        await server.push("chatrooms.2", {"id": "k2", "content": "again", "sender": {"id": 9}})
        await until(lambda: conn.metrics.events_out == 2)
        await conn.stop()
        await asyncio.wait_for(task, 10)
        await writer.close()
        await client.aclose()
        await runner.cleanup()
        return conn

    conn = asyncio.run(go())
    chats = [e for e in logged_events(redis_client, Keys(namespace)) if isinstance(e, Chat)]
    assert [(c.id, c.channel, c.user_id, c.text) for c in chats] == [
        ("k1", "1", "9", "hello"), ("k2", "2", "9", "again")]  # fmt: skip
    assert conn.metrics.unmapped == 1  # the broken data string


def test_the_test_server_speaks_pusher_to_a_real_client(redis_server: RedisServer) -> None:
    """pysher (a real Pusher client) connects, subscribes and receives an event from the
    server the connector is tested against: the server is faithful to the protocol."""
    import pysher

    server = PusherServer()
    got: list[str] = []

    async def go() -> None:
        app = web.Application()
        app.router.add_get("/app/{key}", server.handler)
        runner = web.AppRunner(app, shutdown_timeout=2)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        client = pysher.Pusher("key", secure=False, port=port, custom_host="127.0.0.1",
                               reconnect_interval=60, log_level=30)  # fmt: skip

        def established(_: str) -> None:
            channel = client.subscribe("chatrooms.5")
            channel.bind(EVENT, got.append)

        client.connection.bind("pusher:connection_established", established)
        client.connect()
        try:
            await until(lambda: any("chatrooms.5" in s for _, s in server.sockets))
            await server.push("chatrooms.5", {"id": "p1", "content": "from pysher's view",
                                              "sender": {"id": 3}})  # fmt: skip
            await until(lambda: got)
        finally:
            await asyncio.wait_for(asyncio.to_thread(client.disconnect, timeout=1), 10)
            for ws, _ in server.sockets:
                await asyncio.wait_for(ws.close(), 5)
            await runner.cleanup()

    asyncio.run(go())
    assert json.loads(got[0])["content"] == "from pysher's view"
