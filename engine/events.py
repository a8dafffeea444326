"""Wire event types: a msgspec tagged union decoded by module-level decoders built once.

Every event carries an id (the idempotency key), the network, the channel, the platform
user id (never the display name: balances survive renames), a display name and a
timestamp in seconds since the epoch. Channel-level events (stream online/offline, a
viewer-list snapshot) leave the user fields empty.

Validated once, at the edge. The classes below (`Chat`, `Join`, ...) hold no string
constraints: they are what every downstream hop decodes (the durable log, held-back events,
the archive), where a regex per id would be paid again for every event at every hop. What a
client sends must pass their checked twins (`_checked`, the same tags, fields and
encoding, plus the id patterns and lengths below): `decode_json_batch` decodes it into the
plain classes and checks the batch's strings column by column, and a batch that fails is
decoded into the twins, so a bad event is refused with a 400 naming its index and field;
connectors that build events in Python pass them through `valid_only` before they append.
Numeric ranges stay on the plain classes (they cost nothing to check).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Union, get_args

import msgspec
from msgspec import Meta

from engine.referral import REFERRAL_CHANNEL

MAX_ID_LEN = 128
MAX_NAME_LEN = 64
MAX_NETWORK_LEN = 64
MAX_TEXT_LEN = 2_000
MAX_VIEWERS_PER_SNAPSHOT = 200_000

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN, pattern=r"^[A-Za-z0-9_.:\-]+$")]
NetworkId = Annotated[
    str, Meta(min_length=1, max_length=MAX_NETWORK_LEN, pattern=r"^[A-Za-z0-9_.\-]+$")
]
"""A network name: no colon, since `network:id` keys are split on the first colon."""
OptId = Annotated[str, Meta(max_length=MAX_ID_LEN, pattern=r"^[A-Za-z0-9_.:\-]*$")]
Name = Annotated[str, Meta(max_length=MAX_NAME_LEN)]
Timestamp = Annotated[float, Meta(ge=0, le=10_000_000_000)]
Count = Annotated[int, Meta(ge=0, le=1_000_000_000)]


Text = Annotated[str, Meta(max_length=MAX_TEXT_LEN)]


class _Base(msgspec.Struct, frozen=True, tag_field="kind", forbid_unknown_fields=True):
    id: str
    network: str
    channel: str
    ts: Timestamp
    user_id: str = ""
    user_name: str = ""


class Chat(_Base, tag="chat", frozen=True):
    """A chat message in a channel."""

    text: str = ""


class Join(_Base, tag="join", frozen=True):
    """A viewer joined the channel."""


class Leave(_Base, tag="leave", frozen=True):
    """A viewer left the channel."""


class Viewer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    name: str = ""


class Viewers(_Base, tag="viewers", frozen=True):
    """A full snapshot of who is present: everyone else has left."""

    viewers: list[Viewer] = []


class Online(_Base, tag="online", frozen=True):
    """The stream went live."""


class Offline(_Base, tag="offline", frozen=True):
    """The stream ended."""


class Follow(_Base, tag="follow", frozen=True):
    """A viewer followed the channel."""


class Subscription(_Base, tag="sub", frozen=True):
    """A subscription (new or renewed); gifted when someone else paid for it."""

    tier: Annotated[int, Meta(ge=1, le=3)] = 1
    months: Annotated[int, Meta(ge=1, le=1_000)] = 1
    gifted: bool = False


class GiftBomb(_Base, tag="gift_bomb", frozen=True):
    """The user gifted `count` subscriptions at once; the gifter is credited."""

    count: Annotated[int, Meta(ge=1, le=10_000)] = 1
    tier: Annotated[int, Meta(ge=1, le=3)] = 1


class Cheer(_Base, tag="cheer", frozen=True):
    """A cheer or tip of `amount` units (bits, cents)."""

    amount: Annotated[int, Meta(ge=1, le=100_000_000)] = 1


class Raid(_Base, tag="raid", frozen=True):
    """The user (a broadcaster) raided this channel, bringing `viewers` viewers."""

    viewers: Count = 0


class Custom(_Base, tag="custom", frozen=True):
    """A network-defined action (event attendance, a quiz answer) worth `points`."""

    action: str = "custom"
    points: Annotated[int, Meta(ge=0, le=1_000_000)] = 0


class Referral(_Base, tag="referral", frozen=True):
    """Member `user_id` was brought by member `referrer` (engine/referral.py): routed to the
    network's referral partition whatever its channel (where the referral happened)."""

    referrer: str = ""


