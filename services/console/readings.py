"""Readings that scrapers may ask for as often as they like: read at most once per interval.

Prometheus, a load balancer and Kubernetes probe `/metrics` and `/readyz` every few seconds,
often from several places at once. Each answer comes from the last reading while it is fresh;
one caller refreshes it when it is not, and whoever asks meanwhile waits for that refresh
instead of starting another. So a scrape costs no database query or broker publish beyond one
per interval, however many arrive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class CachedReading(Generic[T]):
    """The value of `read()`, at most `interval` seconds old."""

    def __init__(self, read: Callable[[], Awaitable[T]], interval: float) -> None:
        self._read = read
        self._interval = interval
        self._value: tuple[float, T] | None = None
        self._refreshing: trio.Event | None = None

    async def get(self) -> T:
        while True:
            now = trio.current_time()
            if self._value is not None and now - self._value[0] < self._interval:
                return self._value[1]
            if self._refreshing is None:
                break
            await self._refreshing.wait()  # someone is reading it now: take theirs
        done = self._refreshing = trio.Event()
        try:
            value = await self._read()
            self._value = (now, value)
            return value
        finally:
            self._refreshing = None
            done.set()
