"""engine/wsmap.py: JSON frames to events by a field mapping (Pusher's string `data`
included); hypothesis: any JSON value maps to a valid event or to None, never an error."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from engine.events import Chat, Join, encode_events
from engine.wsmap import FrameMapping, map_frame

KICK = FrameMapping(
    kinds={"App\\Events\\ChatMessageEvent": "chat", "App\\Events\\UserJoined": "join"},
    id="data.id", user_id="data.sender.id", user_name="data.sender.username",
    text="data.content", channel="channel", channel_prefix="chatrooms.",
)  # fmt: skip


def test_pusher_chat_frame() -> None:
    data = {"id": "m-1", "content": "hi all", "sender": {"id": 42, "username": "Zed"}}
    frame = {"event": "App\\Events\\ChatMessageEvent", "channel": "chatrooms.77",
             "data": json.dumps(data)}  # fmt: skip
    ev = map_frame(frame, KICK, "kick", 1.0)
    assert isinstance(ev, Chat)
    assert (ev.id, ev.channel, ev.user_id, ev.user_name, ev.text) == (
        "m-1",
        "77",
        "42",
        "Zed",
        "hi all",
    )


def test_join_unmapped_and_incomplete_frames() -> None:
    join = {"event": "App\\Events\\UserJoined", "channel": "chatrooms.1",
            "data": {"id": "j1", "sender": {"id": "5"}}}  # fmt: skip
    assert isinstance(map_frame(join, KICK, "kick", 1.0), Join)
    assert map_frame({"event": "other", "data": {}}, KICK, "kick", 1.0) is None
    no_user = {"event": "App\\Events\\ChatMessageEvent", "channel": "c", "data": {"id": "x"}}
    assert map_frame(no_user, KICK, "kick", 1.0) is None
    bad_data = {"event": "App\\Events\\ChatMessageEvent", "channel": "c", "data": "{nope"}
    assert map_frame(bad_data, KICK, "kick", 1.0) is None
    assert map_frame([1, 2], KICK, "kick", 1.0) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    json_values, st.sampled_from(["App\\Events\\ChatMessageEvent", "App\\Events\\UserJoined", "x"])
)
def test_any_frame_maps_to_a_valid_event_or_none(data: object, event: str) -> None:
    for payload in (data, json.dumps(data)):
        ev = map_frame(
            {"event": event, "channel": "chatrooms.9", "data": payload}, KICK, "kick", 1.0
        )
        if ev is not None:
            encode_events([ev])
