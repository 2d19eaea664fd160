"""Retry later, not now: the contract suite's part on outages, budgets and dead letters (both transports).

A handler that met a database or broker outage gets its message back after each delay of the
queue's `RetrySchedule` in turn, as a fresh message (the delivery limit is for bugs), until the
retry budget is spent; then the message is dead-lettered with its reason. Delays here are
fractions of a second so the suite stays quick on a real broker.
"""

from __future__ import annotations

import itertools
import math

import trio

from shared.bus.api import Bus, BusError, Delivery, Reject, RetryLater
from shared.bus.middleware import with_last_words
from shared.bus.retry import DEAD_QUEUE, DEAD_REASON, EXCHANGE, LAST_ERROR, RETRIES, ROUTING_KEY
from shared.bus.topology import COMMANDS, QueueSpec, RetrySchedule, topology_for
from shared.db.pool import DatabaseUnavailable
from tests.bus.test_contract import collect, next_delivery, quiesce, start_consumer

QUICK = RetrySchedule(delays=(0.3, 0.8), budget=60.0)


def queue(name: str, *, retry: RetrySchedule = QUICK, delivery_limit: int = 5) -> QueueSpec:
    return QueueSpec(f"test.{name}", ((COMMANDS, name),), delivery_limit=delivery_limit, retry=retry)


async def test_an_outage_brings_the_message_back_after_growing_delays(bus: Bus, nursery: trio.Nursery) -> None:
    # a delivery limit of 1 would dead-letter the second instant return: outages do not count
    q = queue("outage", delivery_limit=1)
    await bus.declare(topology_for(q))
    arrivals: list[tuple[float, Delivery]] = []
    errors = [DatabaseUnavailable("PostgreSQL restarting"), BusError("connection lost"), RetryLater("SMTP down")]

    async def handler(delivery: Delivery) -> None:
        arrivals.append((trio.current_time(), delivery))
        if len(arrivals) <= len(errors):
            raise errors[len(arrivals) - 1]

    done = await collect(nursery, bus, q.name, before=handler)
    dead = await collect(nursery, bus, q.dead_letter_queue)
    await bus.publish(COMMANDS, "outage", b'{"n": 1}', message_id="m-1", headers={"keep": "me"})
    for _ in range(4):
        await next_delivery(done)

    times = [t for t, _ in arrivals]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # each retry waits at least its delay (0.3, then 0.8 and the last delay repeats)
    assert [round(g, 1) >= d for g, d in zip(gaps, (0.3, 0.8, 0.8), strict=True)] == [True] * 3, gaps
    deliveries = [d for _, d in arrivals]
    assert [d.attempt.retries for d in deliveries] == [0, 1, 2, 3]
    assert {d.message_id for d in deliveries} == {"m-1"} and {d.body for d in deliveries} == {b'{"n": 1}'}
    assert all(d.headers["keep"] == "me" for d in deliveries)
    # handlers dispatch on the routing key: a retried message keeps the one it was published with
    assert {(d.exchange, d.routing_key) for d in deliveries} == {(COMMANDS, "outage")}
    assert deliveries[3].headers[RETRIES] == 3 and "SMTP down" in deliveries[3].headers[LAST_ERROR]
    first = deliveries[1].attempt.first_failure
    assert first is not None and {d.attempt.first_failure for d in deliveries[1:]} == {first}
    await quiesce(bus)
    assert dead.statistics().current_buffer_used == 0
    assert await bus.queue_depth(q.name) == 0  # type: ignore[attr-defined]


async def test_retry_queues_stand_beside_each_queue(bus: Bus) -> None:
    q = queue("companions")
    await bus.declare(topology_for(q))
    names = [name for name, _ in q.retry_queues]
    assert names == ["test.companions.retry.300ms", "test.companions.retry.800ms"]
    for name in [*names, q.dead_letter_queue, q.name]:
        assert await bus.queue_depth(name) == 0, name  # type: ignore[attr-defined]
    assert await bus.queue_depth("test.companions.retry.5s") is None  # type: ignore[attr-defined]


async def test_an_outage_past_the_retry_budget_is_dead_lettered_with_its_reason(
        bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("budget", retry=RetrySchedule(delays=(0.2,), budget=0.5))
    await bus.declare(topology_for(q))

    async def down(_: Delivery) -> None:
        raise OSError("connection refused")

    seen = await collect(nursery, bus, q.name, before=down)
    dead = await collect(nursery, bus, q.dead_letter_queue)
    await bus.publish(COMMANDS, "budget", b"{}", message_id="late")
    letter = await next_delivery(dead)
    tries = []
    while True:
        try:
            tries.append(seen.receive_nowait())
        except trio.WouldBlock:
            break
    assert len(tries) >= 3 and tries[-1].attempt.budget_spent and not tries[0].attempt.budget_spent
    assert letter.message_id == "late" and letter.headers[DEAD_QUEUE] == q.name
    assert letter.headers[ROUTING_KEY] == "budget" and letter.headers[EXCHANGE] == COMMANDS
    assert letter.headers[DEAD_REASON].startswith("still failing after 0.000138889 h of retries"), letter.headers
    assert "connection refused" in letter.headers[DEAD_REASON]


async def test_exception_groups_settle_by_their_members(bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("groups")
    await bus.declare(topology_for(q))

    async def handler(delivery: Delivery) -> None:
        if delivery.body == b'{"outages": true}' and delivery.attempt.retries == 0:
            raise ExceptionGroup("nursery", [BusError("a"), DatabaseUnavailable("b")])
        if delivery.body == b'{"refused": true}':
            raise ExceptionGroup("nursery", [BusError("a"), Reject("unreadable")])

    seen = await collect(nursery, bus, q.name, before=handler)
    dead = await collect(nursery, bus, q.dead_letter_queue)
    await bus.publish(COMMANDS, "groups", b'{"outages": true}', message_id="o")
    await bus.publish(COMMANDS, "groups", b'{"refused": true}', message_id="r")
    letter = await next_delivery(dead)
    assert letter.message_id == "r" and letter.headers[DEAD_REASON].startswith("refused")
    got = [await next_delivery(seen) for _ in range(3)]
    assert [(d.message_id, d.attempt.retries) for d in got if d.message_id == "o"] == [("o", 0), ("o", 1)]


async def test_last_words_come_once_right_before_the_message_is_dead_lettered(
        bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("last-words", retry=RetrySchedule(delays=(0.2,), budget=0.5))
    await bus.declare(topology_for(q))
    words_send, words = trio.open_memory_channel[tuple[str | None, bool]](math.inf)

    async def down(_: Delivery) -> None:
        raise DatabaseUnavailable("still down")

    async def last_words(delivery: Delivery, exc: BaseException) -> None:
        words_send.send_nowait((delivery.message_id, delivery.attempt.budget_spent))

    await start_consumer(nursery, bus, q.name, with_last_words(down, last_words))
    dead = await collect(nursery, bus, q.dead_letter_queue)
    await bus.publish(COMMANDS, "last-words", b"{}", message_id="bye")
    await next_delivery(dead)
    await quiesce(bus)
    assert words.receive_nowait() == ("bye", True)
    assert words.statistics().current_buffer_used == 0  # once, not on the earlier tries
