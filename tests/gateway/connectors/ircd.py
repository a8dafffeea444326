"""A minimal viewer client that speaks to a real InspIRCd (gateway/ircd_server.py) over its
own connection."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.ircd_server import InspIRCd

__all__ = ["InspIRCd", "Viewer"]


class Viewer:
    """A chat client: registers with message-tags, joins, sends tagged lines, reads lines."""

    def __init__(self, port: int, nick: str) -> None:
        self.port = port
        self.nick = nick
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.welcomed = asyncio.Event()

    async def connect(self) -> Viewer:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.send(
            f"CAP REQ :message-tags\r\nNICK {self.nick}\r\nUSER {self.nick} 0 * :v\r\nCAP END"
        )
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.welcomed.wait(), 10)
        return self

    def send(self, line: str) -> None:
        assert self._writer is not None
        self._writer.write(line.encode() + b"\r\n")

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            raw = await self._reader.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\r\n")
            if line.startswith("PING"):
                self.send("PONG" + line[4:])
            if " 001 " in line:
                self.welcomed.set()
            self.lines.put_nowait(line)

    async def expect(self, needle: str, timeout_s: float = 10.0) -> str:
        """The next line that contains `needle` (others are skipped)."""

        async def find() -> str:
            while True:
                line = await self.lines.get()
                if needle in line:
                    return line

        return await asyncio.wait_for(find(), timeout_s)

    async def join(self, channel: str) -> None:
        self.send(f"JOIN #{channel}")
        await self.expect(f"JOIN :#{channel}")

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self.send("QUIT :bye")
                await self._writer.drain()
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
