"""JSON chat frames to events, by a configurable field mapping (generic WebSocket chat).

A `FrameMapping` names, for each event field, a dotted path into the frame (`data.sender.id`);
`kinds` maps the frame's event name (at `event_path`) to an event kind. Pusher-style frames
carry their payload in `data` as a JSON string: with `decode_data`, a string `data` is parsed
before the paths are followed. Pure: the receipt time is an argument.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from engine.events import (
    MAX_ID_LEN,
    MAX_NAME_LEN,
    MAX_TEXT_LEN,
    Chat,
    Event,
    Join,
    Leave,
)

_ID_BAD = re.compile(r"[^A-Za-z0-9_.:\-]")
MAX_DEPTH = 8


class FrameMapping(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    event_path: str = "event"
    kinds: dict[str, str] = {}
    """Frame event name -> event kind: chat, join or leave."""
    id: str = "data.id"
    channel: str = "channel"
    user_id: str = "data.user_id"
    user_name: str = "data.user_name"
    text: str = "data.text"
    decode_data: bool = True
    channel_prefix: str = ""
    """Stripped from the channel (Pusher channel names such as `chatrooms.123.v2`)."""


_KINDS: dict[str, type[Chat] | type[Join] | type[Leave]] = {
    "chat": Chat,
    "join": Join,
    "leave": Leave,
}


def lookup(frame: Any, path: str) -> Any:
    """The value at a dotted path, or None."""
    node = frame
    for part in path.split(".")[:MAX_DEPTH]:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


def _id(value: Any) -> str:
    return _ID_BAD.sub("_", _text(value))[:MAX_ID_LEN]


def map_frame(frame: Any, m: FrameMapping, network: str, ts: float) -> Event | None:
    """The event a frame stands for, or None (unmapped, or missing id / user / channel)."""
    if not isinstance(frame, dict):
        return None
    kind = _KINDS.get(m.kinds.get(_text(lookup(frame, m.event_path)), ""))
    if kind is None:
        return None
    if m.decode_data and isinstance(frame.get("data"), str):
        try:
            frame = {**frame, "data": json.loads(frame["data"])}
        except ValueError:
            return None
    channel = _text(lookup(frame, m.channel))
    if m.channel_prefix and channel.startswith(m.channel_prefix):
        channel = channel[len(m.channel_prefix) :]
    channel = _id(channel)
    eid, user_id = _id(lookup(frame, m.id)), _id(lookup(frame, m.user_id))
    if not (eid and user_id and channel):
        return None
    name = _text(lookup(frame, m.user_name))[:MAX_NAME_LEN]
    common = (eid, network, channel, ts, user_id, name)
    if kind is Chat:
        return Chat(*common, text=_text(lookup(frame, m.text))[:MAX_TEXT_LEN])
    return kind(*common)
