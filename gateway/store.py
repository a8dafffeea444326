"""The reward store over Redis and the spend path (engine/store.py holds the rules).

A redemption goes: RESERVE (one script: the item's stock, per-stream limit and global
cooldown are taken and the redemption is recorded as `reserving`), then the member's debit
through the spend path (the member's shard checks the balance and the member's own limit
and cooldown), then FINISH: `pending` when the debit applied, or `failed` with the stock,
stream count and cooldown given back. Every step is idempotent by the redemption id (a
function of the member and the Idempotency-Key) and the spend key, so a retry, or the
sweeper for a gateway that died between two steps, drives a redemption to its end with no
point or item lost or doubled. Refunds go `pending` -> `refunding` -> `refunded` the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis

from actors.keys import Keys
from actors.notices import NOTICES_MAXLEN
from actors.spend import SpendClient
from engine.channel import channel_decoder
from engine.member import state_decoder
from engine.spend import OK, Result
from engine.store import (
    UNLIMITED,
    Item,
    Redemption,
    item_decoder,
    item_encoder,
    needs_spend,
    redeem_transfer,
    redemption_decoder,
    refund_transfer,
)

log = logging.getLogger(__name__)

STREAM_COUNT_TTL_S = 7 * 86_400

RESERVE = """
local red_key, items, stock, last, all, mine, reserving, hold, notices = unpack(KEYS, 1, 9)
local item_id, rid, now, cooldown, slimit, skey, record, sttl = unpack(ARGV, 1, 8)
now, cooldown, slimit = tonumber(now), tonumber(cooldown), tonumber(slimit)
local prev = redis.call('GET', red_key)
if prev then return {'exists', prev} end
if not redis.call('HEXISTS', items, item_id) then return {'item_not_found'} end
local left = tonumber(redis.call('HGET', stock, item_id) or '-1')
if left == 0 then return {'out_of_stock'} end
local before = redis.call('HGET', last, item_id) or ''
if cooldown > 0 and before ~= '' and now < tonumber(before) + cooldown then
  return {'cooldown', tostring(tonumber(before) + cooldown)}
end
if skey ~= '' then
  local n = tonumber(redis.call('GET', skey) or '0')
  if n >= slimit then return {'stream_limit_reached'} end
  redis.call('INCR', skey)
  redis.call('EXPIRE', skey, sttl)
end
if left > 0 then redis.call('HINCRBY', stock, item_id, -1) end
redis.call('HSET', last, item_id, ARGV[3])
redis.call('HSET', hold, rid, cjson.encode({before, skey, left >= 0 and 1 or 0}))
redis.call('SET', red_key, record)
redis.call('ZADD', all, now, rid)
redis.call('ZADD', mine, now, rid)
redis.call('ZADD', reserving, now, rid)
return {'ok'}
"""
"""KEYS: the redemption, items, stock, last, all, member's, reserving, hold, notices;
ARGV: item id, redemption id, now, global cooldown, stream limit, stream counter key ('':
none), the redemption JSON, the counter's TTL."""

FINISH = """
local red_key, stock, last, all, mine, reserving, hold, notices = unpack(KEYS, 1, 8)
local item_id, rid, record, ok, ttl, now = unpack(ARGV, 1, 6)
local cur = redis.call('GET', red_key)
if not cur or cjson.decode(cur).status ~= 'reserving' then return cur end
local h = redis.call('HGET', hold, rid)
if ok == '1' then
  redis.call('SET', red_key, record)
  redis.call('XADD', notices, 'MAXLEN', '~', {maxlen}, '*', 'item_redeemed', record)
else
  redis.call('SET', red_key, record, 'EX', ttl)
  redis.call('ZREM', all, rid)
  redis.call('ZREM', mine, rid)
  if h then
    local before, skey, limited = unpack(cjson.decode(h))
    if limited == 1 then redis.call('HINCRBY', stock, item_id, 1) end
    if skey ~= '' then redis.call('DECR', skey) end
    if redis.call('HGET', last, item_id) == now then
      if before == '' then redis.call('HDEL', last, item_id)
      else redis.call('HSET', last, item_id, before) end
    end
  end
end
redis.call('ZREM', reserving, rid)
redis.call('HDEL', hold, rid)
return record
""".replace("{maxlen}", str(NOTICES_MAXLEN))
"""KEYS: the redemption, stock, last, all, member's, reserving, hold, notices; ARGV: item id,
redemption id, the final JSON, '1' if the debit applied, the TTL of a failed one, the
reservation's time as stored in `last`. Returns the record as it stands afterwards."""

