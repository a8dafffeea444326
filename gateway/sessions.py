"""Browser sessions of the member portal and the admin dashboard.

Sign-in:
- a member signs in with a login JWT issued by their network (`rally portal-link`): HS256
  only (a fixed allow-list, RFC 8725 3.1), signed with a secret of the network's API key
  named in `iss`; `aud` must be [portal] jwt_audience, `sub` the member, `net` a network
  the key covers; `exp`, `iat` required and exp - iat at most [portal] jwt_max_ttl_s;
- a member signs in with a wallet they linked (Sign-In with Ethereum, gateway/routes/wallets.py):
  the nonce is member-less and stateless (its expiry and a MAC of this secret, bound to the
  network: `wallet_nonce`), so asking for one writes nothing; the sign-in marks it used;
- an admin signs in with an API key id and secret: the dashboard session acts for that key.

A session is a stateless signed cookie (HttpOnly, SameSite=Strict, Path=/): scope ("member"
or "admin"), network, subject (member id or API key id), expiry and a CSRF token. The
session middleware turns a valid cookie into the credential the routes already check: a
member session presents a member token (so a member session can call no admin route: those
want an API key's signature); an admin session has the request signed with its key. State-
changing requests with a cookie must carry X-CSRF-Token equal to the session's token (which
only a same-origin page can read, from GET /v1/session) and, when sent, a same-origin
Origin header; WebSocket handshakes with a cookie must come from the same origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import jwt
import msgspec
from aiohttp import web
from multidict import CIMultiDict

from gateway.auth import SESSION_HEADER
from gateway.errors import Forbidden, Unauthorized
from gateway.reads import ACCESS
from gateway.settings import ApiKey, PortalSettings, Settings
from gateway.signing import KEY_HEADER

COOKIE = "rally_session"
CSRF_HEADER = "X-CSRF-Token"
JWT_ALGORITHMS = ["HS256"]
"""The only algorithm a login JWT may use (never "none", never chosen by the token)."""
JWT_LEEWAY_S = 30
_quiet = warnings.catch_warnings
"""PyJWT warns about HMAC keys under 32 bytes; API key secrets are >= 16 characters by the
settings' own rule, so the warning would only repeat that on every sign-in."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGN_IN_PATHS = frozenset(
    {"/v1/session/member", "/v1/session/admin", "/v1/session/wallet", "/v1/session/wallet/nonce"}
)
"""Sign-in acts for no session: a browser that holds one (a member opening a new link, a portal
session opening the dashboard) signs in without its CSRF token, and the cookie is replaced."""
Scope = Literal["member", "admin"]
_WALLET_NONCE = re.compile(r"[0-9a-f]{58}")
"""A wallet sign-in nonce: expiry (10 hex), random (16 hex), MAC (32 hex)."""


