"""Request authentication (HMAC signatures, key rotation, member tokens) and authorisation
(which networks a key covers, which member a token reads, which networks are public)."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence

import msgspec

from engine.events import Event
from gateway.errors import Forbidden, Unauthorized
from gateway.settings import ApiKey, Settings
from gateway.signing import KEY_HEADER, SIG_HEADER, TS_HEADER, request_message

AUTHORIZATION = "Authorization"
SESSION_HEADER = "X-Rally-Session"
"""Set only by gateway.sessions' middleware (stripped from every incoming request): an admin
session of an API key sent this request. Its value carries a per-process secret."""
TOKEN_VERSION = "rt1"


class Authenticator:
    """Checks the X-Rally-* headers of a request against every configured secret of its key."""

    def __init__(
        self,
        keys: Mapping[str, ApiKey],
        skew_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = dict(keys)
        self._secrets = {k: [s.encode() for s in key.secrets] for k, key in self._keys.items()}
        self.skew_s = skew_s
        self._clock = clock
        self._session_mark = secrets.token_urlsafe(32)

    def vouch(self, key_id: str) -> str:
        """The SESSION_HEADER value that makes `verify` accept a request as sent by `key_id`
        (for a dashboard session of that key, after its cookie and CSRF checks)."""
        return f"{key_id} {self._session_mark}"

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.time
    ) -> Authenticator:
        keys = {k.key: k for k in settings.api_keys}
        return cls(keys, settings.limits.signature_skew_s, clock)

    def verify(self, headers: Mapping[str, str], body: bytes) -> ApiKey:
        """The key that signed `body` (or whose admin session sent it); raises Unauthorized."""
        vouched = headers.get(SESSION_HEADER)
        if vouched is not None:
            key_id, _, mark = vouched.partition(" ")
            if hmac.compare_digest(mark, self._session_mark) and key_id in self._keys:
                return self._keys[key_id]
            raise Unauthorized("bad session credential", field=SESSION_HEADER)
        key_id = headers.get(KEY_HEADER)
        ts = headers.get(TS_HEADER)
        signature = headers.get(SIG_HEADER)
        if not key_id or not ts or not signature:
            raise Unauthorized(
                f"missing {KEY_HEADER}, {TS_HEADER} or {SIG_HEADER} header", field="headers"
            )
        key = self._keys.get(key_id)
        if key is None:
            raise Unauthorized("unknown api key", field=KEY_HEADER)
        if not (ts.isascii() and ts.isdigit()) or len(ts) > 12:
            raise Unauthorized("timestamp must be unix seconds", field=TS_HEADER)
        if abs(self._clock() - int(ts)) > self.skew_s:
            raise Unauthorized("timestamp too far from the server clock", field=TS_HEADER)
        if not signature.isascii():
            raise Unauthorized("bad signature", field=SIG_HEADER)
        msg = f"{ts}.".encode() + body
        ok = False
        for secret in self._secrets[key_id]:  # every secret, no early exit
            ok |= hmac.compare_digest(hmac.digest(secret, msg, "sha256").hex(), signature)
        if not ok:
            raise Unauthorized("bad signature", field=SIG_HEADER)
        return key

    def verify_target(
        self, headers: Mapping[str, str], method: str, target: str, body: bytes = b""
    ) -> ApiKey:
        """The key that signed `method target` (and `body`, if the request has one)."""
        return self.verify(headers, request_message(method, target, body))


def check_networks(key: ApiKey, events: Sequence[Event]) -> None:
    """Every event's network must be one `key` may write; raises Forbidden (403)."""
    if "*" in key.networks:
        return
    allowed = key.networks
    for i, ev in enumerate(events):
        if ev.network not in allowed:
            raise Forbidden(
                f"api key {key.key!r} may not write network {ev.network!r}",
                field="network",
                index=i,
            )


def check_network(key: ApiKey, network: str) -> None:
    """`key` must cover `network`; raises Forbidden (403)."""
    if not key.may_write(network):
        raise Forbidden(f"api key {key.key!r} may not read network {network!r}", field="network")