Event = (
    Chat
    | Join
    | Leave
    | Viewers
    | Online
    | Offline
    | Follow
    | Subscription
    | GiftBomb
    | Cheer
    | Raid
    | Custom
    | Referral
)

MEMBER_EVENTS: tuple[type, ...] = (
    Chat,
    Join,
    Leave,
    Follow,
    Subscription,
    GiftBomb,
    Cheer,
    Raid,
    Custom,
    Referral,
)
"""Event kinds that are about one member: they need a user id."""


_KINDS: tuple[type[_Base], ...] = get_args(Event)
_EDGE_FIELDS: dict[str, Any] = {
    "id": Id, "network": NetworkId, "channel": Id, "user_id": OptId, "user_name": Name,
}  # fmt: skip
"""What the edge checks of every event's strings (the numbers are checked everywhere)."""


def _checked(cls: type[msgspec.Struct], types: dict[str, Any], **config: Any) -> Any:
    """The checked twin of `cls`: a subclass (so `isinstance` and the engine accept it) with
    the same name, tag, fields and defaults, whose fields in `types` carry constraints."""
    spec: list[Any] = []
    for f in msgspec.structs.fields(cls):
        if f.name not in types:
            continue
        if f.default is not msgspec.NODEFAULT:
            spec.append((f.name, types[f.name], f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            spec.append((f.name, types[f.name], msgspec.field(default_factory=f.default_factory)))
        else:
            spec.append((f.name, types[f.name]))
    return msgspec.defstruct(
        cls.__name__, spec, bases=(cls,), module=__name__, frozen=True,
        forbid_unknown_fields=True, **config,
    )  # fmt: skip


_CheckedViewer: Any = _checked(Viewer, {"id": Id, "name": Name})
_CheckedViewers: Any = Annotated[list[_CheckedViewer], Meta(max_length=MAX_VIEWERS_PER_SNAPSHOT)]
_EDGE_EXTRA: dict[type, dict[str, Any]] = {
    Chat: {"text": Text},
    Viewers: {"viewers": _CheckedViewers},
    Custom: {"action": Id},
    Referral: {"referrer": OptId},
}
_CHECKED = tuple(
    _checked(
        k, _EDGE_FIELDS | _EDGE_EXTRA.get(k, {}), tag=k.__struct_config__.tag, tag_field="kind"
    )
    for k in _KINDS
)
CheckedEvent: Any = Union[_CHECKED]  # noqa: UP007 (a Union built at run time)
"""The union the edge decodes a client's events into: `Event`'s kinds with their checks."""


class Batch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    events: list[Event]


_CheckedBatch = msgspec.defstruct(
    "Batch", [("events", list[CheckedEvent])], module=__name__, frozen=True,
    forbid_unknown_fields=True,
)  # fmt: skip


class BatchError(Exception):
    """A batch failed validation; names the event index and the field."""

    code = "invalid_event"

    def __init__(self, message: str, *, index: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.index = index
        self.field = field

    def as_dict(self) -> dict[str, object]:
        return {
            "error": self.code,
            "message": self.message,
            "index": self.index,
            "field": self.field,
        }


_json_batch: msgspec.json.Decoder[Batch] = msgspec.json.Decoder(_CheckedBatch)
_json_event: msgspec.json.Decoder[Event] = msgspec.json.Decoder(CheckedEvent)
_json_events: msgspec.json.Decoder[list[Event]] = msgspec.json.Decoder(list[CheckedEvent])
_mp_events = msgspec.msgpack.Decoder(list[Event])
_mp_checked: msgspec.msgpack.Decoder[Event] = msgspec.msgpack.Decoder(CheckedEvent)
_mp_encoder = msgspec.msgpack.Encoder()
_PATH = re.compile(r"at `\$(?:\.events)?(?:\[(\d+)\])?((?:\.[A-Za-z_]+|\[\d+\])*)`")
_NAMED_FIELD = re.compile(r"field `([A-Za-z_][A-Za-z0-9_]*)`")
"""A missing or unknown field is named in the message, not in the path."""
_BATCH_START = re.compile(rb'\{\s*"events"\s*:')


def _translate(
    err: msgspec.ValidationError | msgspec.DecodeError,
    offset: int = 0,
    default_index: int | None = None,
) -> BatchError:
    text = str(err)
    m = _PATH.search(text)
    if m is None:  # an error at the root carries no path
        index, field, message = default_index, "", text
    else:
        index = int(m.group(1)) + offset if m.group(1) is not None else default_index
        field = m.group(2).lstrip(".")
        message = text[: m.start()].rstrip(" -")
    named = _NAMED_FIELD.search(message)
    if named is not None:
        field = f"{field}.{named.group(1)}" if field else named.group(1)
    return BatchError(message, index=index, field=field or None)


def check_members(events: list[Event]) -> None:
    """Member events need a user id."""
    for i, ev in enumerate(events):
        if not ev.user_id and isinstance(ev, MEMBER_EVENTS):
            raise BatchError("user_id is required for this kind", index=i, field="user_id")
        if isinstance(ev, Referral) and not ev.referrer:
            raise BatchError("referrer is required for a referral", index=i, field="referrer")


_plain_batch: msgspec.json.Decoder[Batch] = msgspec.json.Decoder(Batch)
_plain_events: msgspec.json.Decoder[list[Event]] = msgspec.json.Decoder(list[Event])
SMALL_BATCH_BYTES = 1_000
"""A body shorter than this (a few events) is decoded into the checked twins directly."""
_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_NOT_NETWORK = _ALNUM
_NOT_ID = _ALNUM + b":"
"""Bytes deleted by `_chars_ok`: an id may hold what `Id` allows, a network what
`NetworkId` allows."""


def _chars_ok(values: list[str], allowed: bytes) -> bool:
    """Whether every character of `values` is one of `allowed` (ASCII): their concatenation
    passes exactly when each does, so one pass in C checks a whole batch's ids."""
    joined = "".join(values)
    return joined.isascii() and not joined.encode().translate(None, allowed)


def _longest(values: list[str]) -> int:
    return max(map(len, values), default=0)


def _edge_ok(events: list[Event]) -> bool:
    """Whether `events` (decoded into the plain classes) meet every check of their checked
    twins (`_EDGE_FIELDS`, `_EDGE_EXTRA`), column by column over the whole batch instead
    of a regex per field. Never more lenient than the twins: `decode_json_batch` falls
    back to them whenever this says no, so an error is theirs, word for word."""
    required = [e.id for e in events]  # ids: 1 to MAX_ID_LEN of the `Id` characters
    required += [e.channel for e in events]
    optional = [e.user_id for e in events]  # the same, or empty
    networks = [e.network for e in events]
    names = [e.user_name for e in events]
    texts: list[str] = []
    for e in events:
        if isinstance(e, Chat):
            texts.append(e.text)
        elif isinstance(e, Custom):
            required.append(e.action)
        elif isinstance(e, Referral):
            optional.append(e.referrer)
        elif isinstance(e, Viewers):
            if len(e.viewers) > MAX_VIEWERS_PER_SNAPSHOT:
                return False
            required += [v.id for v in e.viewers]
            names += [v.name for v in e.viewers]
    ids = required + optional
    return (
        all(required)
        and all(networks)
        and _longest(ids) <= MAX_ID_LEN
        and _longest(networks) <= MAX_NETWORK_LEN
        and _longest(names) <= MAX_NAME_LEN
        and _longest(texts) <= MAX_TEXT_LEN
        and _chars_ok(ids, _NOT_ID)
        and _chars_ok(networks, _NOT_NETWORK)
    )


def decode_json_batch(body: bytes) -> list[Event]:
    """Decode `{"events": [...]}` or a bare JSON list or a single event; raise BatchError.

    Decoded into the plain classes, then checked column by column (`_edge_ok`): ~1 µs an
    event against ~3 µs for the checked twins (a regex per id, then a msgpack round trip
    back to the plain classes). A batch that fails any check is decoded again into the
    twins, whose error names the event and field. A single event, or a batch of a few
    (under SMALL_BATCH_BYTES), goes to the twins at once: the column checks cost ~3 µs
    whatever the batch's size. One difference, where JSON leaves the meaning open: an
    object naming a field twice is taken with the last value, which alone is checked (the
    twins refuse it if any value fails)."""
    stripped = body.lstrip()
    single = stripped[:1] == b"{" and _BATCH_START.match(stripped) is None
    if single or len(body) < SMALL_BATCH_BYTES:
        return _decode_checked(body, stripped, single)
    try:
        if stripped[:1] == b"[":
            plain = _plain_events.decode(body)
        else:
            plain = _plain_batch.decode(body).events
    except (msgspec.ValidationError, msgspec.DecodeError):
        plain = None
    if plain is not None and _edge_ok(plain):
        check_members(plain)
        return plain
    return _decode_checked(body, stripped, single)


def _decode_checked(body: bytes, stripped: bytes, single: bool) -> list[Event]:
    """The checked twins' decode: what says why a batch is refused."""
    try:
        if stripped[:1] == b"[":
            events = _json_events.decode(body)
        elif not single:
            events = _json_batch.decode(body).events
        else:
            events = [_json_event.decode(body)]
    except (msgspec.ValidationError, msgspec.DecodeError) as err:
        raise _translate(err, default_index=0 if single else None) from err
    check_members(events)
    # the checked twins turned into the plain classes every other hop uses (so events
    # compare equal however they were made): a msgpack round trip, ~0.5 µs an event
    return _mp_events.decode(_mp_encoder.encode(events))


def valid_only(events: list[Event]) -> tuple[list[Event], list[BatchError]]:
    """The events that pass the edge's checks, and why each other one does not: for events
    built in Python (connectors), which no client request decoded."""
    good: list[Event] = []
    bad: list[BatchError] = []
    for i, ev in enumerate(events):
        try:
            _mp_checked.decode(_mp_encoder.encode(ev))
        except msgspec.ValidationError as err:
            bad.append(_translate(err, default_index=i))
            continue
        try:
            check_members([ev])
        except BatchError as err:
            err.index = i
            bad.append(err)
            continue
        good.append(ev)
    return good, bad


def encode_events(events: list[Event]) -> bytes:
    """Hot-path encoding of events for the durable log (msgpack)."""
    return _mp_encoder.encode(events)


def decode_events(blob: bytes) -> list[Event]:
    return _mp_events.decode(blob)


def member_key(network: str, user_id: str) -> str:
    """The identity of a member: a platform user id within a network."""
    return f"{network}:{user_id}"


def channel_key(network: str, channel: str) -> str:
    return f"{network}:{channel}"


def routing_key(ev: Event) -> str:
    """What places `ev` on its ingest partition: its channel, except that every referral of
    a network goes to one partition (engine/referral.py decides links there, in order)."""
    if isinstance(ev, Referral):
        return f"{ev.network}:{REFERRAL_CHANNEL}"
    return f"{ev.network}:{ev.channel}"
