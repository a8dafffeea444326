"""Running the chat bot: settings -> IRC connector + command bot + the durable ingest append.

`bot_parts(settings)` builds the plain pieces (connector configs: IRC and any WebSocket
networks, command specs by channel, the network) once; `run_bot` runs them against a Redis URL until `stop` is set. Events are
appended by the same `IngestWriter` the gateway uses (one MULTI/EXEC per flush; duplicate
message ids are dropped by the channel shards' dedupe), so what the bot saw survives a
crash of the bot or a shard once appended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from actors.keys import Keys
from actors.raffle import RaffleClient
from actors.redisconn import connect_async
from actors.spend import SpendClient
from engine.commands import CommandSpec, specs_from_config
from engine.events import Event, valid_only
from engine.wsmap import FrameMapping
from gateway.bot import CommandBot
from gateway.bot_spends import ChatSpends, SpendLimits
from gateway.connectors.irc import MAX_LOGINS, IrcConfig, IrcConnector
from gateway.connectors.websocket import WsConfig, WsConnector
from gateway.ingest import IngestWriter
from gateway.settings import Settings
from gateway.store import Store

RELOAD_S = 1.0
"""How often the bot checks for commands changed through the admin API."""
log = logging.getLogger(__name__)


METRICS_LOG_S = 60.0
"""How often the bot logs its counters (lines, malformed, oversized, replies, refusals)."""


def log_metrics(conn: IrcConnector, bot: CommandBot) -> None:
    m, b = conn.metrics, bot.metrics
    log.info(
        "bot_metrics lines_in=%d parse_errors=%d oversized=%d events_out=%d sink_failures=%d "
        "replies_sent=%d replies_dropped=%d connects=%d commands=%d refused=%s unsupported=%d",
        m.lines_in, m.parse_errors, m.oversized, m.events_out, m.sink_failures,
        m.replies_sent, m.replies_dropped, m.connects, b.commands, b.refused, b.unsupported,
    )  # fmt: skip


def logins_key(keys: Keys, network: str) -> str:
    """Hash login -> platform user id of the network's chatters, learnt from tagged lines."""
    return keys.logins(network)


async def load_logins(client: aioredis.Redis, keys: Keys, network: str, conn: IrcConnector) -> None:
    """What earlier runs learnt (at most MAX_LOGINS), so a known lurker's JOIN counts."""
    cursor, loaded = 0, dict[str, str]()
    while len(loaded) < MAX_LOGINS:
        cursor, chunk = cast(
            "tuple[int, dict[bytes, bytes]]",
            await client.hscan(logins_key(keys, network), cursor, count=5_000),
        )
        loaded.update({k.decode(): v.decode() for k, v in chunk.items()})
        if cursor == 0:
            break
    conn.know(loaded)


async def store_logins(client: aioredis.Redis, keys: Keys, network: str, conn: IrcConnector
                       ) -> None:  # fmt: skip
    learnt = conn.take_learnt()
    if learnt and await client.hlen(logins_key(keys, network)) < MAX_LOGINS:
        await client.hset(logins_key(keys, network), mapping=cast("dict[str | bytes, str]", learnt))


class BotConfigError(Exception):
    """The [bot] settings cannot run a bot (no network, no channels)."""


@dataclass(frozen=True, slots=True)
class BotParts:
    irc: IrcConfig
    commands: dict[str, list[CommandSpec]]
    prefix: str
    limits: SpendLimits
    websockets: tuple[WsConfig, ...] = ()