TRANSITION = """
local red_key, stock, notices = KEYS[1], KEYS[2], KEYS[3]
local from, to, record, item_id, give_back, notice = unpack(ARGV, 1, 6)
local cur = redis.call('GET', red_key)
if not cur then return {'missing'} end
local status = cjson.decode(cur).status
if status ~= from then return {status, cur} end
redis.call('SET', red_key, record)
if give_back == '1' and tonumber(redis.call('HGET', stock, item_id) or '-1') >= 0 then
  redis.call('HINCRBY', stock, item_id, 1)
end
if notice ~= '' then
  redis.call('XADD', notices, 'MAXLEN', '~', {maxlen}, '*', notice, record)
end
return {'ok', record}
""".replace("{maxlen}", str(NOTICES_MAXLEN))
"""KEYS: the redemption, stock, notices; ARGV: expected status, new status (informative),
the new JSON, item id, '1' to give one back to the stock, notice field ('' none)."""


class StoreRefused(Exception):
    """A redemption, fulfilment or refund refused with a stable code; names the field."""

    def __init__(
        self, code: str, message: str, field: str, *, retry_at: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_at = retry_at


_json = msgspec.json.Encoder()


class StoreKeys:
    """The store's keys under the deployment namespace (see actors/keys.py for the rest)."""

    def __init__(self, keys: Keys, network: str) -> None:
        k, n = keys.k, network
        self.items = k("store", n, "items")
        self.stock = k("store", n, "stock")
        self.last = k("store", n, "last")
        self.all = k("store", n, "reds")
        self.reserving = k("store", n, "reserving")
        self.hold = k("store", n, "hold")
        self.notices = keys.notices
        self._k, self._n = k, n

    def redemption(self, rid: str) -> str:
        return self._k("store", self._n, "red", rid)

    def member(self, user_id: str) -> str:
        return self._k("store", self._n, "mreds", len(user_id), user_id)

    def stream_count(self, item_id: str, live_since: float) -> str:
        return self._k("store", self._n, "per_stream", item_id, repr(live_since))


class Store:
    """Catalog, redemptions and refunds of every network, for one gateway process."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        spends: SpendClient,
        *,
        failed_ttl_s: int,
        sweep_interval_s: float = 0.0,
        stale_after_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.spends = spends
        self.failed_ttl_s = failed_ttl_s
        self.sweep_interval_s = sweep_interval_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._reserve = client.register_script(RESERVE)
        self._finish = client.register_script(FINISH)
        self._transition = client.register_script(TRANSITION)

    @property
    def networks_key(self) -> str:
        """Set of the networks that have a catalog (the sweeper's list)."""
        return self.keys.k("store", "networks")

    def keys_of(self, network: str) -> StoreKeys:
        return StoreKeys(self.keys, network)

    # -- catalog ----------------------------------------------------------------------------
    async def item(self, network: str, item_id: str) -> tuple[Item, int] | None:
        sk = StoreKeys(self.keys, network)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(sk.items, item_id)
            pipe.hget(sk.stock, item_id)
            raw, stock = await pipe.execute()
        if raw is None:
            return None
        return item_decoder.decode(raw), int(stock if stock is not None else UNLIMITED)

    async def put_item(self, item: Item, stock: int | None) -> None:
        sk = StoreKeys(self.keys, item.network)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self.networks_key, item.network)
            pipe.hset(sk.items, item.id, item_encoder.encode(item))
            if stock is not None:
                pipe.hset(sk.stock, item.id, stock)
            await pipe.execute()

    async def items(self, network: str) -> list[tuple[Item, int]]:
        sk = StoreKeys(self.keys, network)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(sk.items)
            pipe.hgetall(sk.stock)
            raw, stock = await pipe.execute()
        out = []
        for item_id, blob in raw.items():
            left = stock.get(item_id)
            out.append((item_decoder.decode(blob), int(left if left is not None else UNLIMITED)))
        return sorted(out, key=lambda x: (x[0].channel, x[0].cost, x[0].id))

    # -- member facts -----------------------------------------------------------------------
    async def member_tier(self, network: str, user_id: str) -> int:
        return (await self.member_standing(network, user_id))[0]

    async def member_standing(self, network: str, user_id: str) -> tuple[int, int]:
        """The member's tier (an index) and lifetime points."""
        raw = await self.redis.hget(self.keys.mstate, f"{network}:{user_id}")
        if raw is None:
            return 0, 0
        state = state_decoder.decode(raw)
        return int(state.tier), int(state.lifetime)

    async def live_since(self, network: str, channel: str) -> float | None:
        """When the channel's current stream started; None when it is not live."""
        raw = await self.redis.hget(self.keys.cstate, f"{network}:{channel}")
        if raw is None:
            return None
        state = channel_decoder.decode(raw)
        return state.live_since if state.live else None

    # -- redemptions ------------------------------------------------------------------------
    async def redemption(self, network: str, rid: str) -> Redemption | None:
        raw = await self.redis.get(StoreKeys(self.keys, network).redemption(rid))
        return None if raw is None else redemption_decoder.decode(raw)

    async def redeem(
        self, item: Item, user_id: str, rid: str, *, voucher: str = ""
    ) -> tuple[Redemption, bool, Result | None]:
        """Reserve and debit: the redemption, True if this call created it, and the debit's
        result (if this call submitted it). Raises StoreRefused (out of stock, cooldown,
        stream limit); the debit's refusal ends the redemption `failed`. With `voucher` (a
        code id) the item is free: cost 0, and only the member's guards go to the shard."""
        sk = StoreKeys(self.keys, item.network)
        now = self.clock()
        skey = ""
        if item.per_stream_limit:
            since = await self.live_since(item.network, item.channel)
            if since is None:
                raise StoreRefused(
                    "not_live",
                    f"item {item.id!r} is limited per stream: channel {item.channel!r} is not live",
                    "item_id",
                )
            skey = sk.stream_count(item.id, since)
        red = Redemption(
            rid, item.network, user_id, item.id, item.name, 0 if voucher else item.cost,
            item.channel, "reserving", now, now, f"store/{rid}", voucher=voucher,
        )  # fmt: skip
        got = cast(
            "list[bytes]",
            await self._reserve(
                keys=[sk.redemption(rid), sk.items, sk.stock, sk.last, sk.all,
                      sk.member(user_id), sk.reserving, sk.hold, sk.notices],
                args=[item.id, rid, repr(now), item.cooldown_s, item.per_stream_limit, skey,
                      _json.encode(red), STREAM_COUNT_TTL_S],
            ),
        )  # fmt: skip
        code = got[0].decode()
        if code == "exists":
            return redemption_decoder.decode(got[1]), False, None
        if code == "out_of_stock":
            raise StoreRefused("out_of_stock", f"item {item.id!r} is out of stock", "item_id")
        if code == "cooldown":
            at = float(got[1])
            raise StoreRefused(
                "item_cooldown",
                f"item {item.id!r} was just redeemed; again from {at:.3f}",
                "item_id",
                retry_at=at,
            )
        if code == "stream_limit_reached":
            raise StoreRefused(
                "stream_limit_reached",
                f"item {item.id!r} reached its limit of {item.per_stream_limit} for this stream",
                "item_id",
            )
        if code == "item_not_found":
            raise StoreRefused("item_not_found", f"no item {item.id!r}", "item_id")
        done, result = await self.drive(item, red)
        return done, True, result

    async def drive(self, item: Item, red: Redemption) -> tuple[Redemption, Result | None]:
        """Take a `reserving` redemption to `pending` or `failed` (idempotent)."""
        if red.status != "reserving":
            return red, None
        t = redeem_transfer(item, red)
        result = await self.spends.submit(t) if needs_spend(t) else Result(t.key, OK)
        return await self._finish_with(red, result), result

    async def abandon(self, red: Redemption, reason: str) -> Redemption:
        """Mark redemption `red.id` `failed` for `reason` unless it exists: a voucher whose
        scan was refused is released only once no late retry can still create this
        redemption. Returns the redemption as it stands (`failed`, or whatever existed)."""
        key = StoreKeys(self.keys, red.network).redemption(red.id)
        gone = msgspec.structs.replace(red, status="failed", reason=reason)
        if await self.redis.set(key, _json.encode(gone), nx=True, ex=self.failed_ttl_s):
            return gone
        raw = await self.redis.get(key)
        return gone if raw is None else redemption_decoder.decode(raw)

    async def _finish_with(self, red: Redemption, result: Result) -> Redemption:
        sk = StoreKeys(self.keys, red.network)
        ok = result.code == OK
        done = msgspec.structs.replace(
            red,
            status="pending" if ok else "failed",
            updated_at=self.clock(),
            entry_id=result.entry_id,
            reason="" if ok else result.code,
        )
        raw = await self._finish(
            keys=[sk.redemption(red.id), sk.stock, sk.last, sk.all, sk.member(red.user_id),
                  sk.reserving, sk.hold, sk.notices],
            args=[red.item_id, red.id, _json.encode(done), "1" if ok else "0",
                  self.failed_ttl_s, repr(red.created_at)],
        )  # fmt: skip
        return done if raw is None else redemption_decoder.decode(cast("bytes", raw))

    async def sweep(self, older_than_s: float) -> int:
        """Drive every redemption left `reserving` for longer than `older_than_s` (its
        gateway died, or its debit timed out) to its end. Returns how many were driven."""
        driven = 0
        for raw in sorted(await self.redis.smembers(self.networks_key)):
            driven += await self._sweep_network(raw.decode(), older_than_s)
        return driven

    async def _sweep_network(self, network: str, older_than_s: float) -> int:
        sk = StoreKeys(self.keys, network)
        rids = await self.redis.zrangebyscore(
            sk.reserving, "-inf", self.clock() - older_than_s, start=0, num=100
        )
        n = 0
        for raw in rids:
            red = await self.redemption(network, raw.decode())
            if red is None or red.status != "reserving":
                await self.redis.zrem(sk.reserving, raw)
                continue
            found = await self.item(network, red.item_id)
            if found is None:
                continue
            await self.drive(found[0], red)
            n += 1
        return n

    async def set_status(
        self, red: Redemption, to: str, *, give_back: bool = False, notice: str = "", **kw: Any
    ) -> tuple[str, Redemption]:
        """Move `red` from its status to `to` if nobody moved it first: ("ok", new) or
        (the status it had, as stored)."""
        sk = StoreKeys(self.keys, red.network)
        new = msgspec.structs.replace(red, status=to, updated_at=self.clock(), **kw)
        got = cast(
            "list[bytes]",
            await self._transition(
                keys=[sk.redemption(red.id), sk.stock, sk.notices],
                args=[red.status, to, _json.encode(new), red.item_id,
                      "1" if give_back else "0", notice],
            ),
        )  # fmt: skip
        code = got[0].decode()
        if code == "missing":
            raise StoreRefused("redemption_not_found", f"no redemption {red.id!r}", "id")
        return code, redemption_decoder.decode(got[1])

    async def refund(self, red: Redemption, note: str) -> Redemption:
        """pending -> refunding -> refunded: the points back through the spend path and the
        item back to its stock. Idempotent: a refund stuck in `refunding` is driven on."""
        if red.status == "pending":
            code, red = await self.set_status(red, "refunding", reason=note)
            if code != "ok" and red.status != "refunding":
                return red
        if red.status != "refunding":
            return red
        found = await self.item(red.network, red.item_id)
        t = refund_transfer(None if found is None else found[0], red, self.clock())
        result = await self.spends.submit(t) if needs_spend(t) else Result(t.key, OK)
        if result.code != OK:  # a credit is refused only on a key conflict: a broken invariant
            raise RuntimeError(f"refund of {red.id} refused: {result.code}")
        code, red = await self.set_status(
            red, "refunded", give_back=True, notice="item_refunded", refund_entry_id=result.entry_id
        )
        return red

    async def page(
        self, key: str, network: str, cursor: int, limit: int, status: str | None
    ) -> tuple[list[Redemption], int | None]:
        """Redemptions indexed under `key`, newest first, `limit` from `cursor` (filtered by
        status: a page may come back shorter; `next_cursor` goes on)."""
        sk = StoreKeys(self.keys, network)
        rids = await self.redis.zrevrange(key, cursor, cursor + limit - 1)
        if not rids:
            return [], None
        raws = await self.redis.mget([sk.redemption(r.decode()) for r in rids])
        out = [redemption_decoder.decode(raw) for raw in raws if raw is not None]
        if status is not None:
            out = [r for r in out if r.status == status]
        more = len(rids) == limit
        return out, cursor + limit if more else None
