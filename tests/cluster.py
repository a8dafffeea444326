"""A real Redis Cluster of three masters on free ports, for the scale-out tests.

Each node is the project's own redis-server (AOF, fsync always) with `--cluster-enabled
yes`. They are joined as `redis-cli --cluster create --cluster-replicas 0` would: every
node meets the first, each takes a third of the 16,384 slots, and the cluster is ready when
every node reports `cluster_state:ok` and knows all the others.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from gateway.redis_server import RedisServer, free_port

SLOTS = 16_384


class RedisClusterNodes:
    def __init__(self, data_dir: Path, masters: int = 3) -> None:
        # each node's cluster bus gets a free port of its own (by default it is the
        # client port + 10,000, which a free port above 55,535 cannot have)
        flags = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "5000")  # fmt: skip
        self.bus_ports = [free_port() for _ in range(masters)]
        self.nodes = [
            RedisServer(data_dir / f"node{i}", extra_args=(*flags, "--cluster-port", str(bus)))
            for i, bus in enumerate(self.bus_ports)
        ]

    @property
    def url(self) -> str:
        """Any node's URL names the cluster; clients learn the rest from it."""
        return self.nodes[0].url

    def start(self, timeout_s: float = 30.0) -> RedisClusterNodes:
        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=n.port) for n in self.nodes]
        step = SLOTS // len(clients)
        for i, c in enumerate(clients):
            hi = SLOTS - 1 if i == len(clients) - 1 else (i + 1) * step - 1
            c.execute_command("CLUSTER ADDSLOTSRANGE", i * step, hi)
            if i:
                c.execute_command(
                    "CLUSTER MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0]
                )
        deadline = time.monotonic() + timeout_s
        while not all(self._ready(c) for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        for c in clients:
            c.close()
        return self

    def _ready(self, c: redis.Redis) -> bool:
        info = c.cluster("info")
        return bool(
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_known_nodes", 0)) == len(self.nodes)
            and int(info.get("cluster_slots_ok", 0)) == SLOTS
        )

    def owner(self, slot: int) -> int:
        """The node holding `slot` (as `start` assigned them, or `move_slot` moved one)."""
        with redis.Redis(port=self.nodes[0].port) as c:
            for lo, hi, (_, port, *_), *_ in c.execute_command("CLUSTER SLOTS"):
                if lo <= slot <= hi:
                    return [n.port for n in self.nodes].index(port)
        raise LookupError(f"no node serves slot {slot}")

    def move_slot(self, slot: int, to: int) -> None:
        """A reshard of one slot, as `redis-cli --cluster reshard` does it: the target
        imports, the owner migrates its keys (MIGRATE), then every node learns the new owner."""
        src = self.owner(slot)
        clients = [redis.Redis(port=n.port) for n in self.nodes]
        try:
            ids = [c.execute_command("CLUSTER MYID").decode() for c in clients]
            clients[to].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[src])
            clients[src].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[to])
            while keys := clients[src].execute_command("CLUSTER GETKEYSINSLOT", slot, 1_000):
                clients[src].execute_command("MIGRATE", "127.0.0.1", self.nodes[to].port, "",
                                             0, 10_000, "KEYS", *keys)  # fmt: skip
            for c in clients:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[to])
        finally:
            for c in clients:
                c.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
