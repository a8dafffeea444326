"""Session-wide real components: one redis-server (AOF) on a free port, one Ray cluster."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings

from gateway.redis_server import RedisServer

# `HYPOTHESIS_PROFILE=deep pytest tests/engine` searches ten times as far before a release
settings.register_profile("deep", max_examples=1_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def namespace() -> str:
    """A fresh key namespace, so tests share one Redis without seeing each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=True,
        namespace="rally-tests",
    )
    yield
    ray.shutdown()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path
