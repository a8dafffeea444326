"""Voucher batches, claims and attempts in Redis (engine/voucher.py holds the rules).

A code is redeemed exactly once, whichever gateway process its scans reach, because one
Lua script (CLAIM) decides, atomically in Redis, who holds it: the first scan records a
*pending* claim for its member, and every later scan is refused (`voucher_used`; or, from
the same member while the claim is fresh, `voucher_pending`). The claimant then credits the
points through the spend path under the idempotency key `voucher:{batch}/{serial}`, and
FINISH marks the claim *done*, counts the redemption and appends the `voucher_scanned`
notice, atomically and once. A claimant that dies between claim and finish leaves a pending
claim: the same member's next scan, `resume_after_s` later, takes it over and submits the
same transfer again (the spend path applies a key once), so the member is credited exactly
once whatever crashed.

Pending claims are indexed in `vpending` (by claim time): every gateway process sweeps
those older than `resume_after_s` and finishes them the same way, so a member is credited
even without scanning again.

Every scan is appended to `vattempts:{net}` (capped) with its outcome: by CLAIM and FINISH
themselves for the outcomes they decide, by `record` for the others.

A code worth a store item is claimed the same way; its claimant creates a free store
redemption (id a function of the member, the code and the claim number `n`) and FINISH
follows when it is `pending`. When the store refuses (out of stock, a limit, the tier, the
window), RELEASE frees the claim (state *released*, attempt recorded with the store's code):
the code may be scanned again later, and its next claim has the next number.

No Ray here: gateway processes import this module.
"""

from __future__ import annotations

import json
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis

from actors.keys import Keys
from actors.notices import NOTICES_MAXLEN
from engine.voucher import (
    PENDING,
    USED,
    Attempt,
    Batch,
    VoucherScanned,
    attempt_decoder,
    batch_decoder,
    batch_encoder,
)

CLAIMS_KEPT_AFTER_EXPIRY_S = 30 * 86_400
"""Claims outlive their batch's expiry by this much: a gateway whose clock runs late still
finds a code used rather than free (and expiry refuses it anyway after that)."""
CLAIMED = "claimed"
RESUME = "resume"
REFUSED_NOTICE_EVERY_S = 10
"""A refused scan appends a `voucher_refused` notice (the live feed flags it) at most once per
member in this many seconds: a member scanning junk in a loop cannot flood the notices
stream (every refusal is still kept as an attempt, GET /v1/vouchers/attempts)."""

REFUSED = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'voucher_refused', ARGV[2])
  return 1
end
return 0
"""
"""KEYS: the member's throttle key, notices. ARGV: seconds, notice JSON, notices cap."""

CLAIM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local now = tonumber(ARGV[3])
local claim, outcome
local prev = raw and cjson.decode(raw)
if not prev or prev.s == 'released' then
  claim = {u = ARGV[2], t = now, s = 'pending', e = '', n = (prev and prev.n or 0) + 1}
  outcome = 'claimed'
else
  claim = prev
  if claim.s == 'done' or claim.u ~= ARGV[2] then
    outcome = 'voucher_used'
  elseif now - tonumber(claim.t) >= tonumber(ARGV[4]) then
    claim.t = now
    outcome = 'resume'
  else
    outcome = 'voucher_pending'
  end
end
if outcome == 'claimed' or outcome == 'resume' then
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(claim))
  redis.call('EXPIREAT', KEYS[1], ARGV[5])
  redis.call('ZADD', KEYS[3], now, ARGV[8])
elseif ARGV[9] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'o', outcome, 'a', ARGV[7])
end
return {outcome, claim.u, claim.s, claim.e or '', tostring(claim.n or 1)}
"""
"""KEYS: vclaim:{net}:{batch}, vattempts:{net}, vpending. ARGV: serial, user_id, now,
resume_after_s, claims expire at, attempts kept, attempt blob, pending member, "1" to record
a refusal. -> {outcome, holder, state, entry id, claim number}. A *released* claim (an item
voucher the store refused) is free again: the next scan claims it with the next number."""

RELEASE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local claim = cjson.decode(raw)
if claim.s ~= 'pending' or claim.u ~= ARGV[2] or tostring(claim.n or 1) ~= ARGV[3] then
  return 0
end
claim.s = 'released'
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(claim))
redis.call('ZREM', KEYS[3], ARGV[6])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'o', ARGV[7], 'a', ARGV[5])
return 1
"""
"""KEYS: vclaim:{net}:{batch}, vattempts:{net}, vpending. ARGV: serial, user_id, claim number,
attempts kept, attempt blob, pending member, outcome. -> 1 if this call released the claim
(pending, held by user_id, that number), else 0."""

