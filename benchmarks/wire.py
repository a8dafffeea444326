"""Minimal HTTP/1.1 and WebSocket clients on asyncio streams, for the load generator.

aiohttp's client costs ~100 µs a request; at tens of thousands of requests a second on two
cores that would measure the client, not the server. These send pre-built bytes on keep-alive
connections and parse only what they need. Client frames are masked with a zero key (valid
framing: XOR with zero leaves the payload as is), so no per-byte work is done.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
from typing import cast

import msgspec

from gateway.signing import KEY_HEADER, SIG_HEADER, TS_HEADER, ws_handshake

MAX_RESPONSE_BYTES = 1 << 20
"""A larger response (or header block) is a protocol error here."""


class WireError(Exception):
    """The server broke the protocol or closed the connection."""


class _HttpClient(asyncio.Protocol):
    """The response side of one connection: bytes in, (status, body) out for each waiter."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None:
            self._answer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(WireError("connection closed before a response"))

    def _answer(self) -> None:
        """Resolve the waiter once a whole response is buffered."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_RESPONSE_BYTES:
                self._fail(WireError("response header too large"))
            return
        head = bytes(buf[:end]).lower()
        status_line = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[1].isdigit():
            self._fail(WireError(f"bad status line {status_line!r}"))
            return
        start = end + 4
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            size = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(buf) < start + size:
                return
            body, rest = bytes(buf[start : start + size]), start + size
        elif b"\r\ntransfer-encoding: chunked" in head:
            found = _dechunk(buf, start)
            if found is None:
                return
            body, rest = found
        else:
            body, rest = b"", start
        del buf[:rest]
        self.close_after = b"\r\nconnection: close" in head
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((int(status_line[1]), body))

    def _fail(self, err: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)
        if self.transport is not None:
            self.transport.close()


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body from `start`, and where it ends; None while incomplete."""
    out = bytearray()
    at = start
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return None
        size = int(bytes(buf[at:eol]).split(b";")[0], 16)
        if size == 0:
            if len(buf) < eol + 4:
                return None
            return bytes(out), eol + 4
        if len(buf) < eol + 2 + size + 2:
            return None
        out += buf[eol + 2 : eol + 2 + size]
        at = eol + 2 + size + 2
        if len(out) > MAX_RESPONSE_BYTES:
            raise WireError("response too large")


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time. An asyncio Protocol, not
    streams: a request is one write and one future."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._proto: _HttpClient | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, self._proto = await loop.create_connection(_HttpClient, self.host, self.port)

    async def close(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST `body`; (status, response body). Reconnects once if the server closed."""
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        return await self.send(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one whole request (head and body); (status, response body)."""
        proto = self._proto
        if proto is None or proto.transport is None:
            await self.open()
            proto = self._proto
        assert proto is not None
        assert proto.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        proto.waiter = waiter
        proto.transport.write(request)
        if proto.buf:
            proto._answer()
        try:
            return await waiter
        finally:
            if proto.close_after or proto.transport is None:
                await self.close()


class SignedPost:
    """Signed `POST path` requests as single byte strings, the head built once: per request
    only the timestamp (cached per second), the HMAC and the length change."""

    def __init__(self, host: str, port: int, path: str, key: str, secret: str) -> None:
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\n{KEY_HEADER}: {key}\r\n{TS_HEADER}: "
        ).encode()
        self._sig = f"\r\n{SIG_HEADER}: ".encode()
        self._secret = secret.encode()
        self._second = -1
        self._ts = b""

    def request(self, body: bytes, now: float) -> bytes:
        """The whole request, signed at `now` as gateway.signing.sign does."""
        second = int(now)
        if second != self._second:
            self._second, self._ts = second, b"%d" % second
        ts = self._ts
        mac = hmac.digest(self._secret, ts + b"." + body, "sha256").hex().encode()
        length = b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        return b"".join((self._head, ts, self._sig, mac, length, body))


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A final client frame masked with a zero key."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65_536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class WsConnection:
    """A WebSocket client: write many frames at once, read the server's frames one by one."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self._buf = bytearray()

    async def open(self, path: str, key: str, secret: str, acks: str | None = None) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 22
        )
        ws_key = base64.b64encode(os.urandom(16)).decode()
        target, signed = ws_handshake(key, secret, path=path, acks=acks)  # a new nonce each
        headers = {
            "Host": f"{self.host}:{self.port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": ws_key,
            "Sec-WebSocket-Version": "13",
            **signed,
        }
        lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"101":
            raise WireError(f"WebSocket handshake answered {head[:200]!r}")

    def write(self, frames: bytes) -> None:
        self.writer.write(frames)

    async def drain(self) -> None:
        await self.writer.drain()

    async def read(self) -> tuple[int, bytes]:
        """The next (opcode, payload); answers pings itself. Reads what the socket has in one
        go and parses frames from that buffer: one await per read, not three per frame."""
        while True:
            frame = self._frame()
            if frame is None:
                data = await self.reader.read(1 << 16)
                if not data:
                    raise asyncio.IncompleteReadError(bytes(self._buf), None)
                self._buf += data
                continue
            opcode, payload = frame
            if opcode == 0x9:
                self.write(ws_frame(payload, 0xA))
                continue
            if opcode == 0xA:
                continue
            return opcode, payload

    def _frame(self) -> tuple[int, bytes] | None:
        """The first whole frame of the buffer, taken out of it; None while incomplete."""
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = int.from_bytes(buf[2:10], "big"), 10
        if n > MAX_RESPONSE_BYTES * 16:
            raise WireError("frame too large")
        mask = b""
        if b1 & 0x80:
            if len(buf) < at + 4:
                return None
            mask, at = bytes(buf[at : at + 4]), at + 4
        if len(buf) < at + n:
            return None
        payload = bytes(buf[at : at + n])
        del buf[: at + n]
        if mask:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        return b0 & 0x0F, payload

    async def close(self) -> None:
        try:
            self.write(ws_frame(b"\x03\xe8", 0x8))
            await self.writer.drain()
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


ack_decoder = msgspec.json.Decoder(dict)
