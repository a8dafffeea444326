"""WebSocket ingest: frames acked by event id once durable; bad frames answered, socket kept."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import redis

from gateway.redis_server import RedisServer
from gateway.signing import signed_headers, stream_target, ws_handshake

from .helpers import SECRET, body_of, chat, make_settings, serve, stream_entries, ws_connect

NONCE = "n" * 24


def test_frames_are_acked_by_id_and_bad_frames_do_not_close_the_socket(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            ws = await ws_connect(client)
            await ws.send_str(body_of([chat(1), chat(2, channel="c2")]).decode())
            assert await ws.receive_json() == {"ack": ["e1", "e2"]}

            await ws.send_str(body_of({"events": [chat(3), chat(4, ts="late")]}).decode())
            error = await ws.receive_json()
            assert (error["error"], error["field"], error["index"]) == ("invalid_event", "ts", 1)

            await ws.send_str("{not json")
            assert (await ws.receive_json())["error"] == "malformed_json"

            await ws.send_str(body_of([chat(5, network="other")]).decode())
            error = await ws.receive_json()
            assert (error["error"], error["field"], error["index"]) == ("forbidden", "network", 0)

            await ws.send_bytes(body_of({"events": [chat(6)]}))
            assert await ws.receive_json() == {"ack": ["e6"]}

            await ws.send_str(body_of(chat(7)).decode())
            assert await ws.receive_json() == {"ack": ["e7"]}
            assert not ws.closed
            await ws.close()

    asyncio.run(go())
    ids = sorted(e.id for part in stream_entries(redis_client, namespace).values() for e in part)
    assert ids == ["e1", "e2", "e6", "e7"]


def test_many_frames_in_flight_all_acked_and_landed(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    n = 300

    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            ws = await ws_connect(client)
            for i in range(n):
                await ws.send_str(body_of(chat(i, channel=f"c{i % 7}")).decode())
            acked = []
            for _ in range(n):
                acked += (await ws.receive_json())["ack"]
            assert sorted(acked) == sorted(f"e{i}" for i in range(n))
            await ws.close()

    asyncio.run(go())
    landed = [e.id for part in stream_entries(redis_client, namespace).values() for e in part]
    assert sorted(landed) == sorted(f"e{i}" for i in range(n))
    # one socket's frames keep their order within a partition
    for part in stream_entries(redis_client, namespace).values():
        per_channel: dict[str, list[int]] = {}
        for e in part:
            per_channel.setdefault(e.channel, []).append(int(e.id[1:]))
        assert all(v == sorted(v) for v in per_channel.values())


def test_bulk_acks_answer_a_write_at_once_and_a_bad_mode_is_refused(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    n = 300

    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            target, headers = ws_handshake("k1", SECRET, acks="bulk")
            ws = await client.ws_connect(target, headers=headers)
            for i in range(n):  # sent before the gateway reads: it reads them in few groups
                await ws.send_str(body_of(chat(i, channel=f"c{i % 7}")).decode())
            acked, messages = [], 0
            while len(acked) < n:
                acked += (await ws.receive_json())["ack"]
                messages += 1
            assert sorted(acked) == sorted(f"e{i}" for i in range(n))
            assert messages < n, "one ack names the frames of a whole write"
            await ws.send_str("{not json")  # a refused frame is still answered on its own
            assert (await ws.receive_json())["error"] == "malformed_json"
            await ws.close()

            target, headers = ws_handshake("k1", SECRET, acks="sometimes")
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await client.ws_connect(target, headers=headers)
            assert info.value.status == 400
            target, headers = ws_handshake("k1", SECRET, acks="sometimes")
            async with client.get(target, headers=headers) as resp:
                body = await resp.json()
                assert (resp.status, body["error"], body["field"]) == (400, "bad_request", "acks")

    asyncio.run(go())
    landed = [e.id for part in stream_entries(redis_client, namespace).values() for e in part]
    assert sorted(landed) == sorted(f"e{i}" for i in range(n))


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (stream_target(NONCE), {}),
        (
            stream_target(NONCE),
            signed_headers("k1", "wrong-secret-0123456789", target=stream_target(NONCE)),
        ),
        (stream_target(NONCE), signed_headers("k1", SECRET, target="/v1/other")),
        (stream_target(NONCE), signed_headers("k1", SECRET, target=stream_target("m" * 24))),
        (stream_target(NONCE), signed_headers("k1", SECRET, b"GET /v1/stream")),
        ("/v1/stream", signed_headers("k1", SECRET, target="/v1/stream")),
        ("/v1/stream?nonce=short", signed_headers("k1", SECRET, target="/v1/stream?nonce=short")),
    ],
    ids=[
        "no headers",
        "wrong secret",
        "another target signed",
        "another nonce signed",
        "the old fixed string",
        "no nonce",
        "nonce too short",
    ],
)
def test_handshake_needs_a_signature_and_a_nonce(
    redis_server: RedisServer, namespace: str, target: str, headers: dict[str, str]
) -> None:
    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await client.ws_connect(target, headers=headers)
            assert info.value.status == 401

    asyncio.run(go())


def test_oversized_frame_closes_with_1009(redis_server: RedisServer, namespace: str) -> None:
    async def go() -> None:
        settings = make_settings(namespace, max_ws_frame_bytes=2048)
        async with serve(settings, redis_server.url) as client:
            ws = await ws_connect(client)
            await ws.send_str(body_of([chat(i) for i in range(30)]).decode())
            msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG

    asyncio.run(go())
