"""One real InspIRCd for the connector tests (scripts/run.sh ensure_inspircd installs it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.connectors.ircd import InspIRCd


@pytest.fixture(scope="session")
def ircd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InspIRCd]:
    server = InspIRCd(tmp_path_factory.mktemp("ircd")).start()
    yield server
    server.stop()