# -- member tokens ----------------------------------------------------------------------------
class MemberToken(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a member token grants: reading member `user_id` of `network` until `exp`."""

    network: str = msgspec.field(name="n")
    user_id: str = msgspec.field(name="u")
    exp: int


_token_encoder = msgspec.json.Encoder()
_token_decoder = msgspec.json.Decoder(MemberToken)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Member tokens: f"rt1.{b64url(json)}.{b64url(HMAC-SHA256(secret, 'rt1.' + b64url(json)))}",
    the JSON being {"n": network, "u": user_id, "exp": unix seconds}."""

    def __init__(self, secret: str, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret.encode()
        self.ttl_s = ttl_s
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.time
    ) -> TokenSigner | None:
        """None when [auth] token_secret is empty (member tokens are off)."""
        auth = settings.auth
        return cls(auth.token_secret, auth.token_ttl_s, clock) if auth.token_secret else None

    def _mac(self, signed: str) -> str:
        return _b64(hmac.digest(self._secret, signed.encode(), "sha256"))

    def issue(self, network: str, user_id: str) -> tuple[str, int]:
        """(token, expiry in unix seconds)."""
        exp = int(self._clock()) + self.ttl_s
        payload = _b64(_token_encoder.encode(MemberToken(network, user_id, exp)))
        signed = f"{TOKEN_VERSION}.{payload}"
        return f"{signed}.{self._mac(signed)}", exp

    def verify(self, token: str) -> MemberToken:
        """The grant of a valid, unexpired token; raises Unauthorized (401)."""
        version, _, rest = token.partition(".")
        payload, _, mac = rest.partition(".")
        if version != TOKEN_VERSION or not payload or not mac or not token.isascii():
            raise Unauthorized("malformed member token", field=AUTHORIZATION)
        if not hmac.compare_digest(self._mac(f"{version}.{payload}"), mac):
            raise Unauthorized("bad member token signature", field=AUTHORIZATION)
        try:
            grant = _token_decoder.decode(_unb64(payload))
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise Unauthorized("malformed member token", field=AUTHORIZATION) from None
        if self._clock() >= grant.exp:
            raise Unauthorized("member token expired", field=AUTHORIZATION)
        return grant


# -- reads ------------------------------------------------------------------------------------
Principal = ApiKey | MemberToken


class ReadAccess:
    """Who may read what: an API key reads the networks it covers; a member token reads its
    own member and ledger; leaderboards and channel stats of public networks need nothing."""

    def __init__(
        self, auth: Authenticator, tokens: TokenSigner | None, public_networks: Collection[str]
    ) -> None:
        self.auth = auth
        self.tokens = tokens
        self.public_networks = frozenset(public_networks)

    @classmethod
    def from_settings(
        cls, settings: Settings, auth: Authenticator, clock: Callable[[], float] = time.time
    ) -> ReadAccess:
        return cls(auth, TokenSigner.from_settings(settings, clock), settings.auth.public_networks)

    def principal(
        self, headers: Mapping[str, str], method: str, target: str, body: bytes = b""
    ) -> Principal:
        """The API key that signed the request (and its body), or the member token it
        presents (401)."""
        authorization = headers.get(AUTHORIZATION)
        if authorization is None:
            return self.auth.verify_target(headers, method, target, body)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <member token>'", field=AUTHORIZATION)
        if self.tokens is None:
            raise Unauthorized("member tokens are not enabled", field=AUTHORIZATION)
        return self.tokens.verify(token.strip())

    def member(self, who: Principal, network: str, user_id: str) -> None:
        """`who` may read member `user_id` of `network` (and their ledger); else 403."""
        if isinstance(who, ApiKey):
            check_network(who, network)
        elif (who.network, who.user_id) != (network, user_id):
            raise Forbidden("a member token reads only its own member", field="user_id")

    def is_public(self, network: str) -> bool:
        return network in self.public_networks

    def channel(self, who: Principal, network: str) -> None:
        """`who` may read the leaderboards and stats of `network` (not public); else 403."""
        if isinstance(who, MemberToken):
            raise Forbidden(
                "a member token reads only its own member; leaderboards and channel stats of "
                f"network {network!r} need an api key",
                field="network",
            )
        check_network(who, network)