class Session(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a session cookie grants until `exp`."""

    scope: Scope = msgspec.field(name="s")
    network: str = msgspec.field(name="n")
    subject: str = msgspec.field(name="u")
    """The member's user id (member scope) or the API key id (admin scope)."""
    exp: int
    csrf: str = msgspec.field(name="c")


_encode = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(Session)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Login(msgspec.Struct, frozen=True):
    """A checked login JWT: whom it signs in, and what makes it single-use."""

    network: str
    user_id: str
    issuer: str
    jti: str
    """The token's id ("" when it has none: then only its short life limits replays)."""
    exp: int


class Sessions:
    """Issues and opens session cookies; checks login JWTs and admin keys."""

    def __init__(
        self,
        cfg: PortalSettings,
        api_keys: Mapping[str, ApiKey],
        networks: frozenset[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session_ttl_s = cfg.session_ttl_s
        self.jwt_audience = cfg.jwt_audience
        self.jwt_max_ttl_s = cfg.jwt_max_ttl_s
        self.secure_cookies = cfg.secure_cookies
        self.keys = dict(api_keys)
        self.networks = networks
        self._clock = clock
        if cfg.session_secret:
            secret = cfg.session_secret.encode()
        else:  # the same in every gateway process of a deployment, secret as its keys are
            material = "\0".join(s for k in sorted(self.keys) for s in self.keys[k].secrets)
            secret = hashlib.sha256(b"rally-session\0" + material.encode()).digest()
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], float] = time.time) -> Sessions:
        keys = {k.key: k for k in settings.api_keys}
        return cls(settings.portal, keys, frozenset(settings.networks), clock)

    # -- cookies ------------------------------------------------------------------------------
    def _mac(self, payload: str) -> str:
        return _b64(hmac.digest(self._secret, f"session.{payload}".encode(), "sha256"))

    def issue(self, scope: Scope, network: str, subject: str) -> tuple[str, Session]:
        exp = int(self._clock()) + self.session_ttl_s
        session = Session(scope, network, subject, exp, secrets.token_urlsafe(24))
        payload = _b64(_encode.encode(session))
        return f"{payload}.{self._mac(payload)}", session

    def open(self, value: str) -> Session | None:
        """The session of a cookie value, or None if it is forged, malformed or expired."""
        payload, _, mac = value.partition(".")
        if not payload or not mac or not value.isascii():
            return None
        if not hmac.compare_digest(self._mac(payload), mac):
            return None
        try:
            session = _decode.decode(_unb64(payload))
        except (ValueError, msgspec.DecodeError):
            return None
        if self._clock() >= session.exp:
            return None
        if session.scope == "admin" and session.subject not in self.keys:
            return None  # the key was removed from the settings
        return session

    def set_cookie(self, response: web.StreamResponse, value: str) -> None:
        response.set_cookie(
            COOKIE, value, max_age=self.session_ttl_s, path="/", httponly=True,
            samesite="Strict", secure=self.secure_cookies,
        )  # fmt: skip

    # -- wallet sign-in nonces ----------------------------------------------------------------
    def _nonce_mac(self, network: str, head: str) -> str:
        return hmac.digest(self._secret, f"wallet-nonce.{network}.{head}".encode(), "sha256")[
            :16
        ].hex()

    def wallet_nonce(self, network: str, ttl_s: int) -> tuple[str, int]:
        """A member-less Sign-In with Ethereum nonce for `network` and when it expires."""
        exp = int(self._clock()) + ttl_s
        head = f"{exp:010x}{secrets.token_hex(8)}"
        return head + self._nonce_mac(network, head), exp

    def wallet_nonce_expiry(self, nonce: str, network: str) -> int | None:
        """When a nonce `wallet_nonce` issued for `network` expires; None if it issued no such
        nonce (forged, or for another network or deployment)."""
        if not _WALLET_NONCE.fullmatch(nonce):
            return None
        head, mac = nonce[:26], nonce[26:]
        if not hmac.compare_digest(self._nonce_mac(network, head), mac):
            return None
        return int(head[:10], 16)

    # -- sign-in ------------------------------------------------------------------------------
    def login_jwt(self, key: ApiKey, network: str, user_id: str, ttl_s: int) -> str:
        """A login JWT for `user_id` of `network`, as a network issues it (and the CLI)."""
        now = int(self._clock())
        claims = {"iss": key.key, "aud": self.jwt_audience, "sub": user_id, "net": network,
                  "iat": now, "exp": now + min(ttl_s, self.jwt_max_ttl_s),
                  "jti": secrets.token_urlsafe(16)}  # fmt: skip
        with _quiet():
            warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
            return jwt.encode(claims, key.secrets[0], algorithm="HS256", headers={"typ": "JWT"})

    def _verified(self, token: str, secret: str, issuer: str) -> dict[str, Any]:
        with _quiet():
            warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
            return jwt.decode(
                token, secret, algorithms=JWT_ALGORITHMS, audience=self.jwt_audience,
                issuer=issuer, leeway=JWT_LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )  # fmt: skip

    def check_jwt(self, token: str) -> Login:
        """Whom a valid login JWT signs in; raises Unauthorized (401) naming `token`."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthorized("malformed login token", field="token") from None
        if header.get("alg") not in JWT_ALGORITHMS:
            raise Unauthorized("login token algorithm must be HS256", field="token")
        key = self.keys.get(str(unverified.get("iss", "")))
        if key is None:
            raise Unauthorized("login token issuer is not a known api key", field="token")
        claims = None
        for secret in key.secrets:
            try:
                claims = self._verified(token, secret, key.key)
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthorized("login token expired", field="token") from None
            except jwt.PyJWTError as err:
                raise Unauthorized(f"login token rejected: {err}", field="token") from None
        if claims is None:
            raise Unauthorized("bad login token signature", field="token")
        if int(claims["exp"]) - int(claims["iat"]) > self.jwt_max_ttl_s:
            raise Unauthorized(
                f"login token lives longer than {self.jwt_max_ttl_s} s", field="token"
            )
        network, user_id = claims.get("net"), claims["sub"]
        if not isinstance(network, str) or network not in self.networks:
            raise Unauthorized("login token names no configured network (net)", field="token")
        if not key.may_write(network):
            raise Forbidden(f"api key {key.key!r} may not sign in to {network!r}", field="token")
        jti = claims.get("jti", "")
        if not isinstance(jti, str) or len(jti) > 128:
            raise Unauthorized("login token jti must be a string of at most 128", field="token")
        return Login(network, str(user_id), key.key, jti, int(claims["exp"]))

    def check_admin(self, key_id: str, secret: str, network: str) -> ApiKey:
        """The API key of an admin sign-in; 401 unless its secret matches, 403 if it does not
        cover `network`."""
        key = self.keys.get(key_id)
        ok = False
        for s in key.secrets if key is not None else ["\0" * 16]:
            ok |= hmac.compare_digest(s.encode(), secret.encode())
        if key is None or not ok:
            raise Unauthorized("unknown api key or wrong secret", field="secret")
        if network not in self.networks:
            raise Unauthorized(f"no network {network!r}", field="network")
        if not key.may_write(network):
            raise Forbidden(f"api key {key.key!r} may not manage {network!r}", field="network")
        return key


SESSIONS = web.AppKey("sessions", Sessions)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def same_origin(request: web.Request) -> bool:
    """The request's Origin (when sent) names the host it was sent to. The scheme is not
    compared: behind a proxy that ends TLS the gateway itself sees http."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not sent by every browser on same-origin GETs; SameSite=Strict holds
    scheme, sep, host = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and host == request.host


