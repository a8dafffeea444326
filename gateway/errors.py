"""Gateway errors: one root, each with an HTTP status and a stable code, rendered as JSON."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from aiohttp import web

_json = msgspec.json.Encoder()


class GatewayError(Exception):
    """A request the gateway refuses; rendered as a JSON error body."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        index: int | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.index = index
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})
        self.extra: dict[str, object] = {}
        """More fields of the body (e.g. `retry_at`), after the four every error has."""

    def as_dict(self) -> dict[str, object]:
        return {
            "error": self.code,
            "message": self.message,
            "field": self.field,
            "index": self.index,
            **self.extra,
        }


class BadRequest(GatewayError):
    """The request is malformed (400)."""


class Unauthorized(GatewayError):
    """Unknown key, missing or wrong signature, stale timestamp (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(GatewayError):
    """The key may not do this (403)."""

    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    """No such member, channel or route (404)."""

    status = 404
    code = "not_found"


class Conflict(GatewayError):
    """The same Idempotency-Key was used with a different body (409)."""

    status = 409
    code = "idempotency_conflict"


class PayloadTooLarge(GatewayError):
    """Body, frame or batch beyond its limit (413)."""

    status = 413
    code = "too_large"


class Unavailable(GatewayError):
    """Redis is down or the ingest queue is full; retry later (503)."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class Overloaded(Unavailable):
    """The pipeline lags beyond its bound: ingest is shed until it catches up (503)."""

    code = "overloaded"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int = 1,
        code: str | None = None,
        ids: list[str] | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        if code is not None:
            self.code = code
        self.ids = ids

    def as_dict(self) -> dict[str, object]:
        """The WebSocket's frame: also when to retry and, if known, the ids not accepted."""
        body = {**super().as_dict(), "retry_after": self.retry_after_s}
        if self.ids is not None:
            body["ids"] = self.ids
        return body


def json_response(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_json.encode(body), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    index: int | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> web.Response:
    """The one shape of every error body: {"error", "message", "field", "index"}, then any
    fields the error adds (`extra`)."""
    body = {"error": code, "message": message, "field": field, "index": index, **(extra or {})}
    return json_response(body, status=status, headers=headers)


def error_of(err: GatewayError) -> web.Response:
    return error_response(
        err.status,
        err.code,
        err.message,
        field=err.field,
        index=err.index,
        headers=err.headers,
        extra=err.extra,
    )
