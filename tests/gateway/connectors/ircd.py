"""A real InspIRCd (installed by scripts/run.sh ensure_inspircd) on a free loopback port, and
a minimal viewer client that speaks to it over its own connection."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from gateway.redis_server import free_port

CONFIG = """\
<server name="irc.test" description="rally test" network="RallyTest">
<admin name="t" nick="t" email="t@t">
<bind address="127.0.0.1" port="{port}" type="clients">
<power diepass="x" restartpass="x">
<connect name="main" allow="*" timeout="60" pingfreq="120" hardsendq="10485760"
 recvq="1048576" softsendq="1048576" localmax="5000" globalmax="5000" maxchans="200"
 fakelag="off" threshold="100000000" commandrate="100000000" limit="10000" useident="no"
 resolvehostnames="no">
<channels users="200" opers="200">
<limits maxnick="30" maxchan="64" maxline="1024">
<security runasuser="nobody">
<performance somaxconn="128" clonesonconnect="no" quietbursts="yes" timeskipwarn="0">
<pid file="{dir}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT -MODULE" level="default" target="{dir}/ircd.log">
<module name="cap">
<module name="ircv3">
<module name="ircv3_ctctags">
<module name="ircv3_msgid">
<module name="ircv3_servertime">
"""


class InspIRCd:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> InspIRCd:
        binary = shutil.which("inspircd") or "/usr/sbin/inspircd"
        conf = self.dir / "inspircd.conf"
        conf.write_text(CONFIG.format(port=self.port, dir=self.dir))
        self.proc = subprocess.Popen(
            [binary, "--nofork", "--runasroot", "--config", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.dir / "ircd.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            time.sleep(0.05)
        raise RuntimeError("inspircd did not listen in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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
