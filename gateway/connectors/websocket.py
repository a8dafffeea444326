"""A generic WebSocket chat connector: JSON frames to events by a field mapping
(engine.wsmap), with the Pusher protocol's subscribe / ping frames when `pusher` is set.

Pusher: after `pusher:connection_established` it sends `pusher:subscribe` for each channel
and answers `pusher:ping` with `pusher:pong`. Otherwise it sends `subscribe_frames` (raw
JSON texts) once connected. Mapped events go to `sink` (the durable ingest append); a failed
append is retried with backoff before the next frame is read. A lost connection is
re-established with exponential backoff. Malformed and unmapped frames are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

import aiohttp

from engine.wsmap import FrameMapping, map_frame
from gateway.connectors.irc import Sink
from gateway.connectors.reconnect import reconnecting

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WsConfig:
    url: str
    network: str
    mapping: FrameMapping
    channels: tuple[str, ...] = ()
    pusher: bool = False
    subscribe_frames: tuple[str, ...] = ()
    max_frame_bytes: int = 1 << 20
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(slots=True)
class WsMetrics:
    frames_in: int = 0
    malformed: int = 0
    unmapped: int = 0
    events_out: int = 0
    sink_failures: int = 0
    connects: int = 0
    subscribed: set[str] = field(default_factory=set)


class WsConnector:
    def __init__(self, cfg: WsConfig, sink: Sink) -> None:
        self.cfg = cfg
        self.sink = sink
        self.metrics = WsMetrics()
        self._stopping = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await reconnecting(
                lambda: self._session(session), lambda: self._stopping,
                errors=(aiohttp.ClientError, OSError, TimeoutError),
                min_s=self.cfg.reconnect_min_s, max_s=self.cfg.reconnect_max_s, name="ws",
            )  # fmt: skip

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()

    async def drop_connection(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def _session(self, session: aiohttp.ClientSession) -> None:
        cfg = self.cfg
        async with session.ws_connect(
            cfg.url, max_msg_size=cfg.max_frame_bytes, heartbeat=30
        ) as ws:
            self._ws = ws
            self.metrics.connects += 1
            self.metrics.subscribed.clear()
            for text in cfg.subscribe_frames:
                await ws.send_str(text)
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type == aiohttp.WSMsgType.ERROR:
                        break
                    continue
                await self._frame(ws, msg.data)
        self._ws = None

    async def _frame(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        self.metrics.frames_in += 1
        try:
            frame = json.loads(text)
        except ValueError:
            self.metrics.malformed += 1
            return
        if self.cfg.pusher and isinstance(frame, dict):
            name = frame.get("event")
            if name == "pusher:connection_established":
                for ch in self.cfg.channels:
                    await ws.send_str(
                        json.dumps({"event": "pusher:subscribe", "data": {"channel": ch}})
                    )
                return
            if name == "pusher:ping":
                await ws.send_str(json.dumps({"event": "pusher:pong", "data": {}}))
                return
            if name == "pusher_internal:subscription_succeeded":
                self.metrics.subscribed.add(str(frame.get("channel", "")))
                return
        event = map_frame(frame, self.cfg.mapping, self.cfg.network, time.time())
        if event is None:
            self.metrics.unmapped += 1
            return
        backoff = self.cfg.reconnect_min_s
        while True:
            try:
                await self.sink([event])
                break
            except Exception as err:  # the log is down: keep the event, retry
                self.metrics.sink_failures += 1
                log.warning("ws_ingest_failed error=%r", err)
                if self._stopping:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
        self.metrics.events_out += 1


async def run_until(conn: WsConnector, stop: asyncio.Event) -> None:
    """Run `conn` until `stop` is set."""
    task = asyncio.create_task(conn.run())
    await stop.wait()
    await conn.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
