"""Referrals at the edge (engine/referral.py decides them).

POST /v1/members/{user_id}/referral?network=N  {"referrer": "alice"}  -> 202
    {"accepted": 1, "user_id", "referrer", "event_id"}: the member says who brought it. The
    member's token or a network API key authenticates (signed like every write). The call
    is a `referral` event dated by the gateway's clock, appended like any ingested event:
    the referral partition decides it in event-time order (one referrer, no cycles), so the
    answer is "accepted", and the member endpoint shows the outcome once applied. Its id
    derives from (member, referrer): a retried call is a duplicate and counts once.
GET /v1/members/{user_id} shows `referral` (referrer, upline, status, rewards received).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec
from aiohttp import web

from engine.events import Referral
from engine.referral import REFERRAL_CHANNEL
from gateway.errors import BadRequest, json_response
from gateway.ingest import IngestWriter
from gateway.reads import ACCESS, READER, parse_id

MAX_BODY_BYTES = 4 * 1024


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    referrer: str


def event_id(user_id: str, referrer: str) -> str:
    """The referral event's id for (member, referrer): a retry is a duplicate."""
    return "referral-" + hashlib.sha256(f"{user_id}\0{referrer}".encode()).hexdigest()[:32]


def install(app: web.Application, writer: IngestWriter, clock: Callable[[], float]) -> None:
    async def post_referral(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise BadRequest(f"body over {MAX_BODY_BYTES} bytes", field="body", code="too_large")
        body = await request.read()
        who = request.app[ACCESS].principal(request.headers, request.method, request.raw_path, body)
        user_id = parse_id(request.match_info["user_id"], "user_id")
        network = request.app[READER].network_of(request.query)
        request.app[ACCESS].member(who, network, user_id)
        try:
            referrer = parse_id(msgspec.json.decode(body, type=_Body).referrer, "referrer")
        except msgspec.ValidationError as err:
            raise BadRequest(str(err), field="referrer", code="invalid_body") from None
        except msgspec.DecodeError as err:
            raise BadRequest(
                f"malformed JSON: {err}", field="body", code="malformed_json"
            ) from None
        if referrer == user_id:
            raise BadRequest("a member cannot refer itself", field="referrer", code="self_referral")
        ev = Referral(id=event_id(user_id, referrer), network=network, channel=REFERRAL_CHANNEL,
                      ts=clock(), user_id=user_id, referrer=referrer)  # fmt: skip
        await writer.append([ev])
        return json_response(
            {"accepted": 1, "user_id": user_id, "referrer": referrer, "event_id": ev.id},
            status=202,
        )

    app.router.add_post("/v1/members/{user_id}/referral", post_referral)
