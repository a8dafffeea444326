"""Sign-In with Ethereum (EIP-4361) on eth_account: the message format and its checks.

The server issues a single-use nonce (gateway/routes/wallets.py keeps it in Redis); the
wallet signs the EIP-4361 message with personal_sign (EIP-191); `verify` parses it, checks
the domain, URI, chain id, nonce, issued-at / expiration / not-before against `now`, and
that the signature recovers the message's address. Time is an argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.exceptions import BadSignature
from eth_utils import to_checksum_address
from eth_utils.exceptions import ValidationError

from chain.client import ChainError

STATEMENT = "Link this wallet to your Rallypoint membership."
SIGN_IN_STATEMENT = "Sign in to your Rallypoint member portal."
_HEADER = re.compile(r"^(?P<domain>[^\s]+) wants you to sign in with your Ethereum account:$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")
_SIGNATURE = re.compile(r"^(0x)?[0-9a-fA-F]{130}$")
"""An EIP-191 signature: r, s and v, 65 bytes in hex."""


class SiweError(ChainError):
    """A Sign-In with Ethereum message that is refused: `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts(text: str, what: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SiweError("malformed", f"{what} is not an RFC 3339 time") from None


@dataclass(frozen=True, slots=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str
    expiration_time: str = ""
    not_before: str = ""
    statement: str = STATEMENT
    version: str = "1"
    resources: tuple[str, ...] = field(default=())

    def text(self) -> str:
        """The EIP-4361 message, byte for byte what the wallet signs."""
        lines = [
            f"{self.domain} wants you to sign in with your Ethereum account:",
            self.address,
            "",
        ]
        if self.statement:
            lines += [self.statement, ""]
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {self.issued_at}",
        ]
        if self.expiration_time:
            lines.append(f"Expiration Time: {self.expiration_time}")
        if self.not_before:
            lines.append(f"Not Before: {self.not_before}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {r}" for r in self.resources]
        return "\n".join(lines)


def parse(text: str) -> SiweMessage:
    """The message in `text` (SiweError `malformed` if it is not EIP-4361)."""
    lines = text.split("\n")
    if len(lines) < 7:
        raise SiweError("malformed", "not an EIP-4361 message")
    head = _HEADER.match(lines[0])
    if head is None or not _ADDRESS.match(lines[1]) or lines[2] != "":
        raise SiweError("malformed", "not an EIP-4361 message (header or address)")
    i = 3
    statement = ""
    if not lines[i].startswith("URI: "):
        statement = lines[i]
        i += 2
    fields: dict[str, str] = {}
    resources: list[str] = []
    for line in lines[i:]:
        if line == "Resources:":
            continue
        if line.startswith("- "):
            resources.append(line[2:])
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            raise SiweError("malformed", f"unexpected line {line[:60]!r}")
        fields[key] = value
    try:
        return SiweMessage(
            domain=head["domain"],
            address=lines[1],
            uri=fields["URI"],
            chain_id=int(fields["Chain ID"]),
            nonce=fields["Nonce"],
            issued_at=fields["Issued At"],
            expiration_time=fields.get("Expiration Time", ""),
            not_before=fields.get("Not Before", ""),
            statement=statement,
            version=fields["Version"],
            resources=tuple(resources),
        )
    except (KeyError, ValueError) as err:
        raise SiweError("malformed", f"missing or bad field: {err}") from None


def verify(
    text: str, signature: str, *, domain: str, chain_id: int, nonce: str, now: float,
    max_age_s: float = 600.0, uri: str | None = None,
) -> SiweMessage:  # fmt: skip
    """The message, if it is signed by its address and matches what the server issued (and
    `uri`, when given); SiweError (`domain`, `uri`, `chain_id`, `nonce`, `expired`,
    `not_yet_valid`, `signature`)."""
    msg = parse(text)
    if msg.version != "1":
        raise SiweError("malformed", "Version must be 1")
    if msg.domain != domain:
        raise SiweError("domain", f"the message is for {msg.domain!r}, not {domain!r}")
    if uri is not None and msg.uri != uri:
        raise SiweError("uri", f"the message's URI is {msg.uri!r}, not {uri!r}")
    if msg.chain_id != chain_id:
        raise SiweError("chain_id", f"the message is for chain {msg.chain_id}, not {chain_id}")
    if msg.nonce != nonce or not _NONCE.match(msg.nonce):
        raise SiweError("nonce", "the nonce is not the one issued")
    issued = _ts(msg.issued_at, "Issued At")
    if issued > now + 60:
        raise SiweError("not_yet_valid", "Issued At is in the future")
    if now - issued > max_age_s:
        raise SiweError("expired", f"the message was issued more than {max_age_s:.0f} s ago")
    if msg.expiration_time and now >= _ts(msg.expiration_time, "Expiration Time"):
        raise SiweError("expired", "the message has expired")
    if msg.not_before and now < _ts(msg.not_before, "Not Before"):
        raise SiweError("not_yet_valid", "the message is not valid yet (Not Before)")
    if not isinstance(signature, str) or not _SIGNATURE.match(signature):
        raise SiweError("signature", "the signature must be 65 bytes in hex (0x + 130 digits)")
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except (ValueError, TypeError, IndexError, ValidationError, BadSignature) as err:
        raise SiweError("signature", f"the signature is malformed: {err}") from None
    if signer.lower() != msg.address.lower():
        raise SiweError("signature", "the signature is not by the message's address")
    return msg


def checksum(address: str) -> str:
    return str(to_checksum_address(address))
