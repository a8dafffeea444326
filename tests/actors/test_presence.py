"""The presence timeout through the real channel shards (Ray + Redis): a lurker who only
JOINs earns watch points until they have been silent for presence_timeout_s, then leaves
the stored presence; a chatter stays; the real shards pay what the reference model pays."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
import redis

from actors.client import RallyClient
from actors.config import RuntimeConfig
from actors.keys import Keys
from engine import timelog
from engine.events import Chat, Event, Join, Online
from engine.member import state_decoder
from engine.reference import Reference
from engine.routing import shard_of
from engine.rules import EarnRules, NetworkRules, RuleBook, StreakRules
from tests.actors.conftest import append, make_cfg

NET, CH = "n", "c"
EARN = EarnRules(watch_interval_s=60, watch_points_live=10, presence_timeout_s=180,
                 chat_points=0, welcome_points=0, active_chatter_bonus=0)  # fmt: skip
BOOK = RuleBook({NET: NetworkRules(earn=EARN, streak=StreakRules(points_per_day=0))})


@pytest.fixture
def rally(ray_cluster: None, redis_server, namespace: str
          ) -> Iterator[tuple[RallyClient, RuntimeConfig]]:  # fmt: skip
    cfg = make_cfg(redis_server.url, namespace, BOOK)
    client = RallyClient(cfg).start(scheduler=False)
    yield client, cfg
    client.stop()


def test_a_silent_lurker_leaves_after_the_timeout(
    rally: tuple[RallyClient, RuntimeConfig], redis_client: redis.Redis
) -> None:
    client, cfg = rally
    keys = Keys(cfg.namespace)
    t0 = math.floor(time.time() / 60) * 60 - 1_200.0  # twenty minutes of event time, all past
    events: list[Event] = [
        Online(id="on", network=NET, channel=CH, ts=t0),
        Join(id="j-l", network=NET, channel=CH, ts=t0 + 1, user_id="lurker"),
        Join(id="j-t", network=NET, channel=CH, ts=t0 + 1, user_id="talker"),
    ]
    events += [Chat(id=f"c{i}", network=NET, channel=CH, ts=t0 + 30 + 60 * i, user_id="talker",
                    text="hi") for i in range(15)]  # fmt: skip
    append(redis_client, cfg, events)
    assert client.wait_idle(60)
    nc = f"{NET}:{CH}"
    assert set(redis_client.hkeys(keys.presence(nc))) == {b"talker"}
    assert set(timelog.replay(redis_client.get(keys.seen_log(nc)))) == {"talker"}
    ref = Reference(BOOK)
    ref.ingest(events, 0.0)
    ref.finish()
    for user in ("lurker", "talker"):
        raw = redis_client.hget(keys.mstate, f"{NET}:{user}")
        assert raw is not None
        assert state_decoder.decode(raw).balance == ref.members[(NET, user)].balance
    # ticks t0+60, +120, +180 pay the lurker (seen at t0+1); at t0+240 they have left
    assert ref.members[(NET, "lurker")].balance == 3 * 10
    assert ref.members[(NET, "talker")].balance == 14 * 10  # every tick to the last chat


BONUS = EarnRules(watch_interval_s=60, watch_points_live=10, presence_timeout_s=180,
                  chat_points=0, welcome_points=0, active_chatter_bonus=5,
                  active_chatter_window_s=90)  # fmt: skip
BONUS_BOOK = RuleBook({NET: NetworkRules(earn=BONUS, streak=StreakRules(points_per_day=0))})


def test_times_stored_in_sorted_sets_are_read_then_replaced_by_logs(
    ray_cluster: None, redis_server, namespace: str, redis_client: redis.Redis
) -> None:
    """A channel stored before the time logs (chat and sign-of-life times in sorted sets):
    a new shard instance reads them, pays what the reference pays over all the events (the
    lurker still leaves on time, the chatter's bonus still counts its earlier chat), and
    replaces them with the logs at the channel's next change."""
    cfg = make_cfg(redis_server.url, namespace, BONUS_BOOK)
    keys, nc = Keys(cfg.namespace), f"{NET}:{CH}"
    t0 = math.floor(time.time() / 60) * 60 - 1_200.0
    first: list[Event] = [
        Online(id="on", network=NET, channel=CH, ts=t0),
        Join(id="j-l", network=NET, channel=CH, ts=t0 + 1, user_id="lurker"),
        Join(id="j-t", network=NET, channel=CH, ts=t0 + 1, user_id="talker"),
        Chat(id="c0", network=NET, channel=CH, ts=t0 + 50, user_id="talker", text="hi"),
    ]
    later: list[Event] = [Chat(id=f"c{i}", network=NET, channel=CH, ts=t0 + 50 + 100 * i,
                               user_id="talker", text="hi") for i in range(1, 6)]  # fmt: skip
    client = RallyClient(cfg).start(scheduler=False)
    try:
        append(redis_client, cfg, first)
        assert client.wait_idle(60)
        for log, zset in ((keys.chat_log(nc), keys.chatters(nc)),
                          (keys.seen_log(nc), keys.present_seen(nc))):  # fmt: skip
            times = timelog.replay(redis_client.get(log))
            assert times, log
            redis_client.delete(log)
            redis_client.zadd(zset, times)
        client.kill9(f"channel-{shard_of(nc, cfg.channel_shards)}")
        append(redis_client, cfg, later)
        assert client.wait_idle(60)
    finally:
        client.stop()
    assert not redis_client.exists(keys.chatters(nc), keys.present_seen(nc))
    assert set(timelog.replay(redis_client.get(keys.seen_log(nc)))) == {"talker"}
    assert set(timelog.replay(redis_client.get(keys.chat_log(nc)))) == {"talker"}
    ref = Reference(BONUS_BOOK)
    ref.ingest(first + later, 0.0)
    ref.finish()
    for user in ("lurker", "talker"):
        raw = redis_client.hget(keys.mstate, f"{NET}:{user}")
        assert raw is not None
        assert state_decoder.decode(raw).balance == ref.members[(NET, user)].balance, user
    assert ref.members[(NET, "lurker")].balance == 3 * 10
    assert ref.members[(NET, "talker")].balance > 3 * 10 + 5  # bonus ticks paid
