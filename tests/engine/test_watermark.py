"""ReorderBuffer: whatever the pushes and watermark moves, releases come in (ts, key, arrival)
order, each item once, only when strictly older than the watermark (both release paths: a
slice of what is held, and all of it at once; batches that follow on and that overlap)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.watermark import ReorderBuffer

item = st.tuples(st.integers(0, 40).map(float), st.sampled_from("abc"))
step = st.one_of(
    st.tuples(st.just("push"), st.lists(item, max_size=3)),
    st.tuples(st.just("push_all"), st.lists(item, max_size=60)),
    st.tuples(st.just("advance"), st.integers(0, 45).map(float)),
)


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
            got = buf.release_keyed()
            want = sorted(x for x in held if x[0] < buf.watermark)
            held = [x for x in held if x[0] >= buf.watermark]
            assert got == want
            released += got
            continue
        assert isinstance(arg, list)
        new = [(ts, key, n + i) for i, (ts, key) in enumerate(arg)]
        n += len(new)
        if kind == "push":
            for ts, key, i in new:
                buf.push(ts, key, i)
        else:
            buf.push_all(new)
        held += new
        assert len(buf) == len(held)
    assert sorted(i for _, _, i in released + held) == list(range(n))
