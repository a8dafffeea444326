"""engine/payout.py: admission, the state machine, backoff with jitter, batching."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine import payout as po
from engine.payout import PayoutError, PayoutRules, Request

RULES = PayoutRules(
    units_per_point_num=5, units_per_point_den=2, min_points=10, daily_limit_points=1_000,
    max_attempts=4, backoff_base_s=1.0, backoff_max_s=60.0, lease_s=30.0, batch_size=3,
)  # fmt: skip
URL = "http://127.0.0.1:1/hook"


def req(key: str = "k1", user: str = "u1", points: int = 100, **kw: object) -> Request:
    kw.setdefault("destination", URL)
    return Request(network="n", user_id=user, points=points, key=key, **kw)  # type: ignore[arg-type]


def test_admit_converts_and_ids_are_stable() -> None:
    code, p = po.admit(RULES, req(points=101), 5.0, 0, None)
    assert code == po.OK
    assert p is not None
    assert (p.units, p.status, p.id) == (252, "requested", po.payout_id("n", "k1"))
    assert po.admit(RULES, req(points=101), 9.0, 0, p) == (po.OK, p), "a replay answers as before"
    assert po.admit(RULES, req(points=102), 9.0, 0, p) == (po.CONFLICT, None)


@given(st.integers(1, 10**9), st.integers(0, 24))
def test_token_amounts_beyond_64_bits_keep_and_encode(points: int, decimals: int) -> None:
    """18-decimal tokens pass msgpack's 64 bits at ~18.4 tokens: kept exactly, stored as
    before below it."""
    rules = PayoutRules(units_per_point_num=10**decimals, min_points=1, daily_limit_points=0)
    code, p = po.admit(rules, req(points=points), 0.0, 0, None)
    assert code == po.OK
    assert p is not None
    back = po.payout_decoder.decode(po.payout_encoder.encode(p))
    assert back == p
    assert back.amount == points * 10**decimals
    assert isinstance(back.units, int) == (back.amount < 2**63)


def test_minimum_and_daily_limit() -> None:
    assert po.admit(RULES, req(points=9), 0.0, 0, None)[0] == po.BELOW_MINIMUM
    assert po.admit(RULES, req(points=500), 0.0, 600, None)[0] == po.DAILY_LIMIT
    assert po.admit(RULES, req(points=400), 0.0, 600, None)[0] == po.OK


@pytest.mark.parametrize(
    ("field", "bad"),
    [("points", req(points=0)), ("sink", req(sink="fax")), ("destination", req(destination="x")),
     ("key", req(key="")), ("user_id", req(user="a\nb"))],
)  # fmt: skip
def test_bad_requests_name_the_field(field: str, bad: Request) -> None:
    with pytest.raises(PayoutError) as err:
        po.admit(RULES, bad, 0.0, 0, None)
    assert err.value.field == field


@given(
    st.lists(
        st.tuples(st.sampled_from(["u1", "u2"]), st.integers(1, 600), st.sampled_from("abcdef")),
        max_size=30,
    )
)
def test_a_batch_never_passes_the_daily_limit(items: list[tuple[str, int, str]]) -> None:
    reqs = [req(key=k, user=u, points=p) for u, p, k in items]
    out = po.admit_many(RULES, reqs, 0.0, {}, {})
    per: dict[str, int] = {}
    seen: dict[str, po.Payout] = {}
    for r, (code, p) in zip(reqs, out, strict=True):
        if code == po.OK:
            assert p is not None
            if p.id not in seen:
                seen[p.id] = p
                per[r.user_id] = per.get(r.user_id, 0) + p.points
            else:
                assert seen[p.id] is p, "a repeated key replays the first payout"
    assert all(v <= RULES.daily_limit_points for v in per.values())


@given(st.integers(1, 40), st.floats(0.0, 0.999999))
def test_backoff_grows_is_capped_and_jittered(attempts: int, u: float) -> None:
    d = po.backoff_s(RULES, attempts, u)
    exp = min(RULES.backoff_max_s, RULES.backoff_base_s * 2 ** (attempts - 1))
    assert exp / 2 <= d <= exp
    assert po.backoff_s(RULES, attempts + 1, u) >= d


def test_jitter_is_reproducible_from_a_seed() -> None:
    a = [po.backoff_s(RULES, 3, random.Random(7).random()) for _ in range(3)]
    b = [po.backoff_s(RULES, 3, random.Random(7).random()) for _ in range(3)]
    assert a == b


def test_dead_after_max_attempts_then_retry_or_void() -> None:
    _, p = po.admit(RULES, req(), 0.0, 0, None)
    assert p is not None
    p = po.reserved(p, 1.0)
    for i in range(RULES.max_attempts):
        p = po.sending(RULES, p, 2.0 + i)
        assert p.next_at == 2.0 + i + RULES.lease_s
        p = po.failed(RULES, p, 3.0 + i, "HTTP 500", 0.5)
    assert (p.status, p.reason, p.attempts) == ("dead", "HTTP 500", RULES.max_attempts)
    again = po.retried(p, 10.0)
    assert (again.status, again.attempts, again.next_at) == ("reserved", 0, 10.0)
    v = po.voided(p, 11.0)
    assert (v.status, v.refund) == ("voided", True)
    with pytest.raises(PayoutError):
        po.retried(v, 12.0)


def test_410_is_final_and_a_sending_payout_cannot_be_voided() -> None:
    _, p = po.admit(RULES, req(), 0.0, 0, None)
    assert p is not None
    s = po.sending(RULES, po.reserved(p, 0.0), 0.0)
    with pytest.raises(PayoutError) as err:
        po.voided(s, 1.0)
    assert err.value.code == po.BAD_TRANSITION
    assert po.failed(RULES, s, 1.0, "HTTP 410", 0.1, final=True).status == "dead"
    assert po.voided(p, 1.0).refund is False, "nothing was reserved: nothing to refund"


@given(st.lists(st.tuples(st.sampled_from(po.SINKS), st.sampled_from(["n", "m"])), max_size=40),
       st.integers(1, 7))  # fmt: skip
def test_batches_cover_each_payout_once_and_never_mix(
    kinds: list[tuple[str, str]], size: int
) -> None:
    ps = [
        po.Payout(
            id=f"p{i}",
            network=n,
            user_id="u",
            points=1,
            units=1,
            sink=s,
            destination="",
            key=f"k{i}",
            digest=b"",
            created_at=0.0,
            next_at=float(i % 3),
        )
        for i, (s, n) in enumerate(kinds)
    ]
    out = po.batches(ps, size)
    assert sorted(p.id for b in out for p in b) == sorted(p.id for p in ps)
    for b in out:
        assert 1 <= len(b) <= size
        assert len({(p.sink, p.network) for p in b}) == 1


class PayoutMachine(RuleBasedStateMachine):
    """Random admin and sender moves: the machine never leaves its transitions, a settled
    payout never changes, and points are owed back exactly when reserved and then voided."""

    def __init__(self) -> None:
        super().__init__()
        _, p = po.admit(RULES, req(), 0.0, 0, None)
        assert p is not None
        self.p = p
        self.now = 0.0
        self.was_reserved = False
        self.settled_once = False

    def _try(self, f: object, *args: object) -> None:
        before = self.p
        try:
            self.p = f(*args)  # type: ignore[operator]
        except PayoutError as err:
            code = err.code
        else:
            assert self.p.status in po.TRANSITIONS[before.status]
            return
        assert code == po.BAD_TRANSITION
        assert self.p == before

    @rule(dt=st.floats(0, 100))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def reserve(self) -> None:
        self._try(po.reserved, self.p, self.now)
        self.was_reserved |= self.p.status == "reserved"

    @rule()
    def send(self) -> None:
        self._try(po.sending, RULES, self.p, self.now)

    @rule()
    def settle(self) -> None:
        self._try(po.settled, self.p, self.now)
        self.settled_once |= self.p.status == "settled"

    @rule(u=st.floats(0, 0.99), final=st.booleans())
    def fail(self, u: float, final: bool) -> None:
        was = self.p.status
        self._try(po.failed, RULES, self.p, self.now, "boom", u)
        if was == "sending" and self.p.status == "reserved":
            assert self.p.next_at >= self.now

    @rule()
    def retry(self) -> None:
        self._try(po.retried, self.p, self.now)

    @precondition(lambda self: self.p.status != "sending")
    @rule()
    def void(self) -> None:
        self._try(po.voided, self.p, self.now)

    @invariant()
    def consistent(self) -> None:
        if self.settled_once:
            assert self.p.status == "settled"
        if self.p.status == "voided":
            assert self.p.refund == self.was_reserved or self.p.reason != "voided by admin"
        assert self.p.attempts <= RULES.max_attempts


TestPayoutMachine = PayoutMachine.TestCase
TestPayoutMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
