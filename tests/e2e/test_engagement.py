"""Engagement rules through a deployment: the cross-feature weekly bonus is noted as credits
apply, shown on the member endpoint, paid once by the scheduler's job; `rally audit` passes."""

from __future__ import annotations

import time
import urllib.request

import redis

from actors.keys import Keys
from actors.scheduler import pay_weekly_bonus
from engine import weekly
from engine.member import DAY_S
from tests.e2e.conftest import Deployment, get, post, rally_cli

NET = "tv"


def test_weekly_bonus_breakdown_and_payout(deployment: Deployment) -> None:
    this_week = weekly.week_of_day(int(time.time() // DAY_S))
    monday = weekly.week_start(this_week - 1)  # last week: wholly in the past
    events = [{"kind": "online", "id": "on", "network": NET, "channel": "c2", "ts": monday + 5},
              {"kind": "join", "id": "j", "network": NET, "channel": "c2", "ts": monday + 10,
               "user_id": "ann", "user_name": "Ann"}]  # fmt: skip
    for d in range(3):  # chats on three days: a feature; watching: another
        events.append({"kind": "chat", "id": f"c{d}", "network": NET, "channel": "c2",
                       "ts": monday + d * DAY_S + 100, "user_id": "ann", "text": "hi"})  # fmt: skip
    status, body = post(deployment.url, events)
    assert status == 202, body
    assert deployment.client.wait_idle(60)
    status, member = get(deployment.url, f"/v1/members/ann?network={NET}")
    assert status == 200, member
    last = member["weekly_bonus"]["last_week"]
    assert (last["watched"], last["chat_days"], last["chatted"], last["attended"]) == (
        True, 3, True, False
    )  # fmt: skip
    assert (last["features"], last["multiplier_pct"], last["bonus_points"]) == (2, 150, 75)
    assert member["weekly_bonus"]["this_week"]["features"] == 0
    before = member["balance"]

    rules = deployment.settings.rulebook().network(NET).weekly
    cfg = deployment.settings.runtime(deployment.gateway.redis_url)
    r = redis.Redis.from_url(deployment.gateway.redis_url)
    due = weekly.first_due(monday, rules)
    assert pay_weekly_bonus(r, Keys(cfg.namespace), cfg, NET, rules, due) == (1, 75)
    pay_weekly_bonus(r, Keys(cfg.namespace), cfg, NET, rules, due)  # a re-run: paid once
    status, member = get(deployment.url, f"/v1/members/ann?network={NET}")
    assert member["balance"] == before + 75
    status, ledger = get(deployment.url, f"/v1/members/ann/ledger?network={NET}&limit=5")
    assert status == 200, ledger
    bonus = [e for e in ledger["entries"] if e["rule"] == "weekly_bonus"]
    assert [(e["amount"], e["debit"]) for e in bonus] == [(75, f"bonus:{NET}")]
    audit = rally_cli("audit", "--config", str(deployment.config))
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_farm_in_every_channel_is_flagged_ordinary_viewers_are_not(
    deployment: Deployment,
) -> None:
    t0 = weekly.week_start(weekly.week_of_day(int(time.time() // DAY_S)) - 2)
    channels = [f"f{i}" for i in range(6)]
    events: list[dict] = []
    for ch in channels:
        events.append({"kind": "online", "id": f"on-{ch}", "network": NET, "channel": ch, "ts": t0})
        for b in ("farm1", "farm2"):
            events.append({"kind": "join", "id": f"j-{ch}-{b}", "network": NET, "channel": ch,
                           "ts": t0 + 1, "user_id": b})  # fmt: skip
    events.append({"kind": "join", "id": "j-human", "network": NET, "channel": "f0",
                   "ts": t0 + 1, "user_id": "human"})  # fmt: skip
    for k in range(1, 4):  # keep the channels' presence fresh for three ticks
        for ch in channels:
            events.append({"kind": "follow", "id": f"x-{ch}-{k}", "network": NET, "channel": ch,
                           "ts": t0 + k * 300 + 5, "user_id": f"fan-{ch}"})  # fmt: skip
    for i in range(6):  # a script posting the same line; a human chatting in two channels
        events.append({"kind": "chat", "id": f"spam-{i}", "network": NET, "channel": "f1",
                       "ts": t0 + 20 + 40 * i, "user_id": "spam1", "text": "FREE points!!"})  # fmt: skip
        events.append({"kind": "chat", "id": f"talk-{i}", "network": NET, "channel": f"f{i % 2}",
                       "ts": t0 + 30 + 40 * i, "user_id": "human", "text": f"hi, take {i}"})  # fmt: skip
    status, body = post(deployment.url, events)
    assert status == 202, body
    assert deployment.client.wait_idle(60)
    status, view = get(deployment.url, f"/v1/quality/flagged?network={NET}")
    assert status == 200, view
    flagged = {m["user_id"]: m for m in view["members"]}
    assert set(flagged) == {"farm1", "farm2", "spam1"}
    assert flagged["spam1"]["reasons"] == ["repeated_chat"]
    assert flagged["spam1"]["repeated_chats"] == 3  # the line earned chat_repeats_max (3) times
    # new accounts both: the new-account limit (3) bites before max_channels_at_once (4)
    assert flagged["farm1"]["reasons"] == ["multi_channel", "new_account"]
    assert flagged["farm1"]["account_age_days"] == 0
    assert flagged["farm1"]["withheld"] > 0
    status, human = get(deployment.url, f"/v1/members/human?network={NET}")
    status, farm = get(deployment.url, f"/v1/members/farm1?network={NET}")
    # the farm earns from at most new_account_max_channels (3) of its six channels
    assert farm["channels"]
    assert len(farm["channels"]) == 3
    assert human["balance"] > 0
    with urllib.request.urlopen(deployment.url + "/metrics", timeout=30) as resp:
        metrics = resp.read().decode()
    assert "rally_watch_points_withheld" in metrics
    assert "rally_chat_points_withheld_total 3.0" in metrics
