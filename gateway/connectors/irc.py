"""The IRC connector (Twitch chat's form): one connection, many channels, events to ingest.

`IrcConnector.run()` connects (PASS/NICK/USER, CAP REQ of the configured capabilities),
joins its channels once registered (RPL_WELCOME), answers PING, and turns every line into
events with `engine.irc` (keyed on the platform user id). Events go to `sink` (the durable
ingest append; idempotent by message id downstream) in coalesced batches: a failed append is
retried with backoff and the reader stops reading while `max_pending_events` wait, so no
event seen is dropped. Chat lines go to `on_chat` (the command handler). Replies go through
a bounded queue and a sliding-window rate limit (20 / 30 s; 100 as moderator). A lost
connection is re-established with exponential backoff and the channels are joined again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from engine.events import Event
from engine.irc import (
    MAX_LINE_BYTES,
    ChatLine,
    IrcMessage,
    IrcParseError,
    chat_events,
    chat_line,
    format_line,
    learn_login,
    names_events,
    parse_line,
    promote_client_tags,
    to_events,
)
from engine.ratelimit import SlidingWindow
from gateway.connectors.reconnect import reconnecting

log = logging.getLogger(__name__)

TWITCH_CAPS = ("twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership")
MAX_JOIN_LINE = 400
MAX_LOGINS = 100_000
READ_BYTES = 65_536
MAX_SEND_BATCH = 100
"""Most replies written at once."""

Sink = Callable[[list[Event]], Awaitable[None]]
ChatHandler = Callable[[ChatLine, IrcMessage], Awaitable[None]]


class ConnectorError(Exception):
    """Root of the connector errors."""


@dataclass(frozen=True, slots=True)
class IrcConfig:
    """Where and how to connect; every limit named."""

    host: str
    port: int
    nick: str
    network: str
    channels: tuple[str, ...]
    password: str = ""
    caps: tuple[str, ...] = TWITCH_CAPS
    trust_client_tags: bool = False
    moderator: bool = False
    rate_limit: int = 20
    rate_limit_moderator: int = 100
    rate_window_s: float = 30.0
    max_outbound_queue: int = 1_000
    max_pending_events: int = 10_000
    flush_interval_ms: float = 5.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    idle_ping_s: float = 60.0
    names_interval_s: float = 600.0
    """How often NAMES of every channel is asked: the known names in the replies refresh their
    presence (engine.irc.names_events); 0 = never."""


@dataclass(slots=True)
class ConnectorMetrics:
    lines_in: int = 0
    parse_errors: int = 0
    oversized: int = 0
    events_out: int = 0
    sink_failures: int = 0
    replies_sent: int = 0
    replies_dropped: int = 0
    connects: int = 0
    by_command: dict[str, int] = field(default_factory=dict)


class IrcConnector:
    def __init__(self, cfg: IrcConfig, sink: Sink, on_chat: ChatHandler | None = None) -> None:
        self.cfg = cfg
        self.sink = sink
        self.on_chat = on_chat
        self.metrics = ConnectorMetrics()
        self.logins: dict[str, str] = {}
        self.learnt: dict[str, str] = {}
        """Logins learnt (or changed) since the owner last took them (`take_learnt`): the
        runner stores them, so a restarted bot knows them and a lurker who only JOINs (a
        line without tags) is present under their user id. Bounded by MAX_LOGINS."""
        limit = cfg.rate_limit_moderator if cfg.moderator else cfg.rate_limit
        self.window = SlidingWindow(limit, cfg.rate_window_s)
        self.outbound: asyncio.Queue[str] = asyncio.Queue(cfg.max_outbound_queue)
        self.registered = asyncio.Event()
        self.joined: set[str] = set()
        self._pending: list[Event] = []
        self._has_pending = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._room = asyncio.Event()
        self._room.set()
        self._writer: asyncio.StreamWriter | None = None
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def take_learnt(self) -> dict[str, str]:
        """The logins learnt since the last call (login -> user id)."""
        out, self.learnt = self.learnt, {}
        return out

    def know(self, logins: dict[str, str]) -> None:
        """Logins learnt before (by an earlier run of the bot): JOIN and PART resolve them."""
        for login, user_id in list(logins.items())[: MAX_LOGINS - len(self.logins)]:
            self.logins.setdefault(login, user_id)

    # ---- outbound -------------------------------------------------------------------
    def say(self, channel: str, text: str) -> bool:
        """Queue a reply; False (counted) when the outbound queue is full."""
        try:
            self.outbound.put_nowait(format_line("PRIVMSG", "#" + channel, text))
        except asyncio.QueueFull:
            self.metrics.replies_dropped += 1
            return False
        return True

    async def _send_raw(self, line: str) -> None:
        writer = self._writer
        if writer is None:
            raise ConnectionError("not connected")
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    async def _sender(self) -> None:
        """Send replies as the rate window allows: every reply queued that the window lets go
        now leaves in one write (one system call and one drain for a burst)."""
        while True:
            lines = [await self.outbound.get()]
            while True:
                now = time.monotonic()
                if self.window.try_send(now):
                    break
                await asyncio.sleep(max(self.window.next_at(now) - now, 0.001))
            while not self.outbound.empty() and len(lines) < MAX_SEND_BATCH:
                if not self.window.try_send(now):
                    break
                lines.append(self.outbound.get_nowait())
            await self.registered.wait()
            try:
                await self._send_raw("\r\n".join(lines))
                self.metrics.replies_sent += len(lines)
            except (ConnectionError, OSError):
                self.metrics.replies_dropped += len(lines)

    # ---- events to the durable log ----------------------------------------------------
    def _queue_events(self, events: list[Event]) -> None:
        self._pending.extend(events)
        self._has_pending.set()
        self._drained.clear()
        if len(self._pending) >= self.cfg.max_pending_events:
            self._room.clear()

    async def _flusher(self) -> None:
        backoff = self.cfg.reconnect_min_s
        while True:
            await self._has_pending.wait()
            await asyncio.sleep(self.cfg.flush_interval_ms / 1000)
            batch, self._pending = self._pending, []
            self._has_pending.clear()
            while True:
                try:
                    await self.sink(batch)
                    break
                except Exception as err:  # the log is down: keep the batch, retry
                    self.metrics.sink_failures += 1
                    log.warning("bot_ingest_failed events=%d error=%r", len(batch), err)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.cfg.reconnect_max_s)
            backoff = self.cfg.reconnect_min_s
            self.metrics.events_out += len(batch)
            if len(self._pending) < self.cfg.max_pending_events:
                self._room.set()
            if not self._pending:
                self._drained.set()

    async def flush(self) -> None:
        """Wait until every event seen so far was handed to the sink."""
        await self._drained.wait()

    # ---- the connection ---------------------------------------------------------------
    async def run(self) -> None:
        """Connect, read, reconnect with backoff; until `stop()`."""
        self._tasks = [
            asyncio.create_task(self._sender(), name="irc-sender"),
            asyncio.create_task(self._flusher(), name="irc-flusher"),
            asyncio.create_task(self._names(), name="irc-names"),
        ]
        try:
            await reconnecting(
                self._session, lambda: self._stopping,
                errors=(OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError),
                min_s=self.cfg.reconnect_min_s, max_s=self.cfg.reconnect_max_s, name="irc",
            )  # fmt: skip
        finally:
            await self.flush()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _names(self) -> None:
        """Ask NAMES of the channels joined, every names_interval_s (in chunks of a line)."""
        interval = self.cfg.names_interval_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            if not self.registered.is_set():
                continue
            chunk: list[str] = []
            try:
                for name in sorted(self.joined):
                    chunk.append("#" + name)
                    if sum(len(c) + 1 for c in chunk) > MAX_JOIN_LINE:
                        await self._send_raw("NAMES " + ",".join(chunk))
                        chunk = []
                if chunk:
                    await self._send_raw("NAMES " + ",".join(chunk))
            except (ConnectionError, OSError):
                continue  # the reader reconnects; asked again next time

    async def stop(self) -> None:
        self._stopping = True
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(OSError, ConnectionError):
                writer.write(b"QUIT :bye\r\n")
                await writer.drain()
            writer.close()

    def drop_connection(self) -> None:
        """Close the socket as a network failure would (tests, operators)."""
        if self._writer is not None:
            self._writer.transport.abort()

    async def _session(self) -> None:
        cfg = self.cfg
        reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
        self._writer = writer
        self.metrics.connects += 1
        self.registered.clear()
        self.joined.clear()
        hello = []
        if cfg.caps:
            hello.append("CAP REQ :" + " ".join(cfg.caps))
        if cfg.password:
            hello.append("PASS " + cfg.password)
        hello += [f"NICK {cfg.nick}", f"USER {cfg.nick} 0 * :{cfg.nick}", "CAP END"]
        await self._send_raw("\r\n".join(hello))
        pinged = False
        buf = b""
        skipping = False  # inside a line longer than MAX_LINE_BYTES: dropped to its end
        try:
            while not self._stopping:
                try:
                    data = await asyncio.wait_for(reader.read(READ_BYTES), cfg.idle_ping_s)
                except TimeoutError:
                    if pinged:
                        raise
                    pinged = True
                    await self._send_raw("PING :rally")
                    continue
                if not data:
                    raise ConnectionError("closed by server")
                _quickack(writer)
                pinged = False
                lines = (buf + data).split(b"\n")
                buf = lines.pop()
                for raw in lines:
                    if skipping:
                        skipping = False
                        continue
                    await self._line(raw)
                if len(buf) > MAX_LINE_BYTES:
                    self.metrics.oversized += 1
                    buf, skipping = b"", True
                if not self._room.is_set():
                    await self._room.wait()  # back-pressure: the log is behind
        finally:
            self._writer = None
            self.registered.clear()
            writer.close()

    async def _line(self, raw: bytes) -> None:
        self.metrics.lines_in += 1
        if len(raw) > MAX_LINE_BYTES:
            self.metrics.oversized += 1
            return
        try:
            msg = parse_line(raw)
        except IrcParseError:
            self.metrics.parse_errors += 1
            return
        if self.cfg.trust_client_tags:
            msg = promote_client_tags(msg)
        cmd = msg.command
        self.metrics.by_command[cmd] = self.metrics.by_command.get(cmd, 0) + 1
        if cmd == "PING":
            await self._send_raw(format_line("PONG", msg.trailing or "tmi"))
            return
        if cmd == "001":
            self.registered.set()
            await self._join_all()
            return
        if cmd == "JOIN" and msg.nick.lower() == self.cfg.nick.lower() and msg.params:
            self.joined.add(msg.params[0].lstrip("#").lower())
            return
        if cmd == "RECONNECT":  # Twitch asks clients to reconnect
            self.drop_connection()
            return
        learnt = learn_login(msg)
        if learnt is not None and self.logins.get(learnt[0]) != learnt[1]:
            if len(self.logins) >= MAX_LOGINS:
                self.logins.clear()
            self.logins[learnt[0]] = learnt[1]
            if len(self.learnt) < MAX_LOGINS:
                self.learnt[learnt[0]] = learnt[1]
        line = chat_line(msg) if cmd == "PRIVMSG" else None  # read once, for both uses
        if cmd == "353":
            events = names_events(msg, self.cfg.network, time.time(), self.logins)
        elif line is not None:  # as to_events: no event for a channel name it cannot read
            events = chat_events(line, msg, self.cfg.network, time.time()) if line.channel else []
        else:
            events = to_events(msg, self.cfg.network, time.time(), self.logins)
        if events:
            self._queue_events(events)
        if self.on_chat is not None and line is not None:
            try:
                await self.on_chat(line, msg)
            except Exception:
                log.exception("bot_command_failed channel=%s", line.channel)

    async def _join_all(self) -> None:
        chunk: list[str] = []
        for name in self.cfg.channels:
            chunk.append("#" + name.lstrip("#").lower())
            if sum(len(c) + 1 for c in chunk) > MAX_JOIN_LINE:
                await self._send_raw("JOIN " + ",".join(chunk))
                chunk = []
        if chunk:
            await self._send_raw("JOIN " + ",".join(chunk))


def _quickack(writer: asyncio.StreamWriter) -> None:
    """Acknowledge what the server sends at once (TCP_QUICKACK, Linux; it lapses, so it is set
    again after every read). A server that leaves Nagle's algorithm on (InspIRCd sets no
    TCP_NODELAY) sends nothing more while a segment is unacknowledged, and a delayed ACK
    waits up to 40 ms: from ~500 lines a second, each chat line, so each command, waited
    ~20 ms on average for the connector's kernel (`python -m benchmarks.botbench`: reply p50
    22.9 -> 0.5 ms at 500 lines/s, p99 49.5 -> 13.6 ms at 5,000)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
