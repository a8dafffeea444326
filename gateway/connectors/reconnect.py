"""The connectors' reconnect loop: run a session until it ends, then wait and run it again,
the wait doubling from `min_s` to `max_s` after each failure and reset by a session that
ended cleanly; until `stopping()` is true."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def reconnecting(
    session: Callable[[], Awaitable[None]],
    stopping: Callable[[], bool],
    *,
    errors: tuple[type[BaseException], ...],
    min_s: float,
    max_s: float,
    name: str,
) -> None:
    """Run `session` again and again (a failure in `errors` is logged, not raised)."""
    backoff = min_s
    while not stopping():
        try:
            await session()
            backoff = min_s
        except errors as err:
            if stopping():
                break
            log.warning("%s_disconnected error=%r retry_in_s=%.1f", name, err, backoff)
        if stopping():
            break
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_s)
