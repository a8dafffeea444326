"""Portal and dashboard sessions through the real gateway and Redis: login JWTs (HS256 only,
aud/iss/exp/lifetime checked), the HttpOnly SameSite=Strict cookie, CSRF and origin checks,
and scopes kept apart (a member session calls no admin route; it reads only itself)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from gateway.redis_server import RedisServer
from gateway.sessions import COOKIE, Sessions

from .helpers import ADMIN_SECRET, SECRET, make_settings, serve

TOKEN_SECRET = "sessions-token-secret-0123456789"


def settings(namespace: str) -> Any:
    return make_settings(namespace, auth={"token_secret": TOKEN_SECRET})


def login_jwt(claims: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    now = int(time.time())
    base = {"iss": "k1", "aud": "rallypoint-portal", "sub": "alice", "net": "demo",
            "iat": now, "exp": now + 60}  # fmt: skip
    return jwt.encode({**base, **claims}, secret, algorithm=alg)


def unsigned(claims: dict[str, Any]) -> str:
    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    payload = {"iss": "k1", "aud": "rallypoint-portal", "sub": "alice", "net": "demo",
               "iat": now, "exp": now + 60, **claims}  # fmt: skip
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


async def sign_in(client: TestClient, token: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/session/member", json={"token": token})
    return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("token_of", "field"),
    [
        (lambda: login_jwt({}, secret="wrong-secret-0123456789abcdef"), "token"),
        (lambda: login_jwt({"aud": "someone-else"}), "token"),
        (lambda: login_jwt({"iss": "nobody"}), "token"),
        (lambda: login_jwt({"exp": int(time.time()) - 120}), "token"),
        (lambda: login_jwt({"exp": int(time.time()) + 3_600}), "token"),  # lives too long
        (lambda: login_jwt({"net": "nowhere"}), "token"),
        (lambda: login_jwt({}, alg="HS512"), "token"),
        (lambda: unsigned({}), "token"),
        (lambda: "not-a-jwt", "token"),
    ],
)
def test_bad_login_tokens_are_refused(
    redis_server: RedisServer, namespace: str, token_of: Any, field: str
) -> None:
    async def body() -> None:
        async with serve(settings(namespace), redis_server.url) as client:
            status, err = await sign_in(client, token_of())
            assert (status, err["field"]) == (401, field), err
            assert COOKIE not in client.session.cookie_jar.filter_cookies(client.make_url("/"))

    asyncio.run(body())


def test_member_and_admin_sessions_are_kept_apart(
    redis_server: RedisServer, namespace: str
) -> None:
    async def body() -> None:
        async with serve(settings(namespace), redis_server.url) as client:
            status, s = await sign_in(client, login_jwt({}))
            assert (status, s["scope"], s["user_id"], s["network"]) == (
                201,
                "member",
                "alice",
                "demo",
            )
            resp = await client.get("/v1/session")
            assert resp.status == 200
            cookie = resp.request_info.headers.get("Cookie", "")
            assert COOKIE in cookie
            csrf = s["csrf"]
            # the member reads itself (404: alice has earned nothing yet), not bob
            assert (await client.get("/v1/members/alice?network=demo")).status == 404
            assert (await client.get("/v1/members/bob?network=demo")).status == 403
            # no admin route: overview, store catalog writes, raffles, vouchers, ingest
            assert (await client.get("/v1/admin/overview?network=demo")).status == 403
            h = {"X-CSRF-Token": csrf}
            put = await client.put("/v1/store/items/mug?network=demo", headers=h,
                                   json={"name": "Mug", "cost": 5})  # fmt: skip
            assert put.status in (401, 403)
            assert (await client.get("/v1/raffles?network=demo")).status == 401
            assert (await client.get("/v1/vouchers/batches?network=demo")).status == 401
            ingest = await client.post("/v1/events", headers=h, json={"events": []})
            assert ingest.status == 401
            # ... nor the payouts or the chat commands admin
            assert (await client.get("/v1/payouts?network=demo")).status == 401
            retry = await client.post("/v1/payouts/po_1/retry?network=demo", headers=h, json={})
            assert retry.status == 401
            assert (await client.get("/v1/channels/*/commands?network=demo")).status == 403
            cmd = await client.put("/v1/channels/*/commands/hi?network=demo", headers=h,
                                   json={"response": "hi"})  # fmt: skip
            assert cmd.status == 403
            # a state-changing request without the CSRF token, or from another origin: 403
            nocsrf = await client.post("/v1/members/alice/redemptions?network=demo",
                                       json={"item_id": "mug"})  # fmt: skip
            assert (nocsrf.status, (await nocsrf.json())["error"]) == (403, "csrf")
            cross = await client.post("/v1/members/alice/redemptions?network=demo",
                                      headers={**h, "Origin": "https://evil.example"},
                                      json={"item_id": "mug"})  # fmt: skip
            assert (cross.status, (await cross.json())["error"]) == (403, "csrf")
            cross_login = await client.post("/v1/session/member", headers={"Origin": "null"},
                                            json={"token": login_jwt({})})  # fmt: skip
            assert (cross_login.status, (await cross_login.json())["error"]) == (403, "csrf")
            # a forged internal session header is stripped, not believed
            forged = await client.get("/v1/raffles?network=demo",
                                      headers={"X-Rally-Session": "admin anything"})  # fmt: skip
            assert forged.status == 401
            await client.post("/v1/session/logout", headers=h)
            assert (await client.get("/v1/session")).status == 401

            # admin: wrong secret 401; the right one gives the admin routes, not ingest
            bad = await client.post("/v1/session/admin",
                                    json={"key": "admin", "secret": "x" * 20, "network": "demo"})  # fmt: skip
            assert (bad.status, (await bad.json())["field"]) == (401, "secret")
            ok = await client.post("/v1/session/admin",
                                   json={"key": "admin", "secret": ADMIN_SECRET, "network": "demo"})  # fmt: skip
            admin = await ok.json()
            assert (ok.status, admin["scope"], admin["key"]) == (201, "admin", "admin")
            h = {"X-CSRF-Token": admin["csrf"]}
            overview = await client.get("/v1/admin/overview?network=demo")
            assert overview.status == 200
            o = await overview.json()
            assert set(o["tiers"]) == {"Bronze", "Silver", "Gold", "Diamond"}
            assert o["panels"] == {"payouts": True, "analytics": True}  # both installed here
            put = await client.put("/v1/store/items/mug?network=demo", headers=h,
                                   json={"name": "Mug", "cost": 5})  # fmt: skip
            assert put.status == 201, await put.text()
            assert (await client.get("/v1/vouchers/batches?network=demo")).status == 200
            nocsrf = await client.put("/v1/store/items/mug?network=demo", json={"cost": 6})
            assert nocsrf.status == 403
            sheet = await client.post("/v1/admin/voucher-sheet?network=demo", headers=h,
                                      json={"batch": "b1", "codes": ["CODE-1", "CODE-2"]})  # fmt: skip
            assert sheet.status == 200
            assert (await sheet.text()).count("<svg") == 2

    asyncio.run(body())


def test_signing_in_with_a_session_cookie_replaces_it(
    redis_server: RedisServer, namespace: str
) -> None:
    """A browser holding a session opens a new sign-in link, or the dashboard: the sign-in
    needs no CSRF token of the session it replaces (the page has none yet), only same origin."""

    async def body() -> None:
        async with serve(settings(namespace), redis_server.url) as client:
            assert (await sign_in(client, login_jwt({})))[0] == 201
            status, s = await sign_in(client, login_jwt({"sub": "bob"}))
            assert (status, s["user_id"]) == (201, "bob"), s
            assert (await (await client.get("/v1/session")).json())["user_id"] == "bob"
            ok = await client.post("/v1/session/admin",
                                   json={"key": "admin", "secret": ADMIN_SECRET, "network": "demo"})  # fmt: skip
            assert ok.status == 201, await ok.text()
            assert (await (await client.get("/v1/session")).json())["scope"] == "admin"
            cross = await client.post("/v1/session/member", headers={"Origin": "https://evil.example"},
                                      json={"token": login_jwt({"sub": "carol"})})  # fmt: skip
            assert (cross.status, (await cross.json())["error"]) == (403, "csrf")
            assert (await (await client.get("/v1/session")).json())["scope"] == "admin"

    asyncio.run(body())


def test_cookie_attributes_and_page_headers(redis_server: RedisServer, namespace: str) -> None:
    async def body() -> None:
        async with serve(settings(namespace), redis_server.url) as client:
            resp = await client.post("/v1/session/member", json={"token": login_jwt({})})
            raw = resp.headers["Set-Cookie"]
            assert "HttpOnly" in raw
            assert "SameSite=Strict" in raw
            assert "Path=/" in raw
            page = await client.get("/portal/")
            assert page.status == 200
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
            assert (await client.get("/dashboard/")).status == 200
            assert (await client.get("/static/common.js")).status == 200

    asyncio.run(body())


def test_login_jwt_round_trip_and_cli_link(namespace: str) -> None:
    s = settings(namespace)
    sessions = Sessions.from_settings(s)
    token = sessions.login_jwt(s.api_keys[0], "demo", "alice", 300)
    login = sessions.check_jwt(token)
    assert (login.network, login.user_id, login.issuer) == ("demo", "alice", "k1")
    assert len(login.jti) >= 16
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_portal_link_cli(tmp_path: Any) -> None:
    """rally portal-link prints a link whose JWT signs in; bad input: a message and exit 2."""
    import subprocess
    import sys

    config = tmp_path / "rally.toml"
    config.write_text(
        '[auth]\ntoken_secret = "cli-token-secret-0123456789"\n[networks.demo]\n'
        '[[api_keys]]\nkey = "k1"\nsecrets = ["' + SECRET + '"]\nnetworks = ["demo"]\n'
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "portal-link", "--config",
                               str(config), *args], capture_output=True, text=True, timeout=60)  # fmt: skip

    done = cli("--member", "alice", "--base-url", "https://rally.example")
    assert done.returncode == 0, done.stderr
    prefix = "https://rally.example/portal/#login="
    assert done.stdout.startswith(prefix)
    s = settings("x")
    login = Sessions.from_settings(s).check_jwt(done.stdout.strip()[len(prefix) :])
    assert (login.network, login.user_id) == ("demo", "alice")
    bad = cli("--member", "al ice")
    assert (bad.returncode, "member" in bad.stderr) == (2, True)
    assert "Traceback" not in bad.stderr
    assert cli("--member", "alice", "--network", "nowhere").returncode == 2
    assert cli("--member", "alice", "--key", "nobody").returncode == 2
