"""Referrals: a member brings a friend; when the friend first earns, both levels up are paid.

The rules, and why each is decided where it is (the determinism property: the same
accepted events give the same balances whatever the batching, arrival order, duplicates or
crashes):

**Links are events, decided in one place in event-time order.** A `referral` event (or the
member API call, which the gateway turns into one) says "referee X was brought by Y". Every
referral event of a network is routed to one ingest partition (the pseudo-channel
`REFERRAL_CHANNEL`), whose channel shard applies them, like every event, in (ts, network,
id) order once its watermark passes them. That shard holds the network's referral graph
(referee -> referrer), so `decide_link` sees exactly the links of events ordered before
this one, whatever order they arrived in:
  - no self-referral (Y == X: refused `self`);
  - at most one referrer: X already linked (by an earlier event in that order): `already`;
  - no cycles: following Y's referrer chain reaches X: the link would close a cycle at its
    event time: `cycle` (the graph therefore stays a forest, and the walk ends).
The first link of X in (ts, id) order wins; a replayed or duplicated event is deduplicated
by id before it is applied. Unknown members can be linked: X and Y need not have earned.

**The chain known at each moment is sent to the referee.** An accepted link sends the
referee's member shard a `referral_link` credit (the referrer) and, if the referrer was
already linked, a `referral_upline` credit (the referrer's referrer: the second level).
When a member that others already named as referrer is linked later, each of its referees
gets a `referral_upline` credit at that link's event time. So the referee's member actor
learns its two levels, in event-time order, as the graph was at each event time.

**Paid on the first earn, emitted as credits with their own watermark.** The referee's
member shard applies credits in two stages. Stage A runs at the channel partitions'
watermark and only follows what decides a payout (the link, the upline, and whether the
member has had a credit from a channel yet): `on_credit` there turns the referee's first
channel credit after a link into a `referral` credit to the referrer and a `referral2`
credit to the upline, dated at that first credit's ts, with ids derived from the referee
(one payout per referee, ever). A referee who had already earned when linked brings no
reward (`existing`): only new members count. Stage A's state depends on channel credits
alone, so it never waits for another member shard. It need not read every member's state
either (`must_see`): besides links and uplines, only a member linked and waiting for its
first earn has anything to decide; any other channel credit only makes its member seen,
which stage B notes as it applies the credit (`earn`), and a link asks what stage B has yet
to apply (`earned_pending`). Each member shard publishes its stage-A
watermark to the others with the referral credits it sends; stage B, where balances
change, applies channel and referral credits together, in (ts, network, id) order, once
the channel partitions' watermarks *and* every member shard's stage-A watermark have
passed them. The reward is then `reward` (engine/member.py `apply_referral`): multiplied by
the recipient's tier at that event time, and counted against the recipient's daily cap for
the UTC day of that event time. Since nothing a shard releases depends on arrival order,
neither do the payouts.

Why two stages and not one: if rewards were emitted where balances change, a shard's mark
would wait for the other shards' marks and theirs for its own (a deadlock, or an order
that depends on timing). Stage A's marks follow the channel partitions' alone, so stage B
waits at most one member-shard hop. A reward never counts as an earn in stage A (nor do the
link and upline credits): only channel credits make a member "not new".

Limits: a network's referrals share one ingest partition (referrals are rare next to chat
and presence), and a link walks the referrer's chain with one Redis read per member not yet
cached (chains are short; `MAX_CHAIN` bounds the walk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet

import msgspec

REFERRAL_CHANNEL = "_referrals"
"""The pseudo-channel every referral event of a network is routed and applied by."""
LINK, UPLINE, REWARD, REWARD2 = "referral_link", "referral_upline", "referral", "referral2"
"""Credit rules: the link and the upline (stage A), the two levels of reward (stage B)."""
STAGE_A_RULES = frozenset({LINK, UPLINE})
REWARD_RULES = frozenset({REWARD, REWARD2})
SPECIAL_RULES = STAGE_A_RULES | REWARD_RULES
MAX_CHAIN = 10_000
"""Longest referrer chain `decide_link` walks (the graph is a forest: a walk ends)."""


class ReferralRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What bringing a new member pays, configured per network."""

    reward_points: int = 100
    """Paid to the referrer when the referee first earns, times the referrer's tier; 0 = off."""
    second_level_pct: int = 25
    """The referrer's own referrer gets this share of `reward_points` (times their tier)."""
    daily_cap: int = 10
    """Most referral payouts (either level) one member receives per UTC day; 0 = no cap."""

    def __post_init__(self) -> None:
        if min(self.reward_points, self.second_level_pct, self.daily_cap) < 0:
            raise ValueError("referral: values must not be negative")
        if self.second_level_pct > 100:
            raise ValueError("referral: second_level_pct must be 0-100")


