"""Vouchers at the edge: minting batches and redeeming a member's scan.

`VoucherService` joins the pure code checks (engine/voucher.py), the Ed25519 keys
(gateway/voucher_keys.py), the claims in Redis (actors/vouchers.py) and the spend path that
credits the points (`credit`, a SpendClient in the gateway), or, for a code worth a store
item, the reward store (`shop`, gateway/store.py) that makes a free redemption of it. The HTTP routes are in
gateway/routes/vouchers.py and the CLI in gateway/voucher_cli.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from actors.spend import SpendClient, SpendTimeout
from actors.vouchers import RESUME, BatchExists, Claim, VoucherStore
from engine import voucher as vc
from engine.rules import TierRules
from engine.spend import Transfer
from engine.store import Redemption, StoreError, check_redeemable, redemption_id
from engine.voucher import Attempt, Batch, Voucher, VoucherError, VoucherScanned
from gateway.errors import BadRequest, Conflict, GatewayError, Unavailable
from gateway.routes_store import MESSAGES, REFUSALS, SPEND_CODES, redemption_json
from gateway.store import Store, StoreRefused
from gateway.voucher_keys import VoucherKeys

log = logging.getLogger(__name__)

STATUS: dict[str, int] = {
    vc.MALFORMED: 400,
    vc.FORGED: 422,
    vc.WRONG_NETWORK: 422,
    vc.EXPIRED: 410,
    vc.UNKNOWN_BATCH: 404,
    vc.USED: 409,
    vc.PENDING: 409,
}
"""The HTTP status of each way a scan is refused (an item voucher: also the store's REFUSALS)."""
SWEEP_MOST = 100
"""Stale claims one sweep finishes at most."""
CREDIT_UNAVAILABLE = "unavailable"


class VoucherRefused(GatewayError):
    """A scan refused for a reason of its own (engine.voucher.FAILURES and a few more)."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after_s: int | None = None,
        field: str = "code",
    ) -> None:  # fmt: skip
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
        super().__init__(message, field=field, code=code, headers=headers)
        self.status = status


class _ItemRefused(Exception):
    """The store refused a voucher's item: its code, message and when to retry."""

    def __init__(self, code: str, message: str, retry_at: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_at = retry_at


class MintRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /v1/vouchers/batches: `count` codes worth `points` or the store item `item`,
    valid until `expires_at` (unix seconds) or for `expires_in_s`."""

    count: int
    points: int = 0
    item: str = ""
    expires_at: int = 0
    expires_in_s: int = 0
    batch: str = ""
    """The batch id (1-32 of A-Z a-z 0-9 _ -); "" = a random one."""
    note: str = ""


class ScanRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: str


class CreditOrder(msgspec.Struct, frozen=True):
    """Credit `points` to a member from the voucher batch's account, once per `key`."""

    key: str
    network: str
    user_id: str
    points: int
    account: str
    ref: str


class Credited(msgspec.Struct, frozen=True):
    """The spend path's answer: code "ok", or a refusal code (engine/spend.py)."""

    code: str
    balance: int = 0
    entry_id: str = ""


Credit = Callable[[CreditOrder], Awaitable[Credited]]
Standing = Callable[[str, str, int, int], Awaitable[tuple[TierRules, int, int]]]
"""(network, user, engine tier, lifetime) -> (tiers, tier, amount) to gate with
(gateway/gating.py ChainGate.standing)."""
"""Submits a credit through the spend path and waits for its durable result; raises
TimeoutError when no result came in time (resubmitting the same key is safe)."""

MINT_DECODER = msgspec.json.Decoder(MintRequest)
SCAN_DECODER = msgspec.json.Decoder(ScanRequest)
MAX_NOTE_CHARS = 200
_FIELD = re.compile(r"at `\$\.([A-Za-z_]+)`|field `([A-Za-z_]+)`")


def decode_body(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """The request struct, or a 400 naming the field."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as err:
        text = str(err)
        named = _FIELD.search(text)
        field = named.group(1) or named.group(2) if named else "body"
        raise BadRequest(text.split(" - at ")[0].replace("`", ""), field=field) from None
    except msgspec.DecodeError as err:
        raise BadRequest(f"malformed JSON: {err}", field="body", code="malformed_json") from None


def account_of(network: str, batch: str) -> str:
    """The ledger account that issues a batch's points."""
    return f"voucher:{network}:{batch}"


def transfer_key(v: Voucher) -> str:
    """The spend idempotency key of a code's credit."""
    return f"voucher:{v.code_id}"


@dataclass
class Scan:
    """Who scans what, from where: the parts of an attempt record known up front."""

    network: str
    user_id: str
    text: str
    by: str
    remote: str

    def attempt(self, now: float, outcome: str, v: Voucher | None, detail: str = "") -> Attempt:
        return Attempt(
            ts=now, network=self.network, user_id=self.user_id, outcome=outcome,
            code_sha256=vc.code_digest(self.text) if self.text else "",
            code_id=v.code_id if v else "",
            batch=v.batch if v else "", by=self.by, remote=self.remote, detail=detail[:200],
        )  # fmt: skip


class VoucherService:
    """Mints batches and redeems scans; one per gateway process (or CLI run)."""

    def __init__(
        self,
        keys: VoucherKeys,
        store: VoucherStore,
        *,
        max_batch_codes: int,
        resume_after_s: float,
        sweep_interval_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        credit: Credit | None = None,
        shop: Store | None = None,
        tiers_of: Callable[[str], tuple[str, ...]] | None = None,
        standing: Standing | None = None,
    ) -> None:
        self.keys = keys
        self.standing = standing
        """The tier to gate items with (gateway/gating.py: on chain when the network says)."""
        self.shop = shop
        """The reward store, for codes worth an item (None: such scans are 503)."""
        self.tiers_of = tiers_of
        self.store = store
        self.max_batch_codes = max_batch_codes
        self.resume_after_s = resume_after_s
        self.sweep_interval_s = sweep_interval_s
        self.clock = clock
        self.credit = credit

    # -- minting ---------------------------------------------------------------------------
    def new_batch(self, network: str, req: MintRequest, now: float) -> Batch:
        """The batch `req` asks for; raises BadRequest naming the field."""
        if not 1 <= req.count <= self.max_batch_codes:
            raise BadRequest(f"count must be 1-{self.max_batch_codes}", field="count")
        if bool(req.points) == bool(req.item):
            raise BadRequest("give either points or item", field="points")
        if req.points and not 0 < req.points <= vc.MAX_POINTS:
            raise BadRequest(f"points must be 1-{vc.MAX_POINTS}", field="points")
        if req.item and not vc.ITEM_ID.fullmatch(req.item):
            raise BadRequest("item must be 1-64 characters of A-Z a-z 0-9 _ . : -", field="item")
        if bool(req.expires_at) == bool(req.expires_in_s):
            raise BadRequest("give either expires_at or expires_in_s", field="expires_at")
        expires_at = req.expires_at or int(now) + req.expires_in_s
        if not now < expires_at <= vc.MAX_EXPIRES:
            field = "expires_at" if req.expires_at else "expires_in_s"
            raise BadRequest("the expiry must lie in the future (before 2106)", field=field)
        batch_id = req.batch or secrets.token_hex(4)
        if not vc.BATCH_ID.fullmatch(batch_id):
            raise BadRequest("batch must be 1-32 characters of A-Z a-z 0-9 _ -", field="batch")
        if len(network.encode()) > vc.MAX_NETWORK_BYTES:
            raise BadRequest(
                f"network must be at most {vc.MAX_NETWORK_BYTES} bytes", field="network"
            )
        if len(req.note) > MAX_NOTE_CHARS:
            raise BadRequest(f"note must be at most {MAX_NOTE_CHARS} characters", field="note")
        return Batch(
            id=batch_id, network=network, count=req.count, expires_at=expires_at,
            key_id=self.keys.key_id.hex(), created_at=now, points=req.points, item=req.item,
            note=req.note,
        )  # fmt: skip

    async def mint(self, network: str, req: MintRequest) -> tuple[Batch, list[str]]:
        """Record a new batch, then sign its codes (in a thread: ~50 us each)."""
        batch = self.new_batch(network, req, self.clock())
        try:
            await self.store.add_batch(batch)
        except BatchExists as err:
            raise Conflict(str(err), field="batch", code="batch_exists") from None
        codes = await asyncio.to_thread(vc.mint, batch, self.keys.key_id, self.keys.sign)
        return batch, codes

    # -- redeeming -------------------------------------------------------------------------
    async def scan(self, scan: Scan) -> dict[str, Any]:
        """Redeem `scan.text` for its member, exactly once per code; raises VoucherRefused
        (every refusal is recorded as an attempt)."""
        now = self.clock()
        try:
            v = vc.check_code(scan.text, self.keys.verify, network=scan.network, now=now)
            batch = vc.check_batch(v, await self.store.batch(v.network, v.batch))
        except VoucherError as err:
            attempt = scan.attempt(now, err.code, err.voucher, err.message)
            await self.store.record(attempt)
            await self.store.refused_notice(attempt)
            raise VoucherRefused(STATUS[err.code], err.code, err.message) from None
        claim = await self.store.claim(
            v.network, v.batch, v.serial, scan.user_id, now=now,
            resume_after_s=self.resume_after_s, expires_at=v.expires_at,
            attempt=scan.attempt(now, "", v),
        )  # fmt: skip
        if not claim.granted:
            yours = claim.holder == scan.user_id
            if claim.outcome == vc.USED and not yours:  # someone else's code: worth a look
                await self.store.refused_notice(
                    scan.attempt(now, vc.USED, v, "redeemed already by another member")
                )
            raise self._refusal(claim.outcome, yours)
        if batch.item:
            return await self._redeem_item(scan, v, now, claim)
        return await self._credit(scan, v, now, resumed=claim.outcome == RESUME)

    async def sweep(self, most: int = SWEEP_MOST) -> int:
        """Finish claims left pending longer than `resume_after_s` (their gateway died), as
        their member's next scan would; returns how many this call finished."""
        now = self.clock()
        finished = 0
        for network, batch_id, serial, holder in await self.store.stale_claims(
            now - self.resume_after_s, most
        ):
            batch = await self.store.batch(network, batch_id)
            if batch is None:
                continue
            v = Voucher(
                bytes.fromhex(batch.key_id), network, batch_id, serial, batch.expires_at,
                batch.points, batch.item,
            )  # fmt: skip
            scan = Scan(network, holder, "", "sweeper", "")
            claim = await self.store.claim(
                network, batch_id, serial, holder, now=now, resume_after_s=self.resume_after_s,
                expires_at=v.expires_at, attempt=scan.attempt(now, "", v), record=False,
            )  # fmt: skip
            if claim.outcome != RESUME:
                continue  # finished, or taken over by another process, meanwhile
            try:
                if batch.item:
                    await self._redeem_item(scan, v, now, claim)
                else:
                    await self._credit(scan, v, now, resumed=True)
            except GatewayError as err:
                log.warning("voucher_sweep_failed code_id=%s error=%s", v.code_id, err.code)
                continue
            finished += 1
        return finished

    def _refusal(self, outcome: str, yours: bool) -> VoucherRefused:
        if outcome == vc.PENDING:
            return VoucherRefused(
                409, vc.PENDING, "your earlier scan of this code is still being credited",
                retry_after_s=max(1, round(self.resume_after_s)),
            )  # fmt: skip
        by = "you" if yours else "another member"
        return VoucherRefused(409, vc.USED, f"this code was redeemed already (by {by})")

    async def _credit(self, scan: Scan, v: Voucher, now: float, *, resumed: bool) -> dict[str, Any]:
        if self.credit is None:
            raise Unavailable("the spend path is not available in this gateway")
        order = CreditOrder(
            transfer_key(v), v.network, scan.user_id, v.points, account_of(v.network, v.batch),
            v.code_id,
        )  # fmt: skip
        try:
            done = await self.credit(order)
        except TimeoutError:
            detail = "no answer from the spend path in time; scan again to finish"
            await self.store.record(scan.attempt(now, CREDIT_UNAVAILABLE, v, detail))
            raise Unavailable(detail, retry_after_s=max(1, round(self.resume_after_s))) from None
        if done.code != "ok":
            log.error("voucher_credit_refused code_id=%s code=%s", v.code_id, done.code)
            await self.store.record(scan.attempt(now, done.code, v, "the spend path refused"))
            raise VoucherRefused(409, done.code, f"the credit was refused: {done.code}")
        notice = VoucherScanned(now, v.network, scan.user_id, v.code_id, v.batch, v.points, v.item)
        first = await self.store.finish(
            v.network, v.serial, scan.user_id, done.entry_id,
            scan.attempt(now, vc.RESUMED if resumed else vc.REDEEMED, v), notice,
        )  # fmt: skip
        if not first:
            raise self._refusal(vc.USED, yours=True)
        return {
            "redeemed": True, "resumed": resumed, "code_id": v.code_id, "batch": v.batch,
            "network": v.network, "user_id": scan.user_id, "points": v.points,
            "balance": done.balance, "entry_id": done.entry_id,
        }  # fmt: skip

    async def _redeem_item(
        self, scan: Scan, v: Voucher, now: float, claim: Claim
    ) -> dict[str, Any]:
        """A free store redemption of the code's item for the member: `pending` -> the code
        is redeemed (FINISH); refused by the store -> the claim is released (the code stays
        usable) and the scan answers the store's code. Resumable: the redemption's id is a
        function of the member, the code and the claim's number."""
        shop = self.shop
        if shop is None:
            raise Unavailable("the reward store is not available in this gateway")
        rid = redemption_id(v.network, scan.user_id, f"voucher:{v.code_id}#{claim.n}")
        retry_at: float | None = None
        try:
            red = await shop.redemption(v.network, rid)
            if red is None:
                try:
                    red, retry_at = await self._new_redemption(shop, scan, v, rid, now)
                except _ItemRefused as err:
                    red = await shop.abandon(self._stub(scan, v, rid, now), err.code)
                    if red.status == "failed" and red.reason == err.code:
                        await self._release(scan, v, now, claim, err.code, err.message)
                        raise self._item_refusal(err.code, err.message, err.retry_at) from None
            if red.status == "reserving":
                found = await shop.item(v.network, red.item_id)
                if found is None:
                    raise Unavailable("the item of a half-made redemption is gone; retry later")
                red, _ = await shop.drive(found[0], red)
        except SpendTimeout:
            detail = "no answer from the spend path in time; scan again to finish"
            await self.store.record(scan.attempt(now, CREDIT_UNAVAILABLE, v, detail))
            raise Unavailable(detail, retry_after_s=max(1, round(self.resume_after_s))) from None
        if red.status == "failed":
            code = SPEND_CODES.get(red.reason, red.reason)
            message = MESSAGES.get(code, f"the store refused the item: {code}")
            await self._release(scan, v, now, claim, code, message)
            raise self._item_refusal(code, message, retry_at)
        notice = VoucherScanned(now, v.network, scan.user_id, v.code_id, v.batch, 0, v.item)
        first = await self.store.finish(
            v.network, v.serial, scan.user_id, red.id,
            scan.attempt(now, vc.RESUMED if claim.outcome == RESUME else vc.REDEEMED, v), notice,
        )  # fmt: skip
        if not first:
            raise self._refusal(vc.USED, yours=True)
        return {
            "redeemed": True, "resumed": claim.outcome == RESUME, "code_id": v.code_id,
            "batch": v.batch, "network": v.network, "user_id": scan.user_id, "points": 0,
            "item": v.item, "redemption": redemption_json(red),
        }  # fmt: skip

    async def _new_redemption(
        self, shop: Store, scan: Scan, v: Voucher, rid: str, now: float
    ) -> tuple[Redemption, float | None]:
        """Check the item's rules and reserve it at no cost: the redemption (maybe `failed`
        by a member guard) and, for a member cooldown, when it ends; raises _ItemRefused."""
        try:
            found = await shop.item(v.network, v.item)
            if found is None:
                raise _ItemRefused("item_not_found", f"no item {v.item!r} in the store")
            item = found[0]
            tiers = self.tiers_of(v.network) if self.tiers_of else ("",)
            rank = await shop.member_tier(v.network, scan.user_id)
            if self.standing is not None:
                rank = (await self.standing(v.network, scan.user_id, rank, 0))[1]
            check_redeemable(item, tiers[min(rank, len(tiers) - 1)], tiers, now)
            red, _, result = await shop.redeem(item, scan.user_id, rid, voucher=v.code_id)
        except StoreError as err:
            raise _ItemRefused(err.code, err.message) from None
        except StoreRefused as err:
            raise _ItemRefused(err.code, err.message, err.retry_at) from None
        return red, (result.retry_at or None) if result is not None else None

    @staticmethod
    def _stub(scan: Scan, v: Voucher, rid: str, now: float) -> Redemption:
        return Redemption(
            rid, v.network, scan.user_id, v.item, "", 0, "", "failed", now, now, f"store/{rid}",
            voucher=v.code_id,
        )  # fmt: skip

    async def _release(
        self, scan: Scan, v: Voucher, now: float, claim: Claim, code: str, message: str
    ) -> None:
        await self.store.release(
            v.network, v.serial, scan.user_id, claim.n, scan.attempt(now, code, v, message)
        )

    def _item_refusal(
        self, code: str, message: str, retry_at: float | None = None
    ) -> VoucherRefused:
        status, field = REFUSALS.get(code, (409, "item_id"))
        wait = max(1, int(retry_at - self.clock() + 0.999)) if retry_at is not None else None
        return VoucherRefused(status, code, message, retry_after_s=wait, field=field)


def credit_through(spends: SpendClient) -> Credit:
    """`Credit` by the spend path: a "credit" transfer from the batch's account, rule
    "voucher", keyed by the code (applied once per member and key)."""

    async def credit(order: CreditOrder) -> Credited:
        t = Transfer(
            order.key, order.network, order.user_id, order.points, "credit", order.account,
            "voucher", ref=order.ref,
        )  # fmt: skip
        try:
            result = await spends.submit(t)
        except SpendTimeout as err:
            raise TimeoutError(str(err)) from err
        return Credited(result.code, result.balance, result.entry_id)

    return credit


def batch_json(batch: Batch, redeemed: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(batch)
    body["account"] = account_of(batch.network, batch.id)
    if redeemed is not None:
        body["redeemed"] = redeemed
    return body
