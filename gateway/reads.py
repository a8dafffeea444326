"""Reads of committed state, straight from Redis (written by the member and channel shards),
and ledger pages from the DuckDB ledger archive plus the ledger log's unarchived tail. Every read is authorised by ACCESS
(gateway.auth.ReadAccess): an API key covering the network, a member token for its own
member, or nothing for the leaderboards and stats of a public network."""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

import msgspec
import redis
import redis.asyncio as aioredis
from aiohttp import web

from actors.keys import Keys
from actors.ledger_sink import ledger_tail, ledger_tail_where
from analytics.archive import ArchiveError, LedgerArchive, is_earning
from engine import quality, timelog, weekly
from engine.channel import ChannelState, channel_decoder, events_per_s
from engine.events import channel_key, member_key
from engine.ledger import Entry, member_account
from engine.member import DAY_S, MemberState, day_of, effective_streak, state_decoder
from engine.rules import RuleBook
from gateway.analytics_cli import day_text
from gateway.auth import Principal, ReadAccess
from gateway.errors import BadRequest, NotFound, Unavailable, json_response

PERIOD_DAYS: dict[str, int] = {"day": 1, "week": 7, "month": 30}
PERIODS = ("all", *PERIOD_DAYS)
DEFAULT_LIMIT = 50
CHATTERS_WINDOW_S = 300
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


def parse_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", field=name)
    return int(raw)


def parse_id(value: str, field: str) -> str:
    if not _ID.fullmatch(value):
        raise BadRequest(f"{field} must be 1-128 characters of A-Z a-z 0-9 _ . : -", field=field)
    return value


def parse_day(query: Mapping[str, str], name: str) -> int | None:
    """The query parameter `name`, a UTC day YYYY-MM-DD, as days since the epoch (None if
    absent); else 400 naming it."""
    text = query.get(name)
    if not text:
        return None
    try:
        return (datetime.date.fromisoformat(text) - datetime.date(1970, 1, 1)).days
    except ValueError:
        raise BadRequest(f"{name} must be a day YYYY-MM-DD, got {text!r}", field=name) from None


FLAGGED_SCAN_MAX = 100_000
"""Most flagged members read to sort (the view shows the lowest scores among them)."""


