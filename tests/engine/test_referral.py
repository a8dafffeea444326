"""Referrals (engine/referral.py): link decisions, the first-earn payout, tiers and caps."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.ledger import balances, member_account
from engine.member import Applied, Credit, MemberState, apply_credit
from engine.referral import (
    LINK,
    REWARD,
    REWARD2,
    UPLINE,
    ReferralRules,
    ReferralState,
    decide_link,
    earn,
    earned_pending,
    must_see,
    on_credit,
    reward,
)
from engine.rules import NetworkRules

USERS = [f"u{i}" for i in range(6)]
pairs = st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(USERS)), max_size=30)


def link_all(links: list[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    graph: dict[str, str] = {}
    outcomes = []
    for x, y in links:
        outcome = decide_link(x, y, lambda u: graph.get(u, ""))
        outcomes.append(outcome)
        if outcome == "ok":
            graph[x] = y
    return graph, outcomes


def chain(graph: dict[str, str], u: str) -> list[str]:
    seen = [u]
    while u in graph:
        u = graph[u]
        assert u not in seen, f"cycle through {u}"
        seen.append(u)
    return seen


@given(pairs)
def test_links_form_a_forest_with_one_referrer_each(links: list[tuple[str, str]]) -> None:
    graph, outcomes = link_all(links)
    for x, y in graph.items():
        assert x != y
        chain(graph, x)  # no cycle
    first: dict[str, str] = {}
    for (x, y), outcome in zip(links, outcomes, strict=True):
        if outcome == "ok":
            assert x not in first, "a second referrer was accepted"
            first[x] = y
    assert first == graph


@given(pairs)
def test_a_refusal_names_its_reason(links: list[tuple[str, str]]) -> None:
    graph: dict[str, str] = {}
    for x, y in links:
        outcome = decide_link(x, y, lambda u: graph.get(u, ""))
        if x == y:
            assert outcome == "self"
        elif x in graph:
            assert outcome == "already"
        elif x in chain(graph, y):
            assert outcome == "cycle"
        else:
            assert outcome == "ok"
            graph[x] = y


def test_the_cycle_rule_examples() -> None:
    graph = {"b": "a", "c": "b"}
    assert decide_link("a", "c", lambda u: graph.get(u, "")) == "cycle"
    assert decide_link("a", "a", lambda u: graph.get(u, "")) == "self"
    assert decide_link("c", "a", lambda u: graph.get(u, "")) == "already"
    assert decide_link("d", "c", lambda u: graph.get(u, "")) == "ok"


RULES = ReferralRules()


def test_first_earn_after_the_link_pays_both_levels_once() -> None:
    s = ReferralState()
    assert on_credit(s, "bob", LINK, "alice", RULES) == []
    assert on_credit(s, "bob", UPLINE, "zoe", RULES) == []
    out = on_credit(s, "bob", "chat", "", RULES)
    assert [(o.user_id, o.rule, o.points) for o in out] == [
        ("alice", REWARD, 100),
        ("zoe", REWARD2, 25),
    ]
    assert s.status == "paid"
    assert on_credit(s, "bob", "watch", "", RULES) == []
    assert on_credit(s, "bob", LINK, "other", RULES) == []
    assert s.referrer == "alice"


def test_zero_turns_a_level_off() -> None:
    for rules, paid in (
        (ReferralRules(reward_points=0), []),
        (ReferralRules(second_level_pct=0), [REWARD]),
    ):
        s = ReferralState()
        on_credit(s, "bob", LINK, "alice", rules)
        on_credit(s, "bob", UPLINE, "zoe", rules)
        assert [o.rule for o in on_credit(s, "bob", "chat", "", rules)] == paid


def test_a_member_who_earned_before_the_link_brings_nothing() -> None:
    s = ReferralState()
    on_credit(s, "bob", "watch", "", RULES)
    on_credit(s, "bob", LINK, "alice", RULES)
    assert s.status == "existing"
    assert on_credit(s, "bob", "chat", "", RULES) == []


def test_an_upline_learned_after_the_first_earn_pays_nothing_more() -> None:
    s = ReferralState()
    on_credit(s, "bob", LINK, "alice", RULES)
    assert [o.rule for o in on_credit(s, "bob", "follow", "", RULES)] == [REWARD]
    on_credit(s, "bob", UPLINE, "zoe", RULES)
    assert on_credit(s, "bob", "chat", "", RULES) == []


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 500)), max_size=40),
    st.integers(0, 5),
    st.sampled_from([100, 125, 150, 200]),
)
def test_reward_respects_the_daily_cap_and_the_tier(
    payouts: list[tuple[int, int]], cap: int, pct: int
) -> None:
    rules = ReferralRules(daily_cap=cap)
    s = ReferralState()
    paid_by_day: dict[int, int] = {}
    total = 0
    for day, points in sorted(payouts, key=lambda p: p[0]):
        amount = reward(s, points, day, pct, rules)
        if amount:
            assert amount == points * pct // 100
            paid_by_day[day] = paid_by_day.get(day, 0) + 1
            total += amount
    assert cap == 0 or all(n <= cap for n in paid_by_day.values())
    assert s.points == total
    assert s.rewarded == sum(paid_by_day.values())
    assert s.rewarded + s.capped == len(payouts)


def credit(
    user: str, ts: float, rule: str, points: int = 0, other: str = "", cid: str = ""
) -> Credit:
    return Credit(cid or f"{user}/{rule}/{ts}", "n", "c", user, user, ts, rule, points, other)


@given(st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(USERS)), max_size=12),
       st.lists(st.tuples(st.sampled_from(USERS), st.integers(0, 200_000)), max_size=30),
       st.integers(0, 3))  # fmt: skip
def test_two_stages_pay_each_new_referee_once_and_balance(
    links: list[tuple[str, str]], earns: list[tuple[str, int]], cap: int
) -> None:
    """The member shard's two stages, run in event-time order: every ledger entry balances,
    a referee pays its referrer at most once (and only one it named before earning), the
    cap holds per recipient and day, and every reward entry names both members."""
    rules = NetworkRules(referral=ReferralRules(daily_cap=cap))
    graph: dict[str, str] = {}
    stream: list[Credit] = []
    for i, (x, y) in enumerate(links):  # links decided in order, at ts 1000 * i
        if decide_link(x, y, lambda u: graph.get(u, "")) == "ok":
            graph[x] = y
            stream.append(credit(x, 1000.0 * i, LINK, other=y))
            if graph.get(y):
                stream.append(credit(x, 1000.0 * i, UPLINE, other=graph[y]))
            for kid in [k for k, v in graph.items() if v == x and k != x]:
                stream.append(credit(kid, 1000.0 * i, UPLINE, other=y, cid=f"{kid}/up"))
    stream += [credit(u, float(ts), "follow", 50) for u, ts in earns]
    stream.sort(key=lambda c: (c.ts, c.id))
    states = {u: MemberState() for u in USERS}
    staged: list[Credit] = []
    for c in stream:  # stage A
        staged.append(c)
        for o in on_credit(states[c.user_id].referral, c.user_id, c.rule, c.other, rules.referral):
            staged.append(credit(o.user_id, c.ts, o.rule, o.points, c.user_id, cid=o.id))
    staged.sort(key=lambda c: (c.ts, c.id))
    out = Applied()
    for c in staged:  # stage B
        apply_credit(states[c.user_id], c, rules, rules.earn, out)
    assert sum(balances(out.entries).values()) == 0
    for u, s in states.items():
        assert s.balance == balances(out.entries).get(member_account("n", u), 0)
    rewards = [e for e in out.entries if e.rule in (REWARD, REWARD2)]
    ids = [e.id for e in rewards]
    assert len(ids) == len(set(ids))
    for e in rewards:
        referee, _, recipient = e.id.split(":", 2)[2].split("/")[0].partition(">")
        assert e.credit == member_account("n", recipient)
        if e.rule == REWARD:
            assert graph[referee] == recipient
        else:
            assert graph[graph[referee]] == recipient
    per_day: dict[tuple[str, int], int] = {}
    for e in rewards:
        k = (e.credit, int(e.ts // 86_400))
        per_day[k] = per_day.get(k, 0) + 1
    assert cap == 0 or all(n <= cap for n in per_day.values())


# Stage A sees only what `must_see` picks; stage B marks the rest `seen` as it applies them
# (`earn`), lagging stage A by any number of releases; a link asks `earned_pending` about
# what stage B still holds. Whatever the cuts and the lag, that is `on_credit` over every
# credit in order: the same referral states and the same rewards.
FEW = USERS[:3]
credit_seqs = st.lists(
    st.tuples(st.sampled_from(["follow", "watch", LINK, UPLINE, REWARD]),
              st.sampled_from(FEW), st.sampled_from(FEW)),
    max_size=40,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(credit_seqs, st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2)), max_size=40))
@example([("follow", "u1", "u2"), (LINK, "u1", "u2")], [(1, 1)])
def test_stage_a_seeing_only_what_must_see_picks_is_on_credit_over_everything(
    credits: list[tuple[str, str, str]], cuts: list[tuple[int, int]]
) -> None:
    """Each cut: a release's size, and how many releases stage B then lags behind."""
    rules = ReferralRules()
    plain: dict[str, ReferralState] = {u: ReferralState() for u in USERS}
    plain_out = [
        o.id for rule, u, other in credits for o in on_credit(plain[u], u, rule, other, rules)
    ]
    states: dict[str, ReferralState] = {u: ReferralState() for u in USERS}
    linked: set[str] = set()
    pending: list[list[tuple[str, str]]] = []  # releases stage B has yet to apply
    out: list[str] = []
    at = 0
    for size, lag in [*cuts, (len(credits), 0)]:
        release = credits[at : at + size]
        at += len(release)
        rls, members = [c[0] for c in release], [c[1] for c in release]
        picked, targets = must_see(rls, members, linked)
        earned = earned_pending(targets, [c for part in pending for c in part])
        for i in picked:
            rule, u, other = release[i]
            if rule == LINK and u in earned:
                states[u].seen = True
            out += [o.id for o in on_credit(states[u], u, rule, other, rules)]
            (linked.add if states[u].status == "linked" else linked.discard)(u)
        pending.append(list(zip(rls, members, strict=True)))
        while len(pending) > lag:  # stage B applies all but the last `lag` releases
            for rule, u in pending.pop(0):
                earn(states[u], rule)
    assert not pending
    assert out == plain_out
    assert states == plain