class ReferralState(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """A member's referral facts (in MemberState). Stage A fields: referrer, upline, seen,
    status. Stage B fields: the rewards this member received as a referrer."""

    referrer: str = ""
    upline: str = ""
    seen: bool = False
    """A channel credit has reached stage A (the member has earned)."""
    status: str = ""
    """"" (not referred), "linked" (waiting for the first earn), "paid", "existing"."""
    day: int = -1
    day_count: int = 0
    """Referral payouts received on UTC day `day`."""
    rewarded: int = 0
    """Referral payouts received, either level."""
    capped: int = 0
    """Referral payouts not received because of the daily cap."""
    points: int = 0
    """Points received from referral payouts."""


def decide_link(referee: str, referrer: str, referrer_of: Callable[[str], str]) -> str:
    """Whether `referee` may be linked to `referrer` given the links so far
    (`referrer_of(x)`: x's referrer, or ""): "ok", "self", "already" or "cycle"."""
    if not referrer or referee == referrer:
        return "self"
    if referrer_of(referee):
        return "already"
    node = referrer
    for _ in range(MAX_CHAIN):
        if node == referee:
            return "cycle"
        node = referrer_of(node)
        if not node:
            return "ok"
    return "cycle"  # a chain this long is refused like a cycle


def link(
    referee: str,
    referrer: str,
    referrer_of: Callable[[str], str],
    kids_of: Callable[[str], list[str]],
) -> tuple[str, list[Out]]:
    """Decide a referral event (`decide_link`); an accepted one returns the credits it sends,
    each (id, member, rule, other member), all dated at the event: the referee's link, its
    upline if the referrer has a referrer, and an upline for each member that named the
    referee (`kids_of`) while it had no referrer. The caller records the link."""
    outcome = decide_link(referee, referrer, referrer_of)
    if outcome != "ok":
        return outcome, []
    out = [Out(f"ref:{referee}/link", referee, LINK, 0, referrer)]
    upline = referrer_of(referrer)
    if upline:
        out.append(Out(f"ref:{referee}/upline", referee, UPLINE, 0, upline))
    for kid in kids_of(referee):
        out.append(Out(f"ref:{kid}/upline", kid, UPLINE, 0, referrer))
    return outcome, out


class Out(msgspec.Struct, frozen=True):
    """A referral credit: `points` for `user_id` under `rule`, about member `other` (for a
    reward, `other` is left to the caller: the member whose credit caused it)."""

    id: str
    user_id: str
    rule: str
    points: int
    other: str = ""


def on_credit(
    state: ReferralState, user_id: str, rule: str, other: str, rules: ReferralRules
) -> list[Out]:
    """Stage A: one credit of `rule` reached member `user_id`, in event-time order. Returns
    the referral credits it causes (dated by the caller at the credit's ts)."""
    if rule == LINK:
        if not state.referrer:  # the graph sends one link per member; a replay changes nothing
            state.referrer = other
            state.status = "existing" if state.seen else "linked"
        return []
    if rule == UPLINE:
        if not state.upline:
            state.upline = other
        return []
    if rule in REWARD_RULES:
        return []
    state.seen = True
    if state.status != "linked":
        return []
    state.status = "paid"
    out: list[Out] = []
    if rules.reward_points > 0:
        out.append(
            Out(f"ref:{user_id}>{state.referrer}", state.referrer, REWARD, rules.reward_points)
        )
        share = rules.reward_points * rules.second_level_pct // 100
        if state.upline and share > 0:
            out.append(Out(f"ref2:{user_id}>{state.upline}", state.upline, REWARD2, share))
    return out


def must_see(
    rules: Sequence[str], members: Sequence[str], linked: AbstractSet[str]
) -> tuple[list[int], set[str]]:
    """Which credits of a stage-A release (rules and members, network:user, in order)
    `on_credit` must see: links and uplines, and the channel credits of members waiting for
    their first earn (`linked`, or linked in this release). Returns their positions, and the
    members linked in the release.

    Every other channel credit only makes its member `seen`, and a member's first channel
    credit can change nothing else: stage B marks it (`earn`) as it applies the credit,
    and a link asks `earned_pending` about what stage B has yet to apply. So a release of routine
    credits (a watch tick) needs no member's state in stage A."""
    targets = {m for r, m in zip(rules, members, strict=True) if r == LINK}
    picked = [
        i
        for i, (r, m) in enumerate(zip(rules, members, strict=True))
        if r in STAGE_A_RULES or ((m in linked or m in targets) and r not in REWARD_RULES)
    ]
    return picked, targets


def earn(state: ReferralState, rule: str) -> None:
    """Stage B applies a credit of `rule`: a channel credit means the member has earned
    (what `on_credit` notes in stage A for the credits `must_see` picks)."""
    if rule not in SPECIAL_RULES and not state.seen:
        state.seen = True


def earned_pending(targets: AbstractSet[str], pending: Iterable[tuple[str, str]]) -> set[str]:
    """The members of `targets` with a channel credit among `pending` ((rule, member) of
    what stage A released before and stage B has yet to apply): a link finds them seen, as
    `on_credit` in order would have. (A channel credit of the same release before the link
    is one `must_see` picks: `on_credit` sees it first.)"""
    return {m for r, m in pending if m in targets and r not in SPECIAL_RULES}


def reward(
    state: ReferralState, points: int, day: int, multiplier_pct: int, rules: ReferralRules
) -> int:
    """Stage B: what a referral credit of `points` on UTC `day` pays the recipient whose tier
    multiplies by `multiplier_pct` (0 when the daily cap is reached); counts it."""
    if state.day != day:
        state.day = day
        state.day_count = 0
    if rules.daily_cap and state.day_count >= rules.daily_cap:
        state.capped += 1
        return 0
    amount = points * multiplier_pct // 100
    if amount <= 0:
        return 0
    state.day_count += 1
    state.rewarded += 1
    state.points += amount
    return amount
