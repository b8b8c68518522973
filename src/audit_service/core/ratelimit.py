"""Rate limits on the `limits` engine (the one slowapi wraps), used asynchronously.

slowapi's decorator needs `request` in every endpoint signature and its storage is
synchronous, which would block the event loop on every Redis round trip; FastAPI
dependencies calling `limits.aio` directly keep endpoints clean and the loop free.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from audit_service.core.errors import RateLimited


class RateLimiter:
    def __init__(self, storage_uri: str) -> None:
        uri = storage_uri if storage_uri.startswith("async+") else f"async+{storage_uri}"
        self._storage = storage_from_string(uri)
        # A sliding-window counter: O(1) per hit (a moving window keeps every timestamp), and
        # no burst at window edges as with fixed windows.
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)

    async def hit(self, limit: str | RateLimitItem, *key: str, what: str = "requests") -> None:
        """Count one hit; raise 429 (with Retry-After) once `limit` is exceeded for `key`."""
        item = parse(limit) if isinstance(limit, str) else limit
        if await self._strategy.hit(item, *key):
            return
        stats = await self._strategy.get_window_stats(item, *key)
        retry_after = math.ceil(stats.reset_time - time.time())
        raise RateLimited(f"Too many {what}: the limit is {item}. Try again later.", retry_after)

    async def reset(self) -> None:
        await self._storage.reset()  # type: ignore[misc]
