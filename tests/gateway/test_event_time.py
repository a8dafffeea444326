"""Event time is validated (README, "Event time", rule 1): a batch with an event dated outside
[now - max_event_age_s, now + max_future_s] of the gateway's clock is refused whole, over
HTTP and WebSocket, naming ts and the event's index."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import redis

from engine.events import Chat
from gateway.admission import check_event_times
from gateway.errors import BadRequest
from gateway.redis_server import RedisServer

from .helpers import (
    body_of,
    chat,
    make_settings,
    post,
    serve,
    signed,
    stream_lengths,
    ws_connect,
)

MAX_AGE_S, MAX_FUTURE_S = 3_600.0, 60.0
MARGIN_S = 120.0
"""Far enough inside or outside the window that a slow test run cannot cross its edge."""
YEAR_S = 365 * 86_400.0
RAW_TS = "@ts@"
"""Stands in a body for a timestamp that JSON cannot encode (NaN, Infinity), sent raw."""

BAD_TIMES: list[tuple[str, object, str, str, int | None]] = [
    # (case, ts: seconds relative to now, or raw JSON text; error, field, index)
    ("ts = 0", "0", "ts_out_of_window", "ts", 1),
    ("a day old", -86_400.0, "ts_out_of_window", "ts", 1),
    ("just older than max_event_age_s", -MAX_AGE_S - MARGIN_S, "ts_out_of_window", "ts", 1),
    ("just beyond max_future_s", MAX_FUTURE_S + MARGIN_S, "ts_out_of_window", "ts", 1),
    ("10 years ahead", 10 * YEAR_S, "ts_out_of_window", "ts", 1),
    ("the largest ts the wire type allows", "1e10", "ts_out_of_window", "ts", 1),
    ("beyond the wire type", "1e11", "invalid_event", "ts", 1),
    ("inf (overflowing number)", "1e999", "invalid_event", "ts", 1),
    ("-inf", "-1e999", "invalid_event", "ts", 1),
    ("NaN", "NaN", "malformed_json", "body", None),
    ("Infinity", "Infinity", "malformed_json", "body", None),
    ("negative", "-1", "invalid_event", "ts", 1),
]


def _batch(bad: object, now: float) -> bytes:
    """Three chats dated now, the second one dated `bad`."""
    events = [chat(1, ts=now), chat(2, ts=RAW_TS), chat(3, ts=now)]
    ts = repr(now + bad) if isinstance(bad, float) else str(bad)
    return body_of({"events": events}).replace(body_of(RAW_TS), ts.encode())


@pytest.mark.parametrize(
    ("case", "bad", "error", "field", "index"), BAD_TIMES, ids=[c[0] for c in BAD_TIMES]
)
def test_bad_timestamps_refuse_the_whole_batch(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    namespace: str,
    case: str,
    bad: object,
    error: str,
    field: str,
    index: int | None,
) -> None:
    settings = make_settings(namespace, max_event_age_s=MAX_AGE_S, max_future_s=MAX_FUTURE_S)

    async def go() -> None:
        async with serve(settings, redis_server.url) as client:
            body = _batch(bad, time.time())
            code, answer = await post(client, body, headers=signed(body))
            assert code == 400, answer
            assert (answer["error"], answer["field"], answer["index"]) == (error, field, index)
            if error == "ts_out_of_window":
                assert answer["message"].startswith("events[1].ts = ")

    asyncio.run(go())
    assert stream_lengths(redis_client, namespace) == [0, 0]


def test_times_inside_the_window_are_accepted(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    settings = make_settings(namespace, max_event_age_s=MAX_AGE_S, max_future_s=MAX_FUTURE_S)

    async def go() -> None:
        async with serve(settings, redis_server.url) as client:
            now = time.time()
            events = [
                chat(1, ts=now - MAX_AGE_S + MARGIN_S),
                chat(2, ts=now),
                chat(3, ts=now + MAX_FUTURE_S - MARGIN_S / 4),
            ]
            assert await post(client, events) == (202, {"accepted": 3})

    asyncio.run(go())
    assert sum(stream_lengths(redis_client, namespace)) >= 1


def test_websocket_answers_a_bad_time_with_its_error_frame_and_stays_open(
    redis_server: RedisServer, redis_client: redis.Redis, namespace: str
) -> None:
    settings = make_settings(namespace, max_event_age_s=MAX_AGE_S, max_future_s=MAX_FUTURE_S)

    async def go() -> None:
        async with serve(settings, redis_server.url) as client:
            ws = await ws_connect(client)
            now = time.time()
            for bad in (0, now + 10 * YEAR_S, now - MAX_AGE_S - MARGIN_S):
                await ws.send_str(body_of([chat(1, ts=now), chat(2, ts=bad)]).decode())
                error = await ws.receive_json()
                assert (error["error"], error["field"], error["index"]) == (
                    "ts_out_of_window", "ts", 1,
                )  # fmt: skip
            await ws.send_str(body_of([chat(3, ts=now)]).decode())
            assert await ws.receive_json() == {"ack": ["e3"]}
            assert not ws.closed
            await ws.close()

    asyncio.run(go())
    assert sum(stream_lengths(redis_client, namespace)) == 1


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf, 0.0, 1e10])
def test_the_window_refuses_what_no_wire_decoder_should_let_through(ts: float) -> None:
    now = 1_795_000_000.0
    events = [Chat(id="a", network="n", channel="c", user_id="u", ts=now),
              Chat(id="b", network="n", channel="c", user_id="u", ts=ts)]  # fmt: skip
    with pytest.raises(BadRequest) as err:
        check_event_times(events, now, MAX_AGE_S, MAX_FUTURE_S)
    assert (err.value.field, err.value.index, err.value.code) == ("ts", 1, "ts_out_of_window")
    check_event_times(events[:1], now, MAX_AGE_S, MAX_FUTURE_S)  # the window's edges are in
    edges = [Chat(id="c", network="n", channel="c", user_id="u", ts=t)
             for t in (now - MAX_AGE_S, now + MAX_FUTURE_S)]  # fmt: skip
    check_event_times(edges, now, MAX_AGE_S, MAX_FUTURE_S)
