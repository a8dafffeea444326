"""Request authentication (HMAC signatures, key rotation) and per-network authorisation."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping, Sequence

from engine.events import Event
from gateway.errors import Forbidden, Unauthorized
from gateway.settings import ApiKey, Settings
from gateway.signing import KEY_HEADER, SIG_HEADER, TS_HEADER


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
        self._skew_s = skew_s
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.time
    ) -> Authenticator:
        keys = {k.key: k for k in settings.api_keys}
        return cls(keys, settings.limits.signature_skew_s, clock)

    def verify(self, headers: Mapping[str, str], body: bytes) -> ApiKey:
        """The key that signed `body`; raises Unauthorized (401)."""
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
        if abs(self._clock() - int(ts)) > self._skew_s:
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
