"""Signed single-use vouchers: the code format, its signature check, and the reasons a scan fails.

A code is printable text for a QR code: `RV1:` and the RFC 4648 base32 (no padding) of

    key_id    4 bytes    which signing key signed it (the first 4 bytes of SHA-256 of its
                         public key)
    network   u8 n + n bytes UTF-8
    batch     u8 n + n bytes ASCII    ([A-Za-z0-9_-], 1-32)
    serial    u32 BE     the code's number in its batch (0 ... count - 1)
    expires   u32 BE     unix seconds: the code is refused from then on
    kind      u8         0 = points, 1 = a store item
    value     u32 BE points  |  u8 n + n bytes ASCII item id
    signature 64 bytes   over DOMAIN + every byte above

`RV1:` and base32 use only characters of the QR alphanumeric mode (5.5 bits per character),
so a code of network "acme", an 11-character batch and a points value is 161 characters
and fits a version 7 QR code (45 x 45 modules) at error correction M.

Signing and verifying are arguments (`Sign`, `Verify`): Ed25519 lives at the edge
(gateway/voucher_keys.py), so anyone holding the public key can check a code offline and no
one without the private key can make one. This module does no I/O and reads no clock.

Checks run in a fixed order, each failing with its own `VoucherError` code: malformed ->
forged -> wrong network -> expired (`check_code`), then unknown batch (`check_batch`); the
used-once rule needs the claim record in Redis (actors/vouchers.py).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Callable
from typing import Final

import msgspec

PREFIX: Final = "RV1:"
DOMAIN: Final = b"rallypoint-voucher-v1\x00"
"""Signed before the payload: a voucher signature can never pass for another message's."""
KEY_ID_BYTES: Final = 4
SIGNATURE_BYTES: Final = 64
MAX_NETWORK_BYTES: Final = 64
MAX_ITEM_BYTES: Final = 64
MAX_POINTS: Final = 1_000_000_000
MAX_SERIAL: Final = 2**32 - 1
MAX_EXPIRES: Final = 2**32 - 1
MAX_CODE_CHARS: Final = 512
"""Longer text is malformed before any decoding is tried."""
BATCH_ID: Final = re.compile(r"[A-Za-z0-9_\-]{1,32}")
ITEM_ID: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_B32_TEXT = re.compile(r"[A-Z2-7]+")
_HEAD = struct.Struct(">IIB")  # serial, expires, kind
_POINTS = struct.Struct(">I")
KIND_POINTS: Final = 0
KIND_ITEM: Final = 1

Sign = Callable[[bytes], bytes]
"""Signs a message with the current key: 64 bytes."""
Verify = Callable[[bytes, bytes, bytes], bool]
"""(key_id, message, signature) -> whether a key known under key_id signed message."""

# -- outcomes -----------------------------------------------------------------------------
MALFORMED: Final = "voucher_malformed"
FORGED: Final = "voucher_forged"
WRONG_NETWORK: Final = "voucher_wrong_network"
EXPIRED: Final = "voucher_expired"
UNKNOWN_BATCH: Final = "voucher_unknown_batch"
USED: Final = "voucher_used"
PENDING: Final = "voucher_pending"
REDEEMED: Final = "redeemed"
RESUMED: Final = "resumed"
FAILURES: Final = (MALFORMED, FORGED, WRONG_NETWORK, EXPIRED, UNKNOWN_BATCH, USED, PENDING)
"""Every way a scan is refused, as stable codes (the gateway maps them to 4xx)."""


