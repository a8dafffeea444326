"""How a commit's packed commands are written to the socket (actors/lua.py `coalesce`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.lua import coalesce

SIZE = 64


@given(st.lists(st.binary(min_size=1, max_size=3 * SIZE), max_size=40))
def test_writes_are_the_commands_in_order_small_ones_joined_large_ones_alone(
    packed: list[bytes],
) -> None:
    writes = coalesce(packed, SIZE)
    rest = list(packed)
    for w in writes:  # each write: one large command, or the next small ones joined
        if len(rest[0]) >= SIZE:
            assert w == rest.pop(0)
            continue
        run = b""
        while rest and len(rest[0]) < SIZE and len(run) < SIZE:
            run += rest.pop(0)
        assert w == run
    assert not rest  # every command written, in order, once


def test_a_commit_of_small_commands_is_one_write() -> None:
    assert coalesce([b"*1\r\n$5\r\nMULTI\r\n", b"*1\r\n$4\r\nEXEC\r\n"]) == [
        b"*1\r\n$5\r\nMULTI\r\n*1\r\n$4\r\nEXEC\r\n"
    ]