FINISH = """
local claim = cjson.decode(redis.call('HGET', KEYS[1], ARGV[1]))
assert(claim.u == ARGV[2], 'a claim is finished by its own member')
local first = claim.s ~= 'done'
local outcome = ARGV[4]
if first then
  claim.s = 'done'
  claim.e = ARGV[3]
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(claim))
  redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'voucher_scanned', ARGV[8])
  redis.call('ZREM', KEYS[5], ARGV[10])
else
  outcome = 'voucher_used'
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'o', outcome, 'a', ARGV[7])
return first and 1 or 0
"""
"""KEYS: vclaim:{net}:{batch}, vredeemed:{net}, vattempts:{net}, notices, vpending. ARGV:
serial, user_id, entry id, outcome, batch, attempts kept, attempt blob, notice blob, notices
cap, pending member.
-> 1 if this call redeemed the code, 0 if it had been redeemed already."""

_encoder = msgspec.msgpack.Encoder()
_pending_decoder = msgspec.json.Decoder(tuple[str, str, int])


def pending_member(network: str, batch: str, serial: int) -> str:
    """A pending claim's member in the `vpending` index."""
    return msgspec.json.encode((network, batch, serial)).decode()


class Claim(msgspec.Struct, frozen=True):
    """What CLAIM decided: `outcome` is CLAIMED, RESUME, USED or PENDING."""

    outcome: str
    holder: str
    state: str
    entry_id: str
    n: int = 1
    """The claim's number: 1, then one more each time the code was released and claimed."""

    @property
    def granted(self) -> bool:
        return self.outcome in (CLAIMED, RESUME)


class BatchExists(Exception):
    """A batch with this id was minted in the network already."""


