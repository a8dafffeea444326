"""`/v1/channels/{channel}/commands`: signed by a key covering the network; PUT validates
(400 naming the field), 201 then 200; GET lists; DELETE 204 then 404; other networks' keys
and unsigned requests are refused; a write bumps the version bots reload on."""

from __future__ import annotations

import asyncio
import json

import redis

from actors.keys import Keys
from gateway.redis_server import RedisServer
from gateway.routes.commands import version_key
from gateway.signing import signed_headers
from tests.gateway.helpers import SECRET, make_settings, serve


def _h(method: str, target: str, body: bytes = b"") -> dict[str, str]:
    h = signed_headers("k1", SECRET, body, target=target, method=method)
    return {**h, "Content-Type": "application/json"} if body else h


def test_commands_admin_api(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    async def go() -> None:
        async with serve(make_settings(namespace), redis_server.url) as client:
            base = "/v1/channels/c1/commands"
            target = f"{base}/discord?network=demo"
            body = json.dumps({"response": "join {channel}", "aliases": ["dc"],
                               "cooldown_user_s": 10}).encode()  # fmt: skip
            r = await client.put(target, data=body, headers=_h("PUT", target, body))
            assert r.status == 201, await r.text()
            assert (await r.json())["aliases"] == ["dc"]
            r = await client.put(target, data=body, headers=_h("PUT", target, body))
            assert r.status == 200
            bad = json.dumps({"response": "x", "min_role": "king"}).encode()
            r = await client.put(target, data=bad, headers=_h("PUT", target, bad))
            assert r.status == 400
            assert (await r.json())["field"] == "min_role"
            empty = b"{}"
            r = await client.put(target, data=empty, headers=_h("PUT", target, empty))
            assert (r.status, (await r.json())["field"]) == (400, "response")
            r = await client.put(target, data=body)  # unsigned
            assert r.status == 401
            other = f"{base}/discord?network=other"
            r = await client.put(other, data=body, headers=_h("PUT", other, body))
            assert r.status == 403
            listing = f"{base}?network=demo"
            r = await client.get(listing, headers=_h("GET", listing))
            got = await r.json()
            assert [c["name"] for c in got["commands"]] == ["discord"]
            r = await client.delete(target, headers=_h("DELETE", target))
            assert r.status == 204
            r = await client.delete(target, headers=_h("DELETE", target))
            assert r.status == 404

    asyncio.run(go())
    assert int(redis_client.get(version_key(Keys(namespace))) or 0) == 3
