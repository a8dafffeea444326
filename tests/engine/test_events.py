"""Wire events: the tagged union, JSON batch validation (BatchError names index and field),
and the msgpack log encoding of every kind."""

from __future__ import annotations

import msgspec
import pytest

from engine.events import (
    MAX_ID_LEN,
    MAX_NAME_LEN,
    MAX_TEXT_LEN,
    MEMBER_EVENTS,
    BatchError,
    Chat,
    Custom,
    GiftBomb,
    Viewer,
    Viewers,
    channel_key,
    decode_events,
    decode_json_batch,
    encode_events,
    member_key,
    valid_only,
)
from tests.engine.factories import KINDS, T0, one_of_each


def _event(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "kind": "chat",
        "id": "e1",
        "network": "net",
        "channel": "ch",
        "ts": T0,
        "user_id": "u1",
        "user_name": "Alice",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _batch(*events: dict[str, object]) -> bytes:
    return msgspec.json.encode({"events": list(events)})


GOOD = _event(id="ok0")


@pytest.mark.parametrize(
    ("bad", "field", "says"),
    [
        pytest.param(_event(ts="soon"), "ts", "Expected `float`, got `str`", id="wrong-type"),
        pytest.param(_event(ts=-1), "ts", ">= 0", id="negative-ts"),
        pytest.param(_event(ts=None), "ts", "missing required field `ts`", id="missing-ts"),
        pytest.param(_event(id=None), "id", "missing required field `id`", id="missing-id"),
        pytest.param(_event(kind=None), "kind", "missing required field `kind`", id="no-kind"),
        pytest.param(_event(kind="poke"), "kind", "Invalid value 'poke'", id="unknown-kind"),
        pytest.param(_event(id="has space"), "id", "matching regex", id="bad-id-pattern"),
        pytest.param(_event(channel="a/b"), "channel", "matching regex", id="bad-channel"),
        pytest.param(_event(id=""), "id", "length >= 1", id="empty-id"),
        pytest.param(_event(id="x" * (MAX_ID_LEN + 1)), "id", "length <=", id="long-id"),
        pytest.param(
            _event(user_name="n" * (MAX_NAME_LEN + 1)), "user_name", "length <=", id="long-name"
        ),
        pytest.param(_event(text="t" * (MAX_TEXT_LEN + 1)), "text", "length <=", id="long-text"),
        pytest.param(_event(user_id=None), "user_id", "user_id is required", id="no-user"),
        pytest.param(_event(user_id=""), "user_id", "user_id is required", id="empty-user"),
        pytest.param(_event(mood="happy"), "mood", "unknown field `mood`", id="unknown-field"),
        pytest.param(_event(kind="sub", tier=4), "tier", "<= 3", id="sub-tier-4"),
        pytest.param(_event(kind="sub", tier=0), "tier", ">= 1", id="sub-tier-0"),
        pytest.param(_event(kind="cheer", amount=0), "amount", ">= 1", id="cheer-zero"),
        pytest.param(_event(kind="gift_bomb", count="3"), "count", "got `str`", id="gift-count"),
        pytest.param(
            _event(kind="viewers", user_id=None, viewers=[{"id": "a"}, {"name": "b"}]),
            "viewers[1].id",
            "missing required field `id`",
            id="viewer-without-id",
        ),
    ],
)
def test_batch_error_names_index_and_field(bad: dict[str, object], field: str, says: str) -> None:
    with pytest.raises(BatchError) as info:
        decode_json_batch(_batch(GOOD, _event(id="ok1"), bad))
    err = info.value
    assert (err.index, err.field) == (2, field)
    assert says in err.message
    assert err.as_dict() == {
        "error": "invalid_event",
        "message": err.message,
        "index": 2,
        "field": field,
    }


@pytest.mark.parametrize(
    "kind", ["chat", "join", "leave", "follow", "sub", "gift_bomb", "cheer", "raid", "custom"]
)
def test_member_kinds_need_a_user_id(kind: str) -> None:
    assert KINDS[kind] in MEMBER_EVENTS
    with pytest.raises(BatchError) as info:
        decode_json_batch(_batch(GOOD, _event(kind=kind, user_id=None)))
    assert (info.value.index, info.value.field) == (1, "user_id")


@pytest.mark.parametrize("kind", ["viewers", "online", "offline"])
def test_channel_kinds_need_no_user_id(kind: str) -> None:
    (event,) = decode_json_batch(_batch(_event(kind=kind, user_id=None, user_name=None)))
    assert event.user_id == ""
    assert type(event) is KINDS[kind]


def test_bare_list_and_single_event_forms() -> None:
    body = msgspec.json.encode([GOOD, _event(id="ok1", kind="follow")])
    assert [e.id for e in decode_json_batch(body)] == ["ok0", "ok1"]
    (one,) = decode_json_batch(msgspec.json.encode(GOOD))
    assert one == Chat(
        id="ok0", network="net", channel="ch", ts=T0, user_id="u1", user_name="Alice"
    )


def test_bare_list_error_names_index() -> None:
    with pytest.raises(BatchError) as info:
        decode_json_batch(msgspec.json.encode([GOOD, _event(ts="x")]))
    assert (info.value.index, info.value.field) == (1, "ts")


def test_single_event_error_is_index_zero() -> None:
    with pytest.raises(BatchError) as info:
        decode_json_batch(msgspec.json.encode(_event(ts=None)))
    assert (info.value.index, info.value.field) == (0, "ts")


@pytest.mark.parametrize("where", ["action", "user_name", "text"])
def test_single_event_whose_value_is_events_is_not_taken_for_a_batch(where: str) -> None:
    kind = "chat" if where == "text" else "custom"
    (one,) = decode_json_batch(msgspec.json.encode(_event(kind=kind, **{where: "events"})))
    assert getattr(one, where) == "events"


def test_batch_with_whitespace_before_events_key() -> None:
    body = b'  {\n   "events" : [' + msgspec.json.encode(GOOD) + b"]}"
    assert [e.id for e in decode_json_batch(body)] == ["ok0"]


@pytest.mark.parametrize("body", [b"not json", b"", b"5", b'{"events": 5}', b'{"events": [1]}'])
def test_garbage_is_a_batch_error(body: bytes) -> None:
    with pytest.raises(BatchError):
        decode_json_batch(body)


def test_every_kind_round_trips_through_the_log_encoding() -> None:
    events = one_of_each()
    assert {type(e) for e in events} == set(KINDS.values())
    assert decode_events(encode_events(events)) == events


def test_every_kind_round_trips_through_json() -> None:
    events = one_of_each()
    assert decode_json_batch(msgspec.json.encode({"events": events})) == events
    wire = msgspec.json.decode(msgspec.json.encode(events))
    assert [e["kind"] for e in wire] == list(KINDS)


def test_defaults_of_optional_fields() -> None:
    (gift, custom, viewers) = decode_json_batch(
        _batch(
            _event(kind="gift_bomb", id="g"),
            _event(kind="custom", id="c"),
            _event(kind="viewers", id="v", user_id=None),
        )
    )
    assert isinstance(gift, GiftBomb)
    assert (gift.count, gift.tier) == (1, 1)
    assert isinstance(custom, Custom)
    assert (custom.action, custom.points) == ("custom", 0)
    assert isinstance(viewers, Viewers)
    assert viewers.viewers == []


def test_events_are_frozen() -> None:
    event = one_of_each()[0]
    with pytest.raises(AttributeError):
        event.ts = 0.0  # type: ignore[misc]


def test_keys() -> None:
    assert member_key("net", "u1") == "net:u1"
    assert channel_key("net", "ch") == "net:ch"


def test_events_are_checked_once_at_the_edge() -> None:
    """The edge refuses a bad id; the durable log's decoder (every later hop) does not check
    ids again, and what the edge hands on are the plain classes, equal to events built in
    Python."""
    bad = _event(id="has space")
    with pytest.raises(BatchError) as err:
        decode_json_batch(_batch(bad))
    assert (err.value.index, err.value.field) == (0, "id")
    built = Chat(id="has space", network="net", channel="ch", ts=T0, user_id="u1")
    assert decode_events(encode_events([built])) == [built]
    (edge,) = decode_json_batch(_batch(_event()))
    assert edge == Chat(id="e1", network="net", channel="ch", ts=T0, user_id="u1",
                        user_name="Alice")  # fmt: skip
    assert type(edge) is Chat


def test_valid_only_keeps_the_events_the_edge_accepts() -> None:
    """Events built in Python (connectors) are checked as a client's would be: the bad ones
    are dropped, each with the reason, index and field."""
    good = Chat(id="ok", network="net", channel="ch", ts=T0, user_id="u1")
    long_name = Chat(id="n", network="net", channel="ch", ts=T0, user_id="u1",
                     user_name="x" * (MAX_NAME_LEN + 1))  # fmt: skip
    bad_viewer = Viewers(id="v", network="net", channel="ch", ts=T0,
                         viewers=[Viewer(id="a b")])  # fmt: skip
    no_user = Chat(id="nu", network="net", channel="ch", ts=T0)
    kept, refused = valid_only([long_name, good, bad_viewer, no_user])
    assert kept == [good]
    assert [(e.index, e.field) for e in refused] == [
        (0, "user_name"), (2, "viewers[0].id"), (3, "user_id"),
    ]  # fmt: skip
