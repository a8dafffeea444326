"""chain/siwe.py: EIP-4361 messages built, parsed and checked on eth_account."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from chain.siwe import SiweError, SiweMessage, iso, parse, verify

NOW = 1_800_000_000.0
ACCT = Account.create()


def message(**kw: object) -> SiweMessage:
    base: dict[str, object] = {"domain": "rally.example", "address": ACCT.address, "uri": "https://rally.example",
                                   "chain_id": 31337, "nonce": "abcdef123456", "issued_at": iso(NOW - 5),
                                   "expiration_time": iso(NOW + 300)}  # fmt: skip
    return SiweMessage(**(base | kw))  # type: ignore[arg-type]


def signed(msg: SiweMessage, acct=ACCT) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    text = msg.text()
    return text, acct.sign_message(encode_defunct(text=text)).signature.hex()


def check(text: str, sig: str, now: float = NOW) -> SiweMessage:
    return verify(text, sig, domain="rally.example", chain_id=31337, nonce="abcdef123456", now=now)


def test_a_signed_message_verifies_and_round_trips() -> None:
    msg = message(resources=("https://rally.example/terms",))
    text, sig = signed(msg)
    assert parse(text) == msg
    assert check(text, sig).address == ACCT.address
    assert text.startswith(
        "rally.example wants you to sign in with your Ethereum account:\n" + ACCT.address
    )


@pytest.mark.parametrize(
    ("msg", "now", "code"),
    [
        (message(domain="evil.example"), NOW, "domain"),
        (message(chain_id=1), NOW, "chain_id"),
        (message(nonce="zzzzzzzzzzzz"), NOW, "nonce"),
        (message(), NOW + 301, "expired"),
        (message(issued_at=iso(NOW - 3_600), expiration_time=""), NOW, "expired"),
        (message(not_before=iso(NOW + 60)), NOW, "not_yet_valid"),
    ],
)
def test_refusals_say_why(msg: SiweMessage, now: float, code: str) -> None:
    text, sig = signed(msg)
    with pytest.raises(SiweError) as err:
        check(text, sig, now)
    assert err.value.code == code


def test_a_signature_by_another_key_or_a_tampered_message_is_refused() -> None:
    text, _ = signed(message())
    _, other = signed(message(), Account.create())
    with pytest.raises(SiweError) as err:
        check(text, other)
    assert err.value.code == "signature"
    text, sig = signed(message())
    with pytest.raises(SiweError):
        check(text.replace("Version: 1", "Version: 1\nRequest ID: x"), sig)
    with pytest.raises(SiweError) as err:
        check("hello", sig)
    assert err.value.code == "malformed"
    for short in ("0x1234", "", "0x" + "00" * 65, "zz"):  # a wrong length, or no signature
        with pytest.raises(SiweError) as err:
            check(text, short)
        assert err.value.code == "signature", short


def test_the_uri_is_checked_when_given() -> None:
    text, sig = signed(message(uri="https://evil.example"))
    assert check(text, sig).uri == "https://evil.example"  # not asked: not checked
    with pytest.raises(SiweError) as err:
        verify(text, sig, domain="rally.example", chain_id=31337, nonce="abcdef123456", now=NOW,
               uri="https://rally.example")  # fmt: skip
    assert err.value.code == "uri"
