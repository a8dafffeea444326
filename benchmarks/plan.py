"""What a load generator is told to do: where, what traffic, at what rate; and how it renders
the traffic into request bodies once, so that sending costs only a substitution and a signature.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import msgspec

from gateway.simulator import SimulatedNetwork

SIM_TS_BASE = 4_000_000_000.0
"""Templates are rendered at simulated times from here; real send times replace them."""
CYCLE_TOKEN = b".QQCQQ."
"""Stands in an event id for the number of the pass through the template cycle."""
CLOSED_LOOP_GUESS_PER_S = 100_000.0
"""A closed-loop run's rate is unknown in advance: probes are spaced as if it were this."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to send and how to see that a probe has been credited."""

    host: str
    port: int
    key: str
    secret: str
    redis_url: str
    probe_hash: str
    """Redis hash in which a credited probe user appears."""
    probe_field_prefix: str = ""
    """Prefix of the probe user's field in `probe_hash` (Rallypoint: "network:")."""
    path: str = "/v1/events"
    stream_path: str = "/v1/stream"


@dataclass(frozen=True, slots=True)
class Traffic:
    network: str = "demo"
    channels: int = 200
    members: int = 20_000
    seed: int = 1
    run_id: str = "b"
    channel_prefix: str = "ch"
    snapshot_max_viewers: int = 2_000


@dataclass(frozen=True, slots=True)
class Phase:
    duration_s: float
    rate_per_s: float
    """Events per second from all workers together; 0 = closed loop (as fast as answered)."""


@dataclass(frozen=True, slots=True)
class Burst:
    """Extra join events into one channel (a raid), on top of the background traffic."""

    at_s: float
    joins: int
    over_s: float
    channel: int = 0
    batch_size: int = 1_000


WS_TRANSPORTS = ("ws", "ws-bulk")
"""The WebSocket transports of Plan.transport."""


@dataclass(frozen=True, slots=True)
class Plan:
    endpoint: Endpoint
    traffic: Traffic
    phases: tuple[Phase, ...]
    transport: str = "http"
    """"http" (POST batches), "ws" (one event per frame, an ack per frame) or "ws-bulk" (one
    event per frame, acks in bulk: the handshake's acks=bulk)."""
    batch_size: int = 100
    connections: int = 8
    probes_per_s: float = 4.0
    burst: Burst | None = None
    worker: int = 0
    workers: int = 1
    cycle_events: int = 100_000
    drain_s: float = 15.0
    """How long to wait for outstanding probes after sending ends."""
    grace_s: float = 2.0
    """An open-loop sender still behind its schedule this long after its end stops there."""
    max_inflight_frames: int = 256
    """A WebSocket sender keeps at most this many frames unacknowledged (the gateway's limit)."""

    def share(self, rate: float) -> float:
        return rate / self.workers


class Schedule:
    """When event number e is due, under a piecewise-constant rate profile."""

    def __init__(self, phases: tuple[Phase, ...], share: float) -> None:
        self.starts: list[float] = []
        self.firsts: list[int] = []
        self.rates: list[float] = []
        t, e = 0.0, 0
        for ph in phases:
            rate = ph.rate_per_s * share
            self.starts.append(t)
            self.firsts.append(e)
            self.rates.append(rate)
            t += ph.duration_s
            e += int(rate * ph.duration_s)
        self.total_events = e
        self.duration_s = t
        self.closed = any(r <= 0 for r in self.rates)

    def due(self, e: int) -> float:
        """Seconds after start when event e is due."""
        i = bisect.bisect_right(self.firsts, e) - 1
        return self.starts[i] + (e - self.firsts[i]) / self.rates[i]


class Templates:
    """Bodies (HTTP: the inside of an events list; WS: one event) rendered once per cycle."""

    def __init__(self, plan: Plan, per_item: int, n_events: int) -> None:
        tr = plan.traffic
        self.run_id = f"{tr.run_id}.w{plan.worker}"
        sim = SimulatedNetwork(
            network=tr.network,
            channels=tr.channels,
            members=tr.members,
            seed=tr.seed * 1_000 + plan.worker + 1,
            population_seed=tr.seed,
            run_id=self.run_id + CYCLE_TOKEN.decode().rstrip("."),
            channel_prefix=tr.channel_prefix,
            snapshot_max_viewers=tr.snapshot_max_viewers,
        )
        self.sim = sim
        rate = max(plan.share(max(p.rate_per_s for p in plan.phases)), 1_000.0)
        items = max(1, math.ceil(min(n_events, plan.cycle_events) / per_item))
        self.bodies: list[bytes] = []
        self.needles: list[bytes] = []
        self.counts: list[int] = []
        for j in range(items):
            now = SIM_TS_BASE + j * per_item / rate
            events = sim.events(now, per_item)
            needle = b'"ts":' + msgspec.json.encode(now)
            body = msgspec.json.encode(events if per_item > 1 else events[0])
            if per_item > 1:
                body = body[1:-1]
            assert body.count(needle) == len(events), "timestamp needle is not unique"
            self.bodies.append(body)
            self.needles.append(needle)
            self.counts.append(len(events))
        self.events_per_cycle = sum(self.counts)

    def render(self, k: int, ts: float) -> tuple[bytes, int]:
        """Item k (any k >= 0) with its ids made unique and stamped `ts`."""
        cycle, j = divmod(k, len(self.bodies))
        body = self.bodies[j].replace(CYCLE_TOKEN, b".c%d." % cycle)
        return body.replace(self.needles[j], b'"ts":%.3f' % ts), self.counts[j]
