"""ReorderBuffer: whatever the pushes and watermark moves, releases come in (ts, key, arrival)
order, each item once, only when strictly older than the watermark (both release paths: a
slice of what is held, and all of it at once; batches that follow on and that overlap); and
so does a buffer that takes what another releases (a member shard's stage B after A)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.watermark import ReorderBuffer

item = st.tuples(st.integers(0, 40).map(float), st.sampled_from("abc"))
step = st.one_of(
    st.tuples(st.just("push"), st.lists(item, max_size=3)),
    st.tuples(st.just("push_all"), st.lists(item, max_size=60)),
    st.tuples(st.just("push_numbered"), st.lists(item, max_size=60)),
    st.tuples(st.just("advance"), st.integers(0, 45).map(float)),
)


def _release(
    held: list[tuple[float, str, int]], watermark: float
) -> tuple[list[tuple[float, str, int]], list[tuple[float, str, int]]]:
    """The reference: what a release at `watermark` gives (in order), and what stays held."""
    return sorted(x for x in held if x[0] < watermark), [x for x in held if x[0] >= watermark]


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=30))
def test_releases_in_order_once(steps: list[tuple[str, object]]) -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(0.0)
    held: list[tuple[float, str, int]] = []  # the reference: sorted on release
    released: list[tuple[float, str, int]] = []
    n = 0
    for kind, arg in steps:
        if kind == "advance":
            assert isinstance(arg, float)
            buf.advance_to(arg)
            got = [(ts, key, -it) for ts, key, _, it in buf.release_entries()]
            want, held = _release(held, buf.watermark)
            assert got == want
            released += got
            continue
        assert isinstance(arg, list)
        new = [(ts, key, n + i) for i, (ts, key) in enumerate(arg)]
        n += len(new)
        # items order against arrival: only the sequence numbers break (ts, key) ties
        if kind == "push":
            for ts, key, i in new:
                buf.push(ts, key, -i)
        elif kind == "push_all":
            buf.push_all([(ts, key, -i) for ts, key, i in new])
        else:  # numbered by the caller, with gaps
            seq = buf.reserve(2 * len(new) + 1)
            buf.push_numbered([(ts, key, seq + 2 * j, -i) for j, (ts, key, i) in enumerate(new)])
        held += new
        assert len(buf) == len(held)
    assert sorted(i for _, _, i in released + held) == list(range(n))


chained = st.one_of(
    st.tuples(st.just("a"), st.lists(item, max_size=30)),
    st.tuples(st.just("b"), st.lists(item, max_size=5)),
    st.tuples(st.just("advance_a"), st.integers(0, 45).map(float)),
    st.tuples(st.just("advance_b"), st.integers(0, 45).map(float)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(chained, max_size=40))
def test_a_buffer_after_another_takes_its_releases_as_they_are(
    steps: list[tuple[str, object]],
) -> None:
    """B (built `after` A) takes A's released entries with push_entries and items of its
    own with push_all; B releases everything it holds in (ts, key, arrival) order, arrival
    counted over both buffers."""
    a: ReorderBuffer[int] = ReorderBuffer(0.0)
    b: ReorderBuffer[int] = ReorderBuffer(0.0, after=a)
    held_a: list[tuple[float, str, int]] = []
    held_b: list[tuple[float, str, int]] = []
    n = 0
    for kind, arg in steps:
        if kind == "advance_a":
            assert isinstance(arg, float)
            a.advance_to(arg)
            moved = a.release_entries()
            want, held_a = _release(held_a, a.watermark)
            assert [(ts, key, -it) for ts, key, _, it in moved] == want
            b.push_entries(moved)
            held_b += want
        elif kind == "advance_b":
            assert isinstance(arg, float)
            b.advance_to(arg)
            want, held_b = _release(held_b, b.watermark)
            assert b.release() == [-arrival for _, _, arrival in want]
        else:
            assert isinstance(arg, list)
            new = [(ts, key, n + i) for i, (ts, key) in enumerate(arg)]
            n += len(new)
            # items order against arrival: only the sequence numbers break (ts, key) ties
            (a if kind == "a" else b).push_all([(ts, key, -arrival) for ts, key, arrival in new])
            (held_a if kind == "a" else held_b).extend(new)
        assert (len(a), len(b)) == (len(held_a), len(held_b))
