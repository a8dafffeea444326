"""Wire events: the tagged union, JSON batch validation (BatchError names index and field),
and the msgpack log encoding of every kind."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import (
    MAX_ID_LEN,
    MAX_NAME_LEN,
    MAX_TEXT_LEN,
    MEMBER_EVENTS,
    SMALL_BATCH_BYTES,
    BatchError,
    Chat,
    Custom,
    Event,
    GiftBomb,
    Viewer,
    Viewers,
    _decode_checked,
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


_ODD_TEXT = st.one_of(
    st.text(alphabet="a b\n\u00e9\u2603:\x00\ud800", max_size=3),
    st.sampled_from(["", "x" * MAX_ID_LEN, "x" * (MAX_ID_LEN + 1), "x" * 65, "n" * 64, "a:b"]),
)
"""Strings at a length limit, or with a colon (not in a network), a space, a newline
(which a pattern's `$` lets through), non-ASCII or a lone surrogate."""


def _edge_text(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly a valid string, one time in twenty an odd one."""
    return st.sampled_from([False] * 19 + [True]).flatmap(lambda odd: _ODD_TEXT if odd else valid)


_TAGS = sorted(str(k.__struct_config__.tag) for k in get_args(Event))
"""Every kind of the Event union (the factories' KINDS leaves referral out)."""
_ID_TEXT = _edge_text(st.text(alphabet="ab:-_.Z9", min_size=1, max_size=4))


@st.composite
def _edge_events(draw: st.DrawFn) -> dict[str, object]:
    """An event of any kind whose strings are now and then bad (`_ODD_TEXT`)."""
    kind = draw(st.sampled_from(_TAGS))
    ev: dict[str, object] = {"kind": kind, "ts": T0}
    fields = {
        "id": _ID_TEXT,
        "network": _edge_text(st.text(alphabet="ab-_.Z9", min_size=1, max_size=4)),
        "channel": _ID_TEXT,
        "user_id": _ID_TEXT,
        "user_name": _edge_text(st.text(max_size=4)),
    }
    missing = draw(st.sampled_from([""] * 20 + list(fields)))  # mostly none: its own error
    for f, values in fields.items():
        if f != missing:
            ev[f] = draw(values)
    if kind == "chat":
        ev["text"] = draw(
            st.sampled_from(["hi"] * 8 + ["x" * MAX_TEXT_LEN, "x" * (MAX_TEXT_LEN + 1)])
        )
    elif kind == "custom":
        ev["action"] = draw(_ID_TEXT)
    elif kind == "referral":
        ev["referrer"] = draw(_ID_TEXT)
    elif kind == "viewers":
        ev["viewers"] = draw(st.lists(
            st.fixed_dictionaries({"id": _ID_TEXT}, optional={"name": fields["user_name"]}),
            max_size=3,
        ))  # fmt: skip
    return ev


def _outcome(decode: Callable[[bytes], list[object]], body: bytes) -> object:
    try:
        return ("ok", decode(body))
    except BatchError as err:
        return ("refused", err.as_dict())


@settings(max_examples=400, deadline=None)
@given(st.lists(_edge_events(), min_size=1, max_size=4), st.sampled_from(["batch", "list", "one"]))
def test_the_column_checks_accept_and_refuse_exactly_what_the_checked_twins_do(
    events: list[dict[str, object]], form: str
) -> None:
    """decode_json_batch checks a batch's strings column by column; whatever it accepts the
    checked twins accept too, with equal events, and what it refuses comes with their error
    (the same message, index and field)."""
    body = (
        json.dumps(  # ASCII, escapes and all: a lone surrogate is sent as `\\ud800`
            {"events": events} if form == "batch" else events if form == "list" else events[0]
        ).encode()
        + b" " * SMALL_BATCH_BYTES
    )  # JSON's trailing space: the column checks' size
    stripped = body.lstrip()
    single = form == "one"
    assert _outcome(decode_json_batch, body) == _outcome(
        lambda b: _decode_checked(b, stripped, single), body
    )
