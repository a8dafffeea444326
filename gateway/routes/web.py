"""The web pages (member portal, admin dashboard), their sign-in, and the dashboard's overview.

Pages are plain HTML/JS/CSS from gateway/static (no CDN, nothing fetched at run time), served
with a strict Content-Security-Policy. They call the JSON API with the session cookie
(gateway.sessions). Routes:
  GET  /portal/, /dashboard/, /static/*       the pages
  POST /v1/session/member  {"token": JWT}     a member session from a network's login JWT
  POST /v1/session/wallet/nonce, /v1/session/wallet      a member session from a linked wallet
                                              (Sign-In with Ethereum: gateway/routes/wallets.py)
  POST /v1/session/admin   {"key", "secret", "network"}  an admin session of an API key
  GET  /v1/session                            who the session is, and its CSRF token
  POST /v1/session/logout                     ends the session (clears the cookie)
  GET  /v1/admin/overview?network=            events/s, backlog and shard health, tier mix,
                                              channels, and which optional panels exist
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import segno
from aiohttp import web
from redis.exceptions import RedisError

from actors.health import aread_health, expected_shards
from engine.member import state_decoder
from gateway.errors import BadRequest, Forbidden, Unauthorized, Unavailable, json_response
from gateway.metrics import METRICS
from gateway.reads import ACCESS, READER
from gateway.sessions import (
    COOKIE,
    JWT_LEEWAY_S,
    SESSIONS,
    Session,
    Sessions,
    same_origin,
    session_of,
)
from gateway.settings import ApiKey

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MAX_LOGIN_BYTES = 8_192
TIER_SAMPLE_MAX = 20_000
"""Members looked at for the dashboard's tier mix (a sample beyond that)."""
OPTIONAL_PANELS = {"payouts": "/v1/payouts", "analytics": "/v1/analytics"}
"""Dashboard panels shown only when another area's routes are installed (prefix match)."""
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_login = msgspec.json.Decoder(dict[str, Any])


def _page(name: str) -> web.Response:
    body = (STATIC_DIR / name).read_bytes()
    return web.Response(body=body, content_type="text/html", headers=PAGE_HEADERS)


async def portal_page(request: web.Request) -> web.Response:
    return _page("portal.html")


async def dashboard_page(request: web.Request) -> web.Response:
    return _page("dashboard.html")


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/portal/")


async def sign_in_body(request: web.Request) -> dict[str, Any]:
    if not same_origin(request):
        raise Forbidden("sign-in from another origin", field="Origin", code="csrf")
    body = await request.content.read(MAX_LOGIN_BYTES + 1)
    if len(body) > MAX_LOGIN_BYTES:
        raise BadRequest(f"sign-in body over {MAX_LOGIN_BYTES} bytes", field="body")
    try:
        return _login.decode(body)
    except msgspec.DecodeError:
        raise BadRequest("sign-in body must be a JSON object", field="body") from None


def text_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > 4_096:
        raise BadRequest(f"{name} must be a non-empty string", field=name)
    return value


def _session_json(session: Session) -> dict[str, Any]:
    who = "user_id" if session.scope == "member" else "key"
    return {"scope": session.scope, "network": session.network, who: session.subject,
            "expires_at": session.exp, "csrf": session.csrf}  # fmt: skip


def signed_in(sessions: Sessions, scope: Any, network: str, subject: str) -> web.Response:
    value, session = sessions.issue(scope, network, subject)
    response = json_response(_session_json(session), status=201)
    sessions.set_cookie(response, value)
    return response