class VoucherError(Exception):
    """A code that cannot be redeemed; `code` says why (one of FAILURES)."""

    code = "voucher_error"

    def __init__(self, message: str, voucher: Voucher | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.voucher = voucher
        """What the code says, when it could be read (forged codes included: for the record)."""


class MalformedCode(VoucherError):
    """Not a voucher code: wrong prefix, bad base32, wrong lengths or values."""

    code = MALFORMED


class ForgedCode(VoucherError):
    """Well formed, but no known key signed these bytes."""

    code = FORGED


class WrongNetwork(VoucherError):
    """A genuine code of another network than the member's."""

    code = WRONG_NETWORK


class ExpiredCode(VoucherError):
    """A genuine code past its expiry."""

    code = EXPIRED


class UnknownBatch(VoucherError):
    """A genuine code whose batch this deployment has no record of (or a different one)."""

    code = UNKNOWN_BATCH


class UsedCode(VoucherError):
    """The code was redeemed already."""

    code = USED


# -- the code -------------------------------------------------------------------------------
class Voucher(msgspec.Struct, frozen=True):
    """What a code says. Exactly one of `points` (> 0) and `item` is set."""

    key_id: bytes
    network: str
    batch: str
    serial: int
    expires_at: int
    points: int = 0
    item: str = ""

    @property
    def code_id(self) -> str:
        """The code's id within its network: "{batch}/{serial}"."""
        return f"{self.batch}/{self.serial}"


class Batch(msgspec.Struct, frozen=True):
    """A minted batch, as recorded when it was minted (the values every code of it carries)."""

    id: str
    network: str
    count: int
    expires_at: int
    key_id: str
    """Hex of the signing key's id."""
    created_at: float
    points: int = 0
    item: str = ""
    note: str = ""

    def matches(self, v: Voucher) -> bool:
        """Whether `v` is one of this batch's codes (same values, key and a serial in range)."""
        return (
            (v.network, v.batch, v.points, v.item, v.expires_at) == self._values()
            and v.key_id.hex() == self.key_id
            and 0 <= v.serial < self.count
        )

    def _values(self) -> tuple[str, str, int, str, int]:
        return (self.network, self.id, self.points, self.item, self.expires_at)


class Attempt(msgspec.Struct, frozen=True, omit_defaults=True):
    """One scan and its outcome, kept (bounded) so fraud attempts are visible."""

    ts: float
    network: str
    user_id: str
    outcome: str
    """REDEEMED, RESUMED, one of FAILURES, or another stable error code (e.g. unavailable)."""
    code_sha256: str
    """The first 16 hex digits of SHA-256 of the text scanned: repeats of one code group
    together without the record holding a redeemable code."""
    code_id: str = ""
    batch: str = ""
    by: str = ""
    """Who sent it: "token" (the member's own token) or "key:{api key}"."""
    remote: str = ""
    detail: str = ""


class VoucherScanned(msgspec.Struct, frozen=True):
    """A notice (notices stream): a member redeemed a voucher."""

    ts: float
    network: str
    user_id: str
    code_id: str
    batch: str
    points: int = 0
    item: str = ""


def key_id_of(public_key: bytes) -> bytes:
    """The id a code carries for the key that signed it."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_BYTES]


def code_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


def _short(data: bytes, what: str, most: int) -> bytes:
    if not 1 <= len(data) <= most:
        raise ValueError(f"{what} must be 1-{most} bytes")
    return bytes([len(data)]) + data


def check_values(v: Voucher) -> Voucher:
    """`v` if it can be encoded; raises ValueError naming what is wrong."""
    if len(v.key_id) != KEY_ID_BYTES:
        raise ValueError(f"key_id must be {KEY_ID_BYTES} bytes")
    if not v.network or len(v.network.encode()) > MAX_NETWORK_BYTES:
        raise ValueError(f"network must be 1-{MAX_NETWORK_BYTES} bytes")
    if not BATCH_ID.fullmatch(v.batch):
        raise ValueError("batch must be 1-32 characters of A-Z a-z 0-9 _ -")
    if not 0 <= v.serial <= MAX_SERIAL:
        raise ValueError(f"serial must be 0-{MAX_SERIAL}")
    if not 0 < v.expires_at <= MAX_EXPIRES:
        raise ValueError(f"expires_at must be 1-{MAX_EXPIRES} (unix seconds)")
    if v.item:
        if v.points or not ITEM_ID.fullmatch(v.item):
            raise ValueError("item must be 1-64 characters of A-Z a-z 0-9 _ . : - (no points)")
    elif not 0 < v.points <= MAX_POINTS:
        raise ValueError(f"points must be 1-{MAX_POINTS} (or an item)")
    return v


def payload(v: Voucher) -> bytes:
    """The signed bytes of `v` (without DOMAIN)."""
    check_values(v)
    out = bytearray(v.key_id)
    out += _short(v.network.encode(), "network", MAX_NETWORK_BYTES)
    out += _short(v.batch.encode(), "batch", 32)
    out += _HEAD.pack(v.serial, v.expires_at, KIND_ITEM if v.item else KIND_POINTS)
    out += _short(v.item.encode(), "item", MAX_ITEM_BYTES) if v.item else _POINTS.pack(v.points)
    return bytes(out)


def encode(v: Voucher, sign: Sign) -> str:
    """The code of `v`, signed with `sign`."""
    body = payload(v)
    signature = sign(DOMAIN + body)
    assert len(signature) == SIGNATURE_BYTES, "a voucher signature is 64 bytes (Ed25519)"
    return PREFIX + base64.b32encode(body + signature).decode().rstrip("=")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise MalformedCode("the code is cut short")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def short(self) -> bytes:
        return self.take(self.take(1)[0])


def decode(text: str) -> tuple[Voucher, bytes, bytes]:
    """(voucher, signed message, signature) of a code; raises MalformedCode. Strict: the text
    must be exactly what `encode` writes (surrounding whitespace aside), so no two texts
    decode to the same code."""
    text = text.strip()
    if len(text) > MAX_CODE_CHARS:
        raise MalformedCode(f"longer than {MAX_CODE_CHARS} characters")
    if not text.startswith(PREFIX):
        raise MalformedCode(f"a voucher code starts with the prefix {PREFIX!r}")
    b32 = text[len(PREFIX) :]
    if not _B32_TEXT.fullmatch(b32):
        raise MalformedCode("after the prefix, only base32 characters A-Z 2-7")
    try:
        raw = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    except ValueError:
        raise MalformedCode("not valid base32") from None
    if base64.b32encode(raw).decode().rstrip("=") != b32:
        raise MalformedCode("not canonical base32")
    if len(raw) <= SIGNATURE_BYTES:
        raise MalformedCode("the code is cut short")
    body, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    r = _Reader(body)
    try:
        key_id = r.take(KEY_ID_BYTES)
        network = r.short().decode()
        batch = r.short().decode()
        serial, expires_at, kind = _HEAD.unpack(r.take(_HEAD.size))
        if kind == KIND_POINTS:
            (points,), item = _POINTS.unpack(r.take(_POINTS.size)), ""
        elif kind == KIND_ITEM:
            points, item = 0, r.short().decode()
        else:
            raise MalformedCode(f"unknown value kind {kind}")
    except UnicodeDecodeError:
        raise MalformedCode("a text field is not UTF-8") from None
    if r.at != len(body):
        raise MalformedCode("unexpected bytes after the value")
    v = Voucher(key_id, network, batch, serial, expires_at, points, item)
    try:
        check_values(v)
    except ValueError as err:
        raise MalformedCode(str(err)) from None
    return v, DOMAIN + body, signature


def check_code(text: str, verify: Verify, *, network: str, now: float) -> Voucher:
    """The voucher of a genuine, unexpired code of `network`; raises MalformedCode,
    ForgedCode, WrongNetwork or ExpiredCode, in that order of checking."""
    v, message, signature = decode(text)
    if not verify(v.key_id, message, signature):
        raise ForgedCode("the signature does not match: this code was not minted here", v)
    if v.network != network:
        raise WrongNetwork(f"a code of network {v.network!r}, not {network!r}", v)
    if now >= v.expires_at:
        raise ExpiredCode(f"expired at unix {v.expires_at}", v)
    return v


def check_batch(v: Voucher, batch: Batch | None) -> Batch:
    """The batch `v` belongs to; raises UnknownBatch when none is recorded or it differs."""
    if batch is None:
        raise UnknownBatch(f"no batch {v.batch!r} was minted in network {v.network!r}", v)
    if not batch.matches(v):
        raise UnknownBatch(f"batch {v.batch!r} of network {v.network!r} has no such code", v)
    return batch


def mint(batch: Batch, key_id: bytes, sign: Sign, serials: range | None = None) -> list[str]:
    """The codes of `batch` (every serial, or those given), signed with `sign`. Ed25519
    signatures are deterministic: minting a serial again gives the same code."""
    assert key_id.hex() == batch.key_id, "a batch is minted with the key it records"
    out = []
    for serial in serials if serials is not None else range(batch.count):
        assert 0 <= serial < batch.count, "a serial of the batch"
        v = Voucher(
            key_id, batch.network, batch.id, serial, batch.expires_at, batch.points, batch.item
        )
        out.append(encode(v, sign))
    return out


batch_encoder = msgspec.msgpack.Encoder()
batch_decoder = msgspec.msgpack.Decoder(Batch)
attempt_decoder = msgspec.msgpack.Decoder(Attempt)
