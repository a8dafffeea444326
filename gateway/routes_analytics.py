"""Analytics routes, served from the latest snapshot (analytics/snapshot.py):

    GET /v1/analytics/kpis?network=&channel=&from=&to=    every KPI of the scope
    GET /v1/analytics/channels/{channel}?network=&from=&to=  the channel's row and its KPIs

Authenticated like the channel reads, by an API key covering the network (public networks
included: analytics are never public). No snapshot yet: 404 `no_snapshot`; a snapshot that
cannot be read: 503. `from`/`to` are UTC days (YYYY-MM-DD); by default the 30 days ending
on the newest day holding data. DuckDB runs in a worker thread; a snapshot never changes,
so each report is kept (per snapshot and scope, the CACHED newest) and served again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from analytics import query, snapshot
from analytics.intervals import watch_intervals
from gateway.errors import BadRequest, NotFound, Unavailable, json_response
from gateway.reads import ACCESS, READER, parse_day, parse_id, principal_of
from gateway.settings import Settings

ROOT = web.AppKey("analytics_root", Path)
INTERVALS = web.AppKey("analytics_intervals", tuple)
CACHE = web.AppKey("analytics_cache", dict)
CACHED = 64
"""Most KPI reports a gateway process keeps (by snapshot id and scope)."""


def _network(request: web.Request) -> str:
    network = request.app[READER].network_of(request.query)
    request.app[ACCESS].channel(principal_of(request), network)
    return network


async def _report(request: web.Request, network: str, channel: str | None) -> dict[str, Any]:
    first, last = parse_day(request.query, "from"), parse_day(request.query, "to")
    root = request.app[ROOT]
    cache: dict[tuple[Any, ...], dict[str, Any]] = request.app[CACHE]
    try:
        key = (snapshot.latest(root).id, first, last, network, channel)
        found = cache.get(key)
        if found is not None:
            return found
        rep = await asyncio.to_thread(
            query.kpi_report, root, first, last, network, channel, request.app[INTERVALS]
        )
        while len(cache) >= CACHED:
            cache.pop(next(iter(cache)))
        cache[(rep["snapshot"]["id"], *key[1:])] = rep  # the snapshot it was computed from
        return rep
    except snapshot.NoSnapshot as err:
        raise NotFound(str(err), code="no_snapshot") from None
    except query.QueryRefused as err:
        raise BadRequest(str(err), field="from") from None
    except snapshot.SnapshotError as err:
        raise Unavailable(
            f"the analytics snapshot cannot be read: {err}", retry_after_s=5
        ) from None


async def get_kpis(request: web.Request) -> web.Response:
    network = _network(request)
    channel = request.query.get("channel")
    rep = await _report(request, network, parse_id(channel, "channel") if channel else None)
    return json_response(rep)


async def get_channel(request: web.Request) -> web.Response:
    network = _network(request)
    channel = parse_id(request.match_info["channel"], "channel")
    rep = await _report(request, network, channel)
    try:
        row = await asyncio.to_thread(_channel_row, request.app[ROOT], network, channel)
    except snapshot.SnapshotError as err:
        raise Unavailable(
            f"the analytics snapshot cannot be read: {err}", retry_after_s=5
        ) from None
    if row is None:
        raise NotFound(f"no channel {channel!r} in network {network!r} in the snapshot",
                       field="channel")  # fmt: skip
    return json_response({"channel": row, "kpis": rep})


def _channel_row(root: Path, network: str, channel: str) -> dict[str, Any] | None:
    with snapshot.connect(root) as con:
        cur = con.execute(
            "SELECT * FROM channels WHERE network = ? AND channel = ?", [network, channel]
        )
        names = [d[0] for d in cur.description or []]
        got = cur.fetchone()
    return None if got is None else dict(zip(names, got, strict=True))


def add_routes(app: web.Application, settings: Settings) -> None:
    app[ROOT] = settings.snapshot_dir()
    app[INTERVALS] = watch_intervals(settings.rulebook())
    app[CACHE] = {}
    app.router.add_get("/v1/analytics/kpis", get_kpis)
    app.router.add_get("/v1/analytics/channels/{channel}", get_channel)
