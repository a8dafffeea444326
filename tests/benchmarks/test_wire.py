"""The load generator's own HTTP and WebSocket client (benchmarks/wire.py) against aiohttp."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from benchmarks.wire import HttpConnection, SignedPost, WsConnection, ws_frame
from gateway.signing import KEY_HEADER, SIG_HEADER, TS_HEADER, sign


async def _server(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def test_signed_posts_verify_and_responses_parse_by_length_and_chunks() -> None:
    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        h = request.headers
        assert h[KEY_HEADER] == "k"
        assert h[SIG_HEADER] == sign("s3cret", h[TS_HEADER], body)
        return web.json_response({"accepted": len(body)}, status=202)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"hello ", b"world"):
            await response.write(part)
        await response.write_eof()
        return response

    async def go() -> None:
        app = web.Application()
        app.router.add_post("/v1/events", events)
        app.router.add_post("/chunked", chunked)
        runner, port = await _server(app)
        conn = HttpConnection("127.0.0.1", port)
        signer = SignedPost("127.0.0.1", port, "/v1/events", "k", "s3cret")
        try:
            for i in range(3):  # one keep-alive connection, one request at a time
                body = b'{"events":[%d]}' % i
                assert await conn.send(signer.request(body, time.time())) == (
                    202,
                    b'{"accepted": %d}' % len(body),
                )
            assert await conn.post("/chunked", b"", {}) == (200, b"hello world")
        finally:
            await conn.close()
            await runner.cleanup()

    asyncio.run(go())


def test_websocket_frames_written_at_once_are_read_back_one_by_one() -> None:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            for i in range(3):
                await ws.send_str(f"{msg.data}{i}")
            await ws.send_bytes(b"x" * 70_000)  # a 64-bit length
        return ws

    async def go() -> None:
        app = web.Application()
        app.router.add_get("/v1/stream", echo)
        runner, port = await _server(app)
        ws = WsConnection("127.0.0.1", port)
        try:
            await ws.open("/v1/stream", "k", "s3cret")
            ws.write(ws_frame(b"a") + ws_frame(b"b"))
            await ws.drain()
            got = [await ws.read() for _ in range(8)]
        finally:
            await ws.close()
            await runner.cleanup()
        big = (0x2, b"x" * 70_000)
        assert got == [
            (1, b"a0"),
            (1, b"a1"),
            (1, b"a2"),
            big,
            (1, b"b0"),
            (1, b"b1"),
            (1, b"b2"),
            big,
        ]

    asyncio.run(go())