def bot_parts(settings: Settings) -> BotParts:
    b = settings.bot
    network = b.network or settings.default_network() or ""
    if not network:
        raise BotConfigError("[bot] network is required (several or no networks are configured)")
    irc = IrcConfig(
        host=b.host,
        port=b.port,
        nick=b.nick,
        network=network,
        channels=tuple(c.lstrip("#").lower() for c in b.channels),
        password=b.password,
        caps=tuple(b.caps),
        trust_client_tags=b.trust_client_tags,
        moderator=b.moderator,
        rate_limit=b.rate_limit,
        rate_limit_moderator=b.rate_limit_moderator,
        rate_window_s=b.rate_window_s,
        max_outbound_queue=b.max_outbound_queue,
        max_pending_events=b.max_pending_events,
        reconnect_max_s=b.reconnect_max_s,
        idle_ping_s=b.idle_ping_s,
        names_interval_s=b.names_interval_s,
    )
    commands: dict[str, list[CommandSpec]] = {}
    for item in b.commands:
        channel = str(item.get("channel", "*")).lstrip("#").lower()
        spec = {k: v for k, v in item.items() if k != "channel"}
        commands.setdefault(channel, []).extend(specs_from_config([spec]))
    limits = SpendLimits(
        give_max_points=b.give_max_points,
        give_daily_max_points=b.give_daily_max_points,
        give_cooldown_s=b.give_cooldown_s,
        moderator_max_points=b.moderator_max_points,
        bonusall_max_viewers=b.bonusall_max_viewers,
    )
    websockets = tuple(
        WsConfig(
            url=w.url,
            network=network,
            mapping=msgspec.convert(w.mapping, FrameMapping),
            channels=tuple(w.channels),
            pusher=w.pusher,
            subscribe_frames=tuple(w.subscribe_frames),
            max_frame_bytes=w.max_frame_bytes,
            reconnect_max_s=w.reconnect_max_s,
        )
        for w in b.websockets
    )
    return BotParts(
        irc=irc, commands=commands, prefix=b.prefix, limits=limits, websockets=websockets
    )


async def run_bot(settings: Settings, redis_url: str, stop: asyncio.Event) -> IrcConnector:
    parts = bot_parts(settings)
    if not parts.irc.channels and not parts.websockets:
        raise BotConfigError("[bot] channels and websockets are empty: nothing to join")
    client = connect_async(redis_url)
    keys = Keys.of(settings.namespace, redis_url)
    lim = settings.limits
    writer = IngestWriter(
        client,
        keys,
        channel_shards=settings.shards.channel,
        coalesce_window_ms=lim.coalesce_window_ms,
        max_coalesce_events=lim.max_coalesce_events,
        max_queue_events=lim.max_queue_events,
    )
    writer.start()

    async def sink(events: list[Event]) -> None:
        # checked here, once (downstream hops do not check ids again): a line that maps to
        # an event the HTTP API would refuse is dropped, never appended
        good, bad = valid_only(events)
        for err in bad:
            log.warning("bot_event_invalid field=%s error=%s", err.field, err.message)
        if good:
            await writer.append(good)

    spends = SpendClient(client, keys, settings.shards.member, timeout_s=settings.spend.timeout_s)
    conn = IrcConnector(parts.irc, sink)
    raffles = RaffleClient(client, keys, timeout_s=settings.spend.timeout_s)
    store_cfg = settings.store
    store = Store(client, keys, spends, failed_ttl_s=store_cfg.failed_ttl_s,
                  stale_after_s=store_cfg.stale_after_s)  # fmt: skip
    rulebook = settings.rulebook()
    chat_spends = ChatSpends(
        client, keys, parts.irc.network, spends, conn.logins, limits=parts.limits,
        raffles=raffles, store=store, prefix=parts.prefix, rules=rulebook,
        tiers=tuple(rulebook.network(parts.irc.network).tiers.names),
    )  # fmt: skip
    bot = CommandBot(
        client,
        keys,
        rulebook,
        parts.irc.network,
        parts.commands,
        conn.say,
        logins=conn.logins,
        spends=spends,
        chat_spends=chat_spends,
        prefix=parts.prefix,
    )
    conn.on_chat = bot.on_chat
    await bot.refresh(parts.irc.channels)
    await load_logins(client, keys, parts.irc.network, conn)
    tasks = [asyncio.create_task(conn.run(), name="irc-connector")] if parts.irc.channels else []
    sockets = [WsConnector(cfg, sink) for cfg in parts.websockets]
    tasks += [
        asyncio.create_task(ws.run(), name=f"ws-connector-{i}") for i, ws in enumerate(sockets)
    ]
    try:
        last_report = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RELOAD_S)
            if time.monotonic() - last_report >= METRICS_LOG_S:
                last_report = time.monotonic()
                log_metrics(conn, bot)
            try:
                await bot.refresh(parts.irc.channels)
                await store_logins(client, keys, parts.irc.network, conn)
            except RedisError as err:
                log.warning("bot_reload_failed error=%r", err)
    finally:
        with contextlib.suppress(RedisError):
            await store_logins(client, keys, parts.irc.network, conn)
        await conn.stop()
        for ws in sockets:
            await ws.stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)
        await writer.close()
        await spends.close()
        await raffles.close()
        await client.aclose()
    return conn