class Reader:
    """Builds the JSON of the read routes from Redis and the rules."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        rules: RuleBook,
        *,
        page_max: int,
        default_network: str | None,
        clock: Callable[[], float],
        archive: LedgerArchive,
        sync_redis: redis.Redis,
        member_shards: int,
    ) -> None:
        self.redis = client
        self.archive = archive
        self.sync_redis = sync_redis
        """For the unarchived ledger tail, read in a worker thread under the archive's lock."""
        self.member_shards = member_shards
        self.keys = keys
        self.rules = rules
        self.page_max = page_max
        self.default_network = default_network
        self.clock = clock

    def network_of(self, query: Mapping[str, str]) -> str:
        network = query.get("network") or self.default_network
        if network is None:
            raise BadRequest(
                "network is required (several networks are configured)", field="network"
            )
        return parse_id(network, "network")

    def limit_of(self, query: Mapping[str, str]) -> int:
        return parse_int(query, "limit", min(DEFAULT_LIMIT, self.page_max), 1, self.page_max)

    async def member(self, network: str, user_id: str) -> dict[str, Any]:
        raw = cast(
            "bytes | None", await self.redis.hget(self.keys.mstate, member_key(network, user_id))
        )
        if raw is None:
            raise NotFound(f"no member {user_id!r} in network {network!r}", field="user_id")
        state: MemberState = state_decoder.decode(raw)
        tiers = self.rules.network(network).tiers
        tier = min(state.tier, len(tiers.names) - 1)
        has_next = tier + 1 < len(tiers.names)
        return {
            "network": network,
            "user_id": user_id,
            "name": state.name,
            "balance": state.balance,
            "lifetime_points": state.lifetime,
            "tier": tiers.names[tier],
            "tier_index": tier,
            "multiplier": tiers.multipliers_pct[tier] / 100,
            "next_tier": tiers.names[tier + 1] if has_next else None,
            "points_to_next_tier": (
                max(0, tiers.thresholds[tier + 1] - state.lifetime) if has_next else None
            ),
            "tier_threshold": tiers.thresholds[tier],
            "next_tier_threshold": tiers.thresholds[tier + 1] if has_next else None,
            "streak": effective_streak(state, day_of(self.clock())),
            "weekly_bonus": self.weekly(network, state),
            "referral": self.referral(network, state),
            "channels": await self.standings(network, user_id, state),
        }

    async def flagged(self, network: str, limit: int) -> dict[str, Any]:
        """Flagged members of `network` (the member shards keep one hash per network)."""
        key = self.keys.k("quality", network)
        flags: list[dict[str, Any]] = []
        total = int(await self.redis.hlen(key))
        async for _, raw in self.redis.hscan_iter(key, count=1_000):
            flags.append(msgspec.to_builtins(quality.flag_decoder.decode(raw)))
            if len(flags) >= FLAGGED_SCAN_MAX:
                break
        flags.sort(key=lambda f: (f["score"], -f["withheld"], f["user_id"]))
        return {"network": network, "flagged": total, "members": flags[:limit]}

    def referral(self, network: str, state: MemberState) -> dict[str, Any]:
        """Who referred the member (status: "" not referred, "linked" until its first earn,
        "paid", "existing": it had earned before), its upline, and the referral rewards it
        received (engine/referral.py)."""
        ref, rules = state.referral, self.rules.network(network).referral
        return {
            "referrer": ref.referrer or None, "upline": ref.upline or None,
            "status": ref.status or None, "rewards_received": ref.rewarded,
            "points_received": ref.points, "capped": ref.capped,
            "reward_points": rules.reward_points, "second_level_pct": rules.second_level_pct,
            "daily_cap": rules.daily_cap,
        }  # fmt: skip

    def weekly(self, network: str, state: MemberState) -> dict[str, Any]:
        """The cross-feature weekly bonus: this week so far, and the week before."""
        rules = self.rules.network(network).weekly
        week = weekly.week_of_day(day_of(self.clock()))
        return {
            "this_week": msgspec.to_builtins(weekly.breakdown(state, week, rules)),
            "last_week": msgspec.to_builtins(weekly.breakdown(state, week - 1, rules)),
            "bonus_points": rules.bonus_points,
        }

    async def standings(
        self, network: str, user_id: str, state: MemberState, most: int = 50
    ) -> dict[str, Any]:
        """The member's points and rank in each channel they earned in (most points first):
        the points its state keeps per channel, plus those a projector of before 2026-12
        kept in `mch:{nu}` (frozen since), and its rank on each channel's all-time board."""
        nu = member_key(network, user_id)
        points = dict(state.earned_in)
        legacy = await self.redis.zrange(self.keys.member_channels(nu), 0, -1, withscores=True)
        prefix = len(network) + 1
        for nc, score in cast("list[tuple[bytes, float]]", legacy):
            channel = nc.decode()[prefix:]
            points[channel] = points.get(channel, 0) + int(score)
        top = sorted(points.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:most]
        if not top:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for channel, _ in top:
                pipe.zrevrank(self.keys.lb_all(channel_key(network, channel)), user_id)
            ranks = await pipe.execute()
        return {
            channel: {"points": p, "rank": None if rank is None else rank + 1}
            for (channel, p), rank in zip(top, ranks, strict=True)
        }

    async def ledger(self, network: str, user_id: str, limit: int, cursor: int) -> dict[str, Any]:
        """Entries crediting or debiting the member, newest first; `cursor` counts entries
        from the newest. The ledger of record: the DuckDB archive plus the ledger log
        entries it does not hold yet, read together (analytics.archive.member_page)."""
        account = member_account(network, user_id)

        def tail(offsets: dict[str, str]) -> list[Entry]:
            return ledger_tail(self.sync_redis, self.keys, self.member_shards, account, offsets)

        try:
            page, more = await asyncio.to_thread(
                self.archive.member_page, account, cursor, limit, tail
            )
        except ArchiveError as err:
            raise Unavailable(f"the ledger archive cannot be read: {err}") from err
        except redis.RedisError as err:
            raise Unavailable(f"the ledger log cannot be read: {err}") from err
        return {
            "entries": [entry_json(e) for e in page],
            "next_cursor": cursor + len(page) if more else None,
        }

    async def leaderboard(
        self, network: str, channel: str, period: str, limit: int, last_day: int | None = None
    ) -> dict[str, Any]:
        """The channel's top `limit` members: all time from the leaderboard the projector
        keeps in Redis; for a period, the points earned in its days (the one ending on
        `last_day`, default today, UTC), summed from the ledger of record: the DuckDB
        archive plus the ledger log's unarchived tail. Ties: user id descending, as Redis
        orders a leaderboard."""
        nc = channel_key(network, channel)
        last = day_of(self.clock()) if last_day is None else last_day
        if period == "all":
            pairs = await self.redis.zrevrange(self.keys.lb_all(nc), 0, limit - 1, withscores=True)
            top = [(m.decode(), int(s)) for m, s in cast("list[tuple[bytes, float]]", pairs)]
        else:
            since = (last - PERIOD_DAYS[period] + 1) * DAY_S
            until = (last + 1) * DAY_S

            def tail(offsets: dict[str, str]) -> list[Entry]:
                return ledger_tail_where(
                    self.sync_redis, self.keys, self.member_shards, offsets,
                    lambda e: is_earning(e, network, channel, since, until),
                )  # fmt: skip

            try:
                earned = await asyncio.to_thread(
                    self.archive.earned, network, channel, since, until, tail
                )
            except ArchiveError as err:
                raise Unavailable(f"the ledger archive cannot be read: {err}") from err
            except redis.RedisError as err:
                raise Unavailable(f"the ledger log cannot be read: {err}") from err
            ranked = sorted(earned.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
            top = [(u, p) for u, p in ranked[:limit] if p > 0]
        names = await self._names(network, [u for u, _ in top])
        entries = [
            {"rank": i + 1, "user_id": uid, "name": name, "points": points}
            for i, ((uid, points), name) in enumerate(zip(top, names, strict=True))
        ]
        board = {"channel": channel, "network": network, "period": period, "entries": entries}
        if period != "all":
            board["from"] = day_text(last - PERIOD_DAYS[period] + 1)
            board["to"] = day_text(last)
        return board

    async def _names(self, network: str, user_ids: list[str]) -> list[str]:
        if not user_ids:
            return []
        fields = [member_key(network, uid) for uid in user_ids]
        raws = cast("list[bytes | None]", await self.redis.hmget(self.keys.mstate, fields))
        return ["" if raw is None else state_decoder.decode(raw).name for raw in raws]

    async def channel_stats(self, network: str, channel: str) -> dict[str, Any]:
        nc = channel_key(network, channel)
        now = self.clock()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.cstate, nc)
            pipe.hlen(self.keys.presence(nc))
            pipe.get(self.keys.chat_log(nc))
            pipe.zcount(self.keys.chatters(nc), now - CHATTERS_WINDOW_S, "+inf")  # legacy
            raw, present, chat_log, legacy = await pipe.execute()
        if raw is None:
            raise NotFound(f"no channel {channel!r} in network {network!r}", field="channel")
        state: ChannelState = channel_decoder.decode(raw)
        return {
            "network": network,
            "channel": channel,
            "live": state.live,
            "viewers_present": present,
            "chatters_5m": (
                legacy
                if chat_log is None
                else timelog.count_since(chat_log, now - CHATTERS_WINDOW_S)
            ),
            "events_per_s": events_per_s(state, now),
            "events_total": state.events,
        }