async def post_member_session(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    body = await sign_in_body(request)
    login = sessions.check_jwt(text_field(body, "token"))
    if request.app[ACCESS].tokens is None:
        raise Forbidden("the member portal needs [auth] token_secret", field="token")
    if login.jti:  # single use: a copied link (history, a shoulder) signs in no one else
        reader = request.app[READER]
        used = reader.keys.k("portaljti", login.issuer, login.jti)
        ttl_s = max(1, login.exp - int(time.time()) + JWT_LEEWAY_S + 1)
        try:
            fresh = await reader.redis.set(used, b"1", nx=True, ex=ttl_s)
        except (RedisError, OSError) as err:
            raise Unavailable("sign-in store (redis) unavailable") from err
        if not fresh:
            raise Unauthorized("this sign-in link was used already", field="token")
    return signed_in(sessions, "member", login.network, login.user_id)


async def post_admin_session(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    body = await sign_in_body(request)
    network = body.get("network") or request.app[READER].default_network
    if not isinstance(network, str) or not network:
        raise BadRequest("network is required", field="network")
    key = sessions.check_admin(text_field(body, "key"), text_field(body, "secret"), network)
    return signed_in(sessions, "admin", network, key.key)


async def get_session(request: web.Request) -> web.Response:
    session = session_of(request)
    if session is None:
        raise Unauthorized("no session: sign in", field=COOKIE)
    return json_response(_session_json(session))


async def post_logout(request: web.Request) -> web.Response:
    response = json_response({"signed_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


# -- the dashboard's overview -----------------------------------------------------------------
def _admin_network(request: web.Request) -> str:
    """The network an admin reads (API key or admin session); a member gets 403."""
    access = request.app[ACCESS]
    who = access.principal(request.headers, request.method, request.raw_path)
    if not isinstance(who, ApiKey):
        raise Forbidden("admin routes need an api key or an admin session", field="scope")
    network = request.app[READER].network_of(request.query)
    access.channel(who, network)
    return network


async def _tier_mix(request: web.Request, network: str) -> dict[str, int]:
    reader = request.app[READER]
    names = reader.rules.network(network).tiers.names
    mix = dict.fromkeys(names, 0)
    seen = 0
    async for _field, raw in reader.redis.hscan_iter(
        reader.keys.mstate, match=f"{network}:*", count=1_000
    ):
        tier = state_decoder.decode(raw).tier
        mix[names[min(tier, len(names) - 1)]] += 1
        seen += 1
        if seen >= TIER_SAMPLE_MAX:
            break
    return mix


async def _channels(request: web.Request, network: str) -> list[str]:
    reader = request.app[READER]
    prefix = f"{network}:"
    found: set[str] = set(reader.rules.network(network).channels)
    shards = request.app[METRICS].channel_shards
    async with reader.redis.pipeline(transaction=False) as pipe:
        for p in range(shards):
            pipe.smembers(reader.keys.chanidx(p))
        for members in await pipe.execute():
            found.update(
                m.decode()[len(prefix) :] for m in members if m.startswith(prefix.encode())
            )
    return sorted(found)


def _panels(app: web.Application) -> dict[str, bool]:
    paths = [r.canonical for r in app.router.resources()]
    return {
        name: any(p.startswith(prefix) for p in paths) for name, prefix in OPTIONAL_PANELS.items()
    }


async def get_overview(request: web.Request) -> web.Response:
    network = _admin_network(request)
    ctx = request.app[METRICS]
    reader = request.app[READER]
    try:
        async with asyncio.timeout(5.0):
            health = await aread_health(
                ctx.client, ctx.keys, expected_shards(ctx.channel_shards, ctx.member_shards)
            )
            stats = {
                k.decode(): int(v)
                for k, v in (await reader.redis.hgetall(reader.keys.stats)).items()
            }
            tiers = await _tier_mix(request, network)
            channels = await _channels(request, network)
    except (RedisError, OSError, TimeoutError) as err:
        raise Unavailable("redis unavailable") from err
    body = {
        "network": network,
        "ts": time.time(),
        "stats": stats,
        "ready": health.ready,
        "problems": health.problems,
        "shards": [
            {"shard": s.shard, "state": s.state, "lag": s.lag, "behind_s": s.behind_s}
            for s in health.shards
        ],
        "backlog": sum(s.lag for s in health.shards),
        "dead_letters": health.dead_letters,
        "tiers": tiers,
        "channels": channels,
        "panels": _panels(request.app),
    }
    return json_response(body)


MAX_SHEET_CODES = 1_000


async def post_voucher_sheet(request: web.Request) -> web.Response:
    """A printable HTML sheet of QR codes for codes an admin just minted (the gateway keeps
    no codes: the dashboard posts back those POST /v1/vouchers/batches answered)."""
    _admin_network(request)
    body = await sign_in_body(request)
    codes = body.get("codes")
    if not isinstance(codes, list) or not 0 < len(codes) <= MAX_SHEET_CODES:
        raise BadRequest(f"codes must be a list of 1-{MAX_SHEET_CODES} codes", field="codes")
    if not all(isinstance(c, str) and 0 < len(c) <= 512 for c in codes):
        raise BadRequest("every code must be a string of 1-512 characters", field="codes")
    batch = re.sub(r"[^A-Za-z0-9_\-]", "", str(body.get("batch", "")))[:32]

    def render() -> str:
        cells = "".join(
            f"<figure>{segno.make(c, error='m').svg_inline(scale=3)}"
            f"<figcaption>{html.escape(c[:24])}…</figcaption></figure>"
            for c in codes
        )
        return (
            f"<!doctype html><meta charset=utf-8><title>Vouchers {batch}</title><style>"
            "body{font:12px sans-serif}figure{display:inline-block;margin:8px;text-align:center}"
            f"</style><h1>Voucher batch {batch}</h1>{cells}"
        )

    sheet = await asyncio.to_thread(render)
    return web.Response(
        text=sheet, content_type="text/html",
        headers={"Content-Disposition": f'attachment; filename="vouchers-{batch or "batch"}.html"'},
    )  # fmt: skip


def install(app: web.Application, sessions: Sessions) -> None:
    app[SESSIONS] = sessions
    r = app.router
    r.add_get("/", root)
    r.add_get("/portal/", portal_page)
    r.add_get("/dashboard/", dashboard_page)
    r.add_static("/static/", STATIC_DIR, append_version=False)
    r.add_post("/v1/session/member", post_member_session)
    r.add_post("/v1/session/admin", post_admin_session)
    r.add_get("/v1/session", get_session)
    r.add_post("/v1/session/logout", post_logout)
    r.add_get("/v1/admin/overview", get_overview)
    r.add_post("/v1/admin/voucher-sheet", post_voucher_sheet)
