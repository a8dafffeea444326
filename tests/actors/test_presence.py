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
from engine.events import Chat, Event, Join, Online
from engine.member import state_decoder
from engine.reference import Reference
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
    assert {u for u, _ in redis_client.zrange(keys.present_seen(nc), 0, -1, withscores=True)} == {
        b"talker"
    }
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