class VoucherStore:
    """Batches, claims and attempts of one deployment (asyncio; the gateway and the CLI)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, attempts_kept: int) -> None:
        self.redis = client
        self.keys = keys
        self.attempts_kept = attempts_kept
        self._claim = client.register_script(CLAIM)
        self._finish = client.register_script(FINISH)
        self._release = client.register_script(RELEASE)
        self._refused = client.register_script(REFUSED)

    # -- batches ---------------------------------------------------------------------------
    async def add_batch(self, batch: Batch) -> None:
        """Record a new batch; raises BatchExists if its id is taken in its network."""
        key = self.keys.voucher_batches(batch.network)
        if not await self.redis.hsetnx(key, batch.id, batch_encoder.encode(batch)):
            raise BatchExists(f"batch {batch.id!r} exists in network {batch.network!r}")

    async def batch(self, network: str, batch_id: str) -> Batch | None:
        raw = await self.redis.hget(self.keys.voucher_batches(network), batch_id)
        return None if raw is None else batch_decoder.decode(cast("bytes", raw))

    async def batches(self, network: str) -> list[tuple[Batch, int]]:
        """Every batch of `network` with how many of its codes were redeemed, newest first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.voucher_batches(network))
            pipe.hgetall(self.keys.voucher_redeemed(network))
            raws, redeemed = await pipe.execute()
        out = [(batch_decoder.decode(raw), int(redeemed.get(bid, 0))) for bid, raw in raws.items()]
        return sorted(out, key=lambda br: (-br[0].created_at, br[0].id))

    # -- scans -----------------------------------------------------------------------------
    async def claim(
        self, network: str, batch: str, serial: int, user_id: str, *, now: float,
        resume_after_s: float, expires_at: int, attempt: Attempt, record: bool = True,
    ) -> Claim:  # fmt: skip
        """Claim a code for `user_id` (see the module doc); a refusal is recorded as an
        attempt by the same script (unless `record` is False: the sweeper)."""
        got = await self._claim(
            keys=[
                self.keys.voucher_claims(network, batch), self.keys.voucher_attempts(network),
                self.keys.voucher_pending,
            ],
            args=[
                serial, user_id, repr(now), repr(resume_after_s),
                expires_at + CLAIMS_KEPT_AFTER_EXPIRY_S, self.attempts_kept, _encoder.encode(attempt),
                pending_member(network, batch, serial), "1" if record else "0",
            ],
        )  # fmt: skip
        outcome, holder, state, entry, n = (x.decode() for x in cast("list[bytes]", got))
        assert outcome in (CLAIMED, RESUME, USED, PENDING), outcome
        return Claim(outcome, holder, state, entry, int(n))

    async def release(
        self, network: str, serial: int, user_id: str, n: int, attempt: Attempt
    ) -> bool:
        """Free claim number `n` of a code (the store refused its item) and record the
        attempt; False if that claim was no longer pending (finished or released already)."""
        assert attempt.batch, "a released attempt names its batch"
        got = await self._release(
            keys=[
                self.keys.voucher_claims(network, attempt.batch),
                self.keys.voucher_attempts(network), self.keys.voucher_pending,
            ],
            args=[
                serial, user_id, n, self.attempts_kept, _encoder.encode(attempt),
                pending_member(network, attempt.batch, serial), attempt.outcome,
            ],
        )  # fmt: skip
        return bool(got)

    async def finish(
        self, network: str, serial: int, user_id: str, entry_id: str, attempt: Attempt,
        notice: VoucherScanned,
    ) -> bool:  # fmt: skip
        """Mark a granted claim redeemed, count it and append the notice, once; record the
        attempt. False if the code had been redeemed already (by an earlier claimant)."""
        assert attempt.batch, "a finished attempt names its batch"
        got = await self._finish(
            keys=[
                self.keys.voucher_claims(network, attempt.batch),
                self.keys.voucher_redeemed(network),
                self.keys.voucher_attempts(network),
                self.keys.notices,
                self.keys.voucher_pending,
            ],
            args=[
                serial, user_id, entry_id, attempt.outcome, attempt.batch, self.attempts_kept,
                _encoder.encode(attempt), _encoder.encode(notice), NOTICES_MAXLEN,
                pending_member(network, attempt.batch, serial),
            ],
        )  # fmt: skip
        return bool(got)

    async def stale_claims(self, older_than: float, most: int) -> list[tuple[str, str, int, str]]:
        """Pending claims made before `older_than`: (network, batch, serial, holder), at most
        `most`; those finished meanwhile are dropped from the index."""
        raws = await self.redis.zrangebyscore(
            self.keys.voucher_pending, "-inf", older_than, start=0, num=most
        )
        out = []
        for raw in raws:
            network, batch, serial = _pending_decoder.decode(raw)
            claim = await self.redis.hget(self.keys.voucher_claims(network, batch), serial)
            state = None if claim is None else json.loads(claim)
            if state is None or state["s"] in ("done", "released"):
                await self.redis.zrem(self.keys.voucher_pending, raw)
                continue
            out.append((network, batch, serial, str(state["u"])))
        return out

    async def refused_notice(self, attempt: Attempt) -> bool:
        """Append the `voucher_refused` notice of a refused scan, unless its member had one in
        the last REFUSED_NOTICE_EVERY_S; True if appended."""
        body = {"network": attempt.network, "user_id": attempt.user_id,
                "outcome": attempt.outcome, "code_sha256": attempt.code_sha256,
                "code_id": attempt.code_id, "batch": attempt.batch, "detail": attempt.detail,
                "ts": attempt.ts}  # fmt: skip
        throttle = self.keys.k("vrefusednote", attempt.network, attempt.user_id)
        got = await self._refused(
            keys=[throttle, self.keys.notices],
            args=[REFUSED_NOTICE_EVERY_S, msgspec.json.encode(body), NOTICES_MAXLEN],
        )
        return bool(got)

    async def record(self, attempt: Attempt) -> None:
        """Append an attempt decided outside the scripts (a bad code, an unknown batch, ...)."""
        await self.redis.xadd(
            self.keys.voucher_attempts(attempt.network),
            {"o": attempt.outcome, "a": _encoder.encode(attempt)},
            maxlen=self.attempts_kept,
            approximate=True,
        )

    async def attempts(
        self, network: str, *, limit: int, before: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Attempts newest first, `limit` at most, older than the stream id `before`; and the
        cursor of the next page (None at the end)."""
        top = f"({before}" if before else "+"
        rows = await self.redis.xrevrange(
            self.keys.voucher_attempts(network), max=top, min="-", count=limit + 1
        )
        out = []
        for sid, fields in rows[:limit]:
            a = attempt_decoder.decode(fields[b"a"])
            body = msgspec.to_builtins(msgspec.structs.replace(a, outcome=fields[b"o"].decode()))
            out.append({"id": sid.decode(), **body})
        more = len(rows) > limit
        return out, (out[-1]["id"] if more and out else None)
