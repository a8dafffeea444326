"""Bot command administration: `/v1/channels/{channel}/commands`, signed by a network's key.

- GET    /v1/channels/{channel}/commands?network=N        the channel's stored commands
- PUT    /v1/channels/{channel}/commands/{name}?network=N a command (engine.commands.CommandSpec
         JSON; `name` from the URL): 201 created, 200 replaced; 400 names the bad field
- DELETE /v1/channels/{channel}/commands/{name}?network=N 204; 404 when there is none

Stored in the Redis hash `{ns}:botcmds:{network}:{channel}` (name -> spec JSON); a write
bumps `{ns}:botcmds:version`, which running bots poll to reload (gateway.bot).
Channel "*" holds the commands of every channel of the network.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from actors.keys import Keys
from engine.commands import MAX_COMMANDS_PER_CHANNEL, CommandConfigError, decode_spec
from gateway.auth import MemberToken, check_network
from gateway.bot import commands_key, version_key
from gateway.errors import BadRequest, Forbidden, NotFound, json_response
from gateway.reads import ACCESS, READER, parse_id
from gateway.spends import SPENDS

MAX_BODY_BYTES = 16_384


def _admin(request: web.Request, body: bytes = b"") -> tuple[str, str]:
    network = request.app[READER].network_of(request.query)
    channel = request.match_info["channel"]
    if channel != "*":
        parse_id(channel, "channel")
    who = request.app[ACCESS].principal(request.headers, request.method, request.raw_path, body)
    if isinstance(who, MemberToken):
        raise Forbidden("command administration needs an api key", field="Authorization")
    check_network(who, network)
    return network, channel


def _store(request: web.Request) -> tuple[aioredis.Redis, Keys]:
    spends = request.app[SPENDS]
    return spends.redis, spends.keys


async def get_commands(request: web.Request) -> web.Response:
    network, channel = _admin(request)
    client, keys = _store(request)
    raw = cast("dict[bytes, bytes]", await client.hgetall(commands_key(keys, network, channel)))
    specs = sorted((msgspec.json.decode(v) for v in raw.values()), key=lambda s: s["name"])
    return json_response({"network": network, "channel": channel, "commands": specs})


async def put_command(request: web.Request) -> web.Response:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise BadRequest(f"body of {length} bytes; at most {MAX_BODY_BYTES}", field="body")
    body = await request.read()
    network, channel = _admin(request, body)
    name = request.match_info["name"]
    try:
        spec = decode_spec(body, name=name)
    except CommandConfigError as err:
        raise BadRequest(str(err), field=err.field, code="invalid_command") from err
    client, keys = _store(request)
    key = commands_key(keys, network, channel)
    exists = await client.hexists(key, spec.name)
    if not exists and await client.hlen(key) >= MAX_COMMANDS_PER_CHANNEL:
        raise BadRequest(f"at most {MAX_COMMANDS_PER_CHANNEL} commands per channel", field="name")
    out: dict[str, Any] = msgspec.to_builtins(spec)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(key, spec.name, msgspec.json.encode(out))
        pipe.incr(version_key(keys))
        await pipe.execute()
    return json_response(out, status=200 if exists else 201)


async def delete_command(request: web.Request) -> web.Response:
    network, channel = _admin(request)
    client, keys = _store(request)
    name = request.match_info["name"]
    removed = await client.hdel(commands_key(keys, network, channel), name)
    if removed:
        await client.incr(version_key(keys))
    else:
        raise NotFound(f"no command {name!r} in channel {channel!r}", field="name")
    return web.Response(status=204)


def add_command_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/channels/{channel}/commands", get_commands)
    r.add_put("/v1/channels/{channel}/commands/{name}", put_command)
    r.add_delete("/v1/channels/{channel}/commands/{name}", delete_command)
