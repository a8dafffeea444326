"""Minimal HTTP/1.1 and WebSocket clients on asyncio streams, for the load generator.

aiohttp's client costs ~100 µs a request; at tens of thousands of requests a second on two
cores that would measure the client, not the server. These send pre-built bytes on keep-alive
connections and parse only what they need. Client frames are masked with a zero key (valid
framing: XOR with zero leaves the payload as is), so no per-byte work is done.
"""

from __future__ import annotations

import asyncio
import base64
import os

import msgspec

from gateway.signing import ws_handshake

MAX_RESPONSE_BYTES = 1 << 20
"""A larger response (or header block) is a protocol error here."""


class WireError(Exception):
    """The server broke the protocol or closed the connection."""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 20
        )

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self.writer = self.reader = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST `body`; (status, response body). Reconnects once if the server closed."""
        if self.writer is None:
            await self.open()
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        assert self.writer is not None
        self.writer.write(request)
        await self.writer.drain()
        return await self._response()

    async def _response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
            await self.close()
            raise WireError("connection closed before a response") from err
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise WireError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            body = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = b""
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        out = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)
            if len(out) > MAX_RESPONSE_BYTES:
                raise WireError("response too large")


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

    async def open(self, path: str, key: str, secret: str) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 22
        )
        ws_key = base64.b64encode(os.urandom(16)).decode()
        target, signed = ws_handshake(key, secret, path=path)  # a new nonce per socket
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
        """The next (opcode, payload); answers pings itself."""
        while True:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            if n > MAX_RESPONSE_BYTES * 16:
                raise WireError("frame too large")
            mask = await self.reader.readexactly(4) if b1 & 0x80 else b""
            payload = await self.reader.readexactly(n)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self.write(ws_frame(payload, 0xA))
                continue
            if opcode == 0xA:
                continue
            return opcode, payload

    async def close(self) -> None:
        try:
            self.write(ws_frame(b"\x03\xe8", 0x8))
            await self.writer.drain()
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


ack_decoder = msgspec.json.Decoder(dict)