def entry_json(e: Entry) -> dict[str, Any]:
    return {
        "id": e.id,
        "ts": e.ts,
        "rule": e.rule,
        "amount": e.amount,
        "channel": e.channel,
        "debit": e.debit,
        "credit": e.credit,
    }


READER = web.AppKey("reader", Reader)
ACCESS = web.AppKey("read_access", ReadAccess)


def principal_of(request: web.Request) -> Principal:
    """Who signed the request (API key) or which member token it presents; 401 otherwise."""
    return request.app[ACCESS].principal(request.headers, request.method, request.raw_path)


def _member_read(request: web.Request) -> tuple[str, str]:
    """(network, user_id) of a member read the request may make (401, 400, 403)."""
    who = principal_of(request)
    user_id = parse_id(request.match_info["user_id"], "user_id")
    network = request.app[READER].network_of(request.query)
    request.app[ACCESS].member(who, network, user_id)
    return network, user_id


def _channel_read(request: web.Request) -> tuple[str, str]:
    """(network, channel) of a channel read the request may make (401, 400, 403)."""
    access = request.app[ACCESS]
    network = request.app[READER].network_of(request.query)
    if not access.is_public(network):
        access.channel(principal_of(request), network)
    return network, parse_id(request.match_info["channel"], "channel")


async def get_member(request: web.Request) -> web.Response:
    network, user_id = _member_read(request)
    return json_response(await request.app[READER].member(network, user_id))


async def get_ledger(request: web.Request) -> web.Response:
    reader = request.app[READER]
    network, user_id = _member_read(request)
    limit = reader.limit_of(request.query)
    cursor = parse_int(request.query, "cursor", 0, 0, 10**12)
    return json_response(await reader.ledger(network, user_id, limit, cursor))


async def get_leaderboard(request: web.Request) -> web.Response:
    reader = request.app[READER]
    network, channel = _channel_read(request)
    period = request.query.get("period") or "all"
    if period not in PERIODS:
        raise BadRequest(f"period must be one of {', '.join(PERIODS)}", field="period")
    limit = reader.limit_of(request.query)
    last_day = parse_day(request.query, "day")
    if last_day is not None and period == "all":
        raise BadRequest("day applies to period day, week or month", field="day")
    return json_response(await reader.leaderboard(network, channel, period, limit, last_day))


async def get_channel_stats(request: web.Request) -> web.Response:
    network, channel = _channel_read(request)
    return json_response(await request.app[READER].channel_stats(network, channel))


async def get_flagged(request: web.Request) -> web.Response:
    """GET /v1/quality/flagged?network=N&limit=: members the presence-quality score flags
    (an API key covering N), lowest score first, with the reasons."""
    reader = request.app[READER]
    network = reader.network_of(request.query)
    request.app[ACCESS].channel(principal_of(request), network)
    limit = reader.limit_of(request.query)
    return json_response(await reader.flagged(network, limit))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/quality/flagged", get_flagged)
    app.router.add_get("/v1/members/{user_id}", get_member)
    app.router.add_get("/v1/members/{user_id}/ledger", get_ledger)
    app.router.add_get("/v1/channels/{channel}/leaderboard", get_leaderboard)
    app.router.add_get("/v1/channels/{channel}/stats", get_channel_stats)
