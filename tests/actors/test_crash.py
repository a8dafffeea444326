"""kill -9 of a shard process under load: after Ray restarts it, every appended event is
credited exactly once and the ledger audits clean."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from actors.keys import Keys
from engine.events import Chat, Event, Join, Online
from engine.member import state_decoder
from engine.reference import Reference
from engine.rules import RuleBook
from gateway.audit import audit
from tests.actors.conftest import append

T0 = 1_795_000_000.0


def day_of_traffic(n_batches: int, per_batch: int, channels: int = 6) -> list[list[Event]]:
    """Members chat in every channel: credits of one member come from both partitions."""
    batches: list[list[Event]] = [
        [Online(id=f"on{c}", network="n", channel=f"c{c}", ts=T0) for c in range(channels)]
    ]
    seq = 0
    for _ in range(n_batches):
        batch: list[Event] = []
        for _i in range(per_batch):
            u = seq % 300
            ch = f"c{seq % channels}"
            ts = T0 + seq * 3.0
            if seq < 300:
                batch.append(Join(id=f"j{seq}", network="n", channel=ch, user_id=f"u{u}", ts=ts))
            else:
                batch.append(Chat(id=f"e{seq}", network="n", channel=ch, user_id=f"u{u}", ts=ts))
            seq += 1
        batches.append(batch)
    return batches


@pytest.mark.parametrize("victim", ["member-0", "channel-0", "ledger-1"])
def test_kill9_shard_under_load(rally, redis_server, victim: str) -> None:
    client, cfg = rally
    r = redis.Redis.from_url(redis_server.url)
    batches = day_of_traffic(n_batches=120, per_batch=100)
    done = threading.Event()

    def load() -> None:
        for b in batches:
            append(r, cfg, b)
            time.sleep(0.01)
        done.set()

    feeder = threading.Thread(target=load)
    feeder.start()
    time.sleep(0.4)
    old_pid = client.kill9(victim)
    feeder.join()
    assert client.wait_idle(120), "backlog never drained after the restart"
    assert client.pids()[victim] != old_pid, "Ray did not restart the shard"

    ref = Reference(RuleBook({}))
    for b in batches:
        ref.ingest(b, 0.0)
    ref.finish()
    keys = Keys(cfg.namespace)
    for (network, uid), expected in ref.members.items():
        got = state_decoder.decode(r.hget(keys.mstate, f"{network}:{uid}"))
        assert (got.balance, got.entries) == (expected.balance, expected.entries), uid
    report = audit(r, keys, RuleBook({}))
    assert report.ok, report.problems
    assert report.members == len(ref.members)
