"""One way to ride out outages (shared/outages.py): waits with backoff, bugs end the task loudly."""

from __future__ import annotations

import itertools

import asyncpg
import pytest
import trio
import trio.testing

from shared.bus.api import BusError
from shared.db.pool import DatabaseUnavailable
from shared.outages import Backoff, ServiceOutage, is_outage, keep_running, until_available


def test_an_outage_is_database_or_broker_trouble_and_a_group_only_of_it() -> None:
    assert is_outage(BusError("gone")) and is_outage(ConnectionRefusedError()) and is_outage(ServiceOutage("x"))
    assert is_outage(asyncpg.CannotConnectNowError("restarting")) and is_outage(asyncpg.DeadlockDetectedError(""))
    assert is_outage(ExceptionGroup("nursery", [BusError("a"), ExceptionGroup("inner", [DatabaseUnavailable()])]))
    assert not is_outage(KeyError("bug"))
    assert not is_outage(asyncpg.UniqueViolationError("a bug, not an outage"))
    assert not is_outage(ExceptionGroup("nursery", [BusError("a"), ValueError("bug")]))


async def test_until_available_waits_out_an_outage_and_raises_a_bug_at_once(
        autojump_clock: trio.testing.MockClock) -> None:
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(trio.current_time())
        if len(calls) < 4:
            raise DatabaseUnavailable("down")
        return "done"

    assert await until_available("test", flaky) == "done"
    waits = [b - a for a, b in itertools.pairwise(calls)]
    assert len(waits) == 3 and all(w > 0 for w in waits) and waits[2] > waits[0]  # growing

    async def buggy() -> None:
        calls.append(0)
        raise KeyError("bug")

    before = len(calls)
    with pytest.raises(KeyError):  # a naked bug comes out as itself
        await until_available("test", buggy)
    assert len(calls) == before + 1


async def test_keep_running_starts_a_loop_again_after_an_outage(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []
    healthy = trio.Event()

    async def loop(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        if len(starts) <= 2:
            await trio.sleep(0.01)
            raise ExceptionGroup("nursery", [BusError("connection lost")])
        healthy.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(keep_running, "test loop", loop)  # ready once the loop first was
        assert len(starts) == 1
        with trio.fail_after(60):
            await healthy.wait()
        nursery.cancel_scope.cancel()
    assert len(starts) == 3 and starts[1] - starts[0] > 0.01  # it waited before starting again


async def test_keep_running_ends_loudly_on_a_bug(autojump_clock: trio.testing.MockClock,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    async def loop(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        raise ExceptionGroup("nursery", [BusError("gone"), ZeroDivisionError("bug")])

    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):  # the bug, the outage dropped
        async with trio.open_nursery() as nursery:
            await nursery.start(keep_running, "test loop", loop)
    assert "task crashed: a bug" in capsys.readouterr().out


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    delays = Backoff(first=1.0, factor=2.0, cap=5.0).delays()
    waits = [next(delays) for _ in range(6)]
    assert all(0.5 <= w <= 1.0 for w in waits[:1]) and all(w <= 5.0 for w in waits)
    assert waits[-1] >= 2.5  # at the cap, jittered down by at most half
