"""The Ed25519 keys that sign and verify voucher codes (engine/voucher.py takes them as
functions).

The signing key is `[vouchers] signing_key` (base64url of the 32-byte Ed25519 seed; `rally
vouchers keygen` prints one), or, when that is empty, a key generated once and kept in
`DATA_DIR/vouchers/signing.key` (mode 600). Every process that loads the keyring with the same
data_dir gets the same key: the file is created with an atomic link, so two gateway workers
starting together cannot each keep a key of their own. `[vouchers] verify_keys` lists the
public keys (base64url, 32 bytes) of earlier signing keys: codes they signed still verify,
so a key can be rotated without voiding the codes in circulation.

A deployment of several machines must configure `signing_key` (or share data_dir): a code
verifies only where its key is known.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from engine.voucher import key_id_of

KEY_FILE = Path("vouchers") / "signing.key"


class VoucherKeyError(Exception):
    """A configured voucher key cannot be used (bad base64 or length, unreadable key file)."""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise VoucherKeyError(f"{what} is not base64url") from None
    if len(raw) != 32:
        raise VoucherKeyError(f"{what} must be 32 bytes (base64url), got {len(raw)}")
    return raw


def new_signing_key() -> str:
    """A fresh signing key, as `[vouchers] signing_key` holds it."""
    return b64(secrets.token_bytes(32))


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _read_or_create(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(new_signing_key() + "\n")
    try:
        os.link(tmp, path)  # atomic: the first process to link wins, the others read its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def _verify(
    keys: dict[bytes, Ed25519PublicKey], key_id: bytes, message: bytes, signature: bytes
) -> bool:
    key = keys.get(key_id)
    if key is None:
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


class VoucherKeys:
    """The current signing key (lazily loaded or generated) and every key that verifies."""

    def __init__(self, signing_key: str, key_file: Path, verify_keys: tuple[str, ...] = ()) -> None:
        self.signing_key_config = signing_key
        self.key_file = key_file
        self.verify_keys_config = verify_keys
        self._private: Ed25519PrivateKey | None = None
        self._public: dict[bytes, Ed25519PublicKey] = {}
        self._key_id = b""

    @classmethod
    def from_settings(cls, signing_key: str, data_dir: Path, verify_keys: list[str]) -> VoucherKeys:
        return cls(signing_key, Path(data_dir) / KEY_FILE, tuple(verify_keys))

    def load(self) -> VoucherKeys:
        """Read (or generate) the keys; once. Raises VoucherKeyError."""
        if self._private is not None:
            return self
        try:
            text = self.signing_key_config or _read_or_create(self.key_file)
        except OSError as err:
            raise VoucherKeyError(f"voucher key file {self.key_file}: {err}") from err
        what = "[vouchers] signing_key" if self.signing_key_config else str(self.key_file)
        private = Ed25519PrivateKey.from_private_bytes(unb64(text, what))
        public = {}
        for i, pub in enumerate(self.verify_keys_config):
            raw = unb64(pub, f"[vouchers] verify_keys[{i}]")
            public[key_id_of(raw)] = Ed25519PublicKey.from_public_bytes(raw)
        own = _raw_public(private.public_key())
        self._key_id = key_id_of(own)
        public[self._key_id] = private.public_key()
        self._public = public
        self._private = private
        return self

    @property
    def key_id(self) -> bytes:
        """The id of the current signing key (codes carry it)."""
        self.load()
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        self.load()
        assert self._private is not None
        return self._private.sign(message)

    def verify(self, key_id: bytes, message: bytes, signature: bytes) -> bool:
        """Whether the key known as `key_id` signed `message` (False for an unknown key)."""
        self.load()
        return _verify(self._public, key_id, message, signature)

    def public_keys(self) -> list[dict[str, object]]:
        """Every key that verifies codes here: what an offline verifier needs."""
        self.load()
        return [
            {
                "key_id": kid.hex(),
                "public_key": b64(_raw_public(key)),
                "current": kid == self._key_id,
            }
            for kid, key in self._public.items()
        ]


class PublicKeys:
    """Verifies codes with public keys only (offline checks: `rally vouchers verify`)."""

    def __init__(self, public_keys: list[str]) -> None:
        self._public: dict[bytes, Ed25519PublicKey] = {}
        for i, pub in enumerate(public_keys):
            raw = unb64(pub, f"public key {i}")
            self._public[key_id_of(raw)] = Ed25519PublicKey.from_public_bytes(raw)

    def verify(self, key_id: bytes, message: bytes, signature: bytes) -> bool:
        return _verify(self._public, key_id, message, signature)