def session_of(request: web.Request) -> Session | None:
    value = request.cookies.get(COOKIE)
    return request.app[SESSIONS].open(value) if value else None


def credentials_of(request: web.Request, session: Session) -> CIMultiDict[str]:
    """The request's headers plus the credential its session stands for: a member token, or
    the gateway's own word that an admin session of that API key sent it (auth.SESSION_HEADER,
    unforgeable: it carries a secret of this process)."""
    headers = CIMultiDict(request.headers)
    if session.scope == "member":
        tokens = request.app[ACCESS].tokens
        if tokens is None:
            raise Forbidden("the member portal needs [auth] token_secret", field="token")
        headers["Authorization"] = f"Bearer {tokens.issue(session.network, session.subject)[0]}"
    else:
        headers[SESSION_HEADER] = request.app[ACCESS].auth.vouch(session.subject)
    return headers


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request with a session cookie (and no credential of its own) acts for its session,
    once the CSRF and origin checks pass."""
    if SESSION_HEADER in request.headers:  # only this middleware may say so
        headers = CIMultiDict(request.headers)
        del headers[SESSION_HEADER]
        request = request.clone(headers=headers)
    if KEY_HEADER in request.headers or "Authorization" in request.headers:
        return await handler(request)
    if request.path in SIGN_IN_PATHS:  # checks its own Origin; a session it replaces is moot
        return await handler(request)
    session = session_of(request)
    if session is None:
        return await handler(request)
    if not same_origin(request):
        raise Forbidden("cross-origin request with a session cookie", field="Origin", code="csrf")
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
        request.headers.get(CSRF_HEADER, ""), session.csrf
    ):
        raise Forbidden(f"missing or wrong {CSRF_HEADER}", field=CSRF_HEADER, code="csrf")
    return await handler(request.clone(headers=credentials_of(request, session)))
