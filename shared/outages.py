"""Riding out database and broker outages: one definition of the trouble, one way to wait it out.

PostgreSQL restarts, a broker node goes away, a link is cut: none of that is a bug, and no
service may die of it. Every long-running loop runs under `keep_running` (after an outage it
waits with backoff and starts the loop again) and every unit of work that must not be skipped
runs under `until_available` (tried again until the database or broker answers). Anything else
is a bug: it ends the task loudly, with its traceback in the log.

trio reports a nursery's failures as an `ExceptionGroup`; a group made only of outages is an
outage (`is_outage`), a group holding a bug is a bug.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import structlog
import trio

from shared.bus.api import BusError
from shared.db.pool import INFRASTRUCTURE_ERRORS

log = structlog.get_logger("clearcard.outages")

T = TypeVar("T")
P = ParamSpec("P")

class ServiceOutage(Exception):
    """A service we asked answered that it cannot reach its own database or broker right now."""


# The database or the broker is not there right now (restart, cut link, full), here or at a
# service we depend on: wait, try again.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (*INFRASTRUCTURE_ERRORS, BusError, ServiceOutage)


def is_outage(exc: BaseException) -> bool:
    """True if `exc` is database or broker trouble, or a group made of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(OUTAGE_ERRORS)
        return rest is None
    return isinstance(exc, OUTAGE_ERRORS)


def describe(exc: BaseException) -> str:
    """An exception in a few words; a group by its first member (they are usually alike)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


@dataclass(frozen=True)
class Backoff:
    """Growing waits between tries, with jitter so that replicas do not come back in lockstep."""

    first: float = 0.2
    factor: float = 2.0
    cap: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay * random.uniform(0.5, 1.0)
            delay = min(delay * self.factor, self.cap)


DEFAULT_BACKOFF = Backoff()


async def until_available(what: str, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args)`, tried again with backoff while an outage stops it; a bug raises at once."""
    delays = DEFAULT_BACKOFF.delays()
    while True:
        try:
            return await fn(*args, **kwargs)
        except* OUTAGE_ERRORS as group:
            log.warning("waiting for the database or broker", task=what, error=describe(group))
        await trio.sleep(next(delays))


Loop = Callable[..., Awaitable[Any]]


async def keep_running(what: str, loop: Loop, *, backoff: Backoff = DEFAULT_BACKOFF,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a long-running `loop(task_status=...)` for good, starting it again after an outage.

    Readiness is reported once the loop first reported it (so a service waits for its database
    at start-up). A loop that ran longer than the longest wait counts as having recovered: the
    next outage starts again from the shortest wait. A bug ends this task, loudly.
    """
    started = False
    delays = backoff.delays()
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                if started:
                    nursery.start_soon(loop)
                else:
                    await nursery.start(loop)
                    started = True
                    task_status.started()
            return  # the loop ended by itself
        except* OUTAGE_ERRORS as group:
            log.warning("waiting for the database or broker", task=what, error=describe(group))
        except* Exception as group:
            log.error("task crashed: a bug", task=what, exc_info=group)
            raise
        if trio.current_time() - began > backoff.cap:
            delays = backoff.delays()
        await trio.sleep(next(delays))
