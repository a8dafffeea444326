"""Voucher codes: format round trip, every failure its own error, and unforgeability (any
changed character or bit fails), with the real Ed25519 keys of the gateway."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import voucher as vc
from engine.voucher import Batch, Voucher
from gateway.voucher_keys import PublicKeys, VoucherKeys, new_signing_key

KEYS = VoucherKeys(new_signing_key(), Path("/nonexistent")).load()
OTHER = VoucherKeys(new_signing_key(), Path("/nonexistent")).load()
NOW = 1_800_000_000.0


def voucher(**kw: object) -> Voucher:
    base: dict[str, object] = {
        "key_id": KEYS.key_id,
        "network": "acme",
        "batch": "launch-2027",
        "serial": 7,
        "expires_at": int(NOW) + 86_400,
        "points": 500,
    }
    base.update(kw)
    return Voucher(**base)  # type: ignore[arg-type]


def check(code: str, network: str = "acme", now: float = NOW) -> Voucher:
    return vc.check_code(code, KEYS.verify, network=network, now=now)


def test_round_trip_points_and_item() -> None:
    for v in (voucher(), voucher(points=0, item="hoodie-xl"), voucher(serial=2**32 - 1)):
        code = vc.encode(v, KEYS.sign)
        assert code.startswith("RV1:")
        assert check(code) == v
        assert vc.decode(code)[0] == v


def test_code_is_compact_and_qr_alphanumeric() -> None:
    code = vc.encode(voucher(), KEYS.sign)
    assert len(code) <= 170  # 11-character batch, 4-character network
    alnum = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert set(code) <= alnum


def test_surrounding_whitespace_is_ignored_nothing_else() -> None:
    code = vc.encode(voucher(), KEYS.sign)
    assert check(f"  {code}\n") == voucher()
    with pytest.raises(vc.MalformedCode):
        check(code.lower())


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "prefix"),
        ("RV2:AAAA", "prefix"),
        ("RV1:", "base32"),
        ("RV1:abc", "base32"),
        ("RV1:AB=C", "base32"),
        ("RV1:" + "A" * 600, "longer"),
        ("RV1:" + base64.b32encode(b"x" * 10).decode().rstrip("="), "short"),
    ],
)
def test_malformed(text: str, why: str) -> None:
    with pytest.raises(vc.MalformedCode, match=why) as err:
        check(text)
    assert err.value.code == "voucher_malformed"


def test_non_canonical_base32_is_malformed() -> None:
    code = vc.encode(voucher(), KEYS.sign)
    b32 = code[4:]
    # the last character carries unused bits when the byte count is not a multiple of 5
    raw = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    assert len(raw) % 5, "this test needs a code whose last base32 character has spare bits"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    same = [
        c
        for c in alphabet
        if c != b32[-1] and base64.b32decode(b32[:-1] + c + "=" * (-len(b32) % 8)) == raw
    ]
    assert same, "some other last character decodes to the same bytes"
    with pytest.raises(vc.MalformedCode, match="canonical"):
        check("RV1:" + b32[:-1] + same[0])


def test_each_failure_is_its_own_error() -> None:
    code = vc.encode(voucher(), KEYS.sign)
    with pytest.raises(vc.ForgedCode) as forged:
        vc.check_code(code, OTHER.verify, network="acme", now=NOW)
    assert forged.value.code == "voucher_forged"
    assert forged.value.voucher == voucher()
    with pytest.raises(vc.WrongNetwork) as wrong:
        check(code, network="other")
    assert wrong.value.code == "voucher_wrong_network"
    with pytest.raises(vc.ExpiredCode) as expired:
        check(code, now=voucher().expires_at)
    assert expired.value.code == "voucher_expired"
    assert check(code, now=voucher().expires_at - 1) == voucher()
    # signed by a key the verifier does not know: forged, never a crash
    stranger = vc.encode(voucher(key_id=OTHER.key_id), OTHER.sign)
    with pytest.raises(vc.ForgedCode):
        check(stranger)


def test_forged_is_checked_before_network_and_expiry() -> None:
    code = vc.encode(voucher(network="other", expires_at=1), OTHER.sign)
    with pytest.raises(vc.ForgedCode):
        check(code)


def test_batch_check() -> None:
    v = voucher()
    batch = Batch(
        "launch-2027", "acme", 10, v.expires_at, KEYS.key_id.hex(), NOW, points=500, note="x"
    )
    assert vc.check_batch(v, batch) is batch
    with pytest.raises(vc.UnknownBatch) as err:
        vc.check_batch(v, None)
    assert err.value.code == "voucher_unknown_batch"
    for other in (
        msgspec_replace(batch, points=501),
        msgspec_replace(batch, count=7),
        msgspec_replace(batch, key_id=OTHER.key_id.hex()),
        msgspec_replace(batch, expires_at=v.expires_at + 1),
    ):
        with pytest.raises(vc.UnknownBatch):
            vc.check_batch(v, other)


def msgspec_replace(batch: Batch, **kw: object) -> Batch:
    import msgspec

    return msgspec.structs.replace(batch, **kw)


def test_mint_is_deterministic_and_every_code_checks() -> None:
    batch = Batch("b1", "acme", 5, int(NOW) + 60, KEYS.key_id.hex(), NOW, points=10)
    codes = vc.mint(batch, KEYS.key_id, KEYS.sign)
    assert len(set(codes)) == 5
    assert vc.mint(batch, KEYS.key_id, KEYS.sign, range(2, 3)) == [codes[2]]
    assert [check(c).serial for c in codes] == list(range(5))


def test_bad_values_cannot_be_encoded() -> None:
    for bad in (
        voucher(points=0),
        voucher(points=vc.MAX_POINTS + 1),
        voucher(item="x y", points=0),
        voucher(item="ok", points=5),
        voucher(batch="has/slash"),
        voucher(batch="b" * 33),
        voucher(network=""),
        voucher(expires_at=0),
        voucher(serial=-1),
        voucher(key_id=b"abc"),
    ):
        with pytest.raises(ValueError):
            vc.encode(bad, KEYS.sign)


def test_public_keys_alone_verify() -> None:
    code = vc.encode(voucher(), KEYS.sign)
    public = PublicKeys([str(k["public_key"]) for k in KEYS.public_keys()])
    assert vc.check_code(code, public.verify, network="acme", now=NOW) == voucher()


def test_rotated_keys_still_verify(tmp_path: Path) -> None:
    old_code = vc.encode(voucher(key_id=OTHER.key_id), OTHER.sign)
    old_public = [str(k["public_key"]) for k in OTHER.public_keys()]
    rotated = VoucherKeys(new_signing_key(), tmp_path / "k", tuple(old_public)).load()
    assert vc.check_code(old_code, rotated.verify, network="acme", now=NOW).key_id == OTHER.key_id
    assert [k["current"] for k in rotated.public_keys()] == [False, True]


def test_generated_key_is_kept_and_shared(tmp_path: Path) -> None:
    a = VoucherKeys("", tmp_path / "vouchers" / "signing.key").load()
    b = VoucherKeys("", tmp_path / "vouchers" / "signing.key").load()
    assert a.key_id == b.key_id
    assert (tmp_path / "vouchers" / "signing.key").stat().st_mode & 0o777 == 0o600


# -- properties ------------------------------------------------------------------------------
names = st.from_regex(r"[A-Za-z0-9_\-]{1,32}", fullmatch=True)
vouchers = st.builds(
    Voucher,
    key_id=st.just(KEYS.key_id),
    network=st.from_regex(r"[A-Za-z0-9_.:\-]{1,40}", fullmatch=True),
    batch=names,
    serial=st.integers(0, 2**32 - 1),
    expires_at=st.integers(int(NOW) + 1, 2**32 - 1),
    points=st.integers(1, vc.MAX_POINTS),
) | st.builds(
    Voucher,
    key_id=st.just(KEYS.key_id),
    network=st.just("acme"),
    batch=names,
    serial=st.integers(0, 100),
    expires_at=st.integers(int(NOW) + 1, 2**32 - 1),
    item=st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True),
)


@settings(max_examples=200, deadline=None)
@given(v=vouchers)
def test_every_voucher_round_trips(v: Voucher) -> None:
    assert vc.check_code(vc.encode(v, KEYS.sign), KEYS.verify, network=v.network, now=NOW) == v


@settings(max_examples=300, deadline=None)
@given(v=vouchers, data=st.data())
def test_any_changed_character_fails(v: Voucher, data: st.DataObject) -> None:
    code = vc.encode(v, KEYS.sign)
    i = data.draw(st.integers(0, len(code) - 1), label="position")
    c = data.draw(st.characters(codec="ascii").filter(lambda c: c != code[i]), label="char")
    changed = code[:i] + c + code[i + 1 :]
    if changed.strip() == code:  # only whitespace at an end: the same code
        return
    with pytest.raises((vc.MalformedCode, vc.ForgedCode)):
        vc.check_code(changed, KEYS.verify, network=v.network, now=NOW)


@settings(max_examples=300, deadline=None)
@given(v=vouchers, data=st.data())
def test_any_changed_bit_fails(v: Voucher, data: st.DataObject) -> None:
    code = vc.encode(v, KEYS.sign)
    raw = bytearray(base64.b32decode(code[4:] + "=" * (-len(code[4:]) % 8)))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    raw[bit // 8] ^= 1 << (bit % 8)
    changed = "RV1:" + base64.b32encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises((vc.MalformedCode, vc.ForgedCode)):
        vc.check_code(changed, KEYS.verify, network=v.network, now=NOW)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300) | st.from_regex(r"RV1:[A-Z2-7]{0,200}", fullmatch=True))
def test_arbitrary_text_is_malformed_or_forged_never_a_crash(text: str) -> None:
    with pytest.raises((vc.MalformedCode, vc.ForgedCode)):
        vc.check_code(text, KEYS.verify, network="acme", now=NOW)
