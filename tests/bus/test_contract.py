"""One contract suite, two transports: the in-memory bus and RabbitMQ behave alike.

The `bus` fixture (tests/bus/conftest.py) runs every test on both.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import telemetry
from shared.bus.api import Bus, BusError, Delivery, Handler, Reject
from shared.bus.memory import MemoryBus
from shared.bus.middleware import traced
from shared.bus.retry import DEAD_QUEUE, DEAD_REASON
from shared.bus.rpc import Operation, RpcClient, rpc_server
from shared.bus.topology import COMMANDS, DEAD_LETTERS, DEFAULT, QueueSpec, topology_for
from shared.errors import ClearCardError, ErrorCode
from shared.messages.base import Frozen
from shared.messages.codec import DecodeError

WAIT = 10  # seconds any single expectation may take on a real broker


def queue(name: str, *patterns: str, delivery_limit: int = 5) -> QueueSpec:
    return QueueSpec(f"test.{name}", tuple((COMMANDS, p) for p in patterns), delivery_limit=delivery_limit)


async def start_consumer(
    nursery: trio.Nursery, bus: Bus, queue_name: str, handler: Handler, prefetch: int = 16
) -> trio.CancelScope:
    """Start consuming and return a scope that stops just this consumer."""
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await bus.consume(queue_name, handler, prefetch=prefetch, task_status=task_status)

    await nursery.start(run)
    return scope


async def collect(
    nursery: trio.Nursery, bus: Bus, queue_name: str, before: Callable[[Delivery], Awaitable[None]] | None = None
) -> trio.MemoryReceiveChannel[Delivery]:
    """Consume a queue into a channel (after `before`, which may raise to nack or reject)."""
    send, receive = trio.open_memory_channel[Delivery](math.inf)

    async def handler(delivery: Delivery) -> None:
        send.send_nowait(delivery)
        if before is not None:
            await before(delivery)

    await start_consumer(nursery, bus, queue_name, handler)
    return receive


async def next_delivery(receive: trio.MemoryReceiveChannel[Delivery]) -> Delivery:
    with trio.fail_after(WAIT):
        return await receive.receive()


async def quiesce(bus: Bus) -> None:
    """Let whatever could happen next happen: nothing runnable (memory) or a broker round trip."""
    if isinstance(bus, MemoryBus):
        await trio.testing.wait_all_tasks_blocked()
    else:
        await trio.sleep(0.3)  # a real broker: no event says "nothing more will be delivered"


async def test_round_trip_keeps_properties_and_headers(bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("roundtrip", "rt.#")
    await bus.declare(topology_for(q))
    received = await collect(nursery, bus, q.name)

    await bus.publish(COMMANDS, "rt.one", b'{"x": 1}', message_id="m-1", correlation_id="c-1",
                      reply_to="somewhere", headers={"authorization": "Bearer t", "n": 7})

    d = await next_delivery(received)
    assert (d.exchange, d.routing_key, d.body) == (COMMANDS, "rt.one", b'{"x": 1}')
    assert (d.message_id, d.correlation_id, d.reply_to) == ("m-1", "c-1", "somewhere")
    assert d.headers["authorization"] == "Bearer t"
    assert d.headers["n"] == 7
    assert (d.redelivered, d.delivery_count) == (False, 0)


async def test_topic_routing_and_default_exchange(bus: Bus, nursery: trio.Nursery) -> None:
    star, hash_ = queue("star", "route.*"), queue("hash", "route.#")
    await bus.declare(topology_for(star, hash_))
    got_star = await collect(nursery, bus, star.name)
    got_hash = await collect(nursery, bus, hash_.name)

    for key in ("route.a", "route.a.b", "route", "other.a", "route.end"):
        await bus.publish(COMMANDS, key, b"{}")

    assert [(await next_delivery(got_star)).routing_key for _ in range(2)] == ["route.a", "route.end"]
    assert [(await next_delivery(got_hash)).routing_key for _ in range(4)] == [
        "route.a", "route.a.b", "route", "route.end"]

    await bus.publish(DEFAULT, star.name, b'{"direct": true}')
    d = await next_delivery(got_star)
    assert (d.exchange, d.routing_key, d.body) == ("", star.name, b'{"direct": true}')


async def test_returning_handler_acks(bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("acked", "acked")
    await bus.declare(topology_for(q))
    first = trio.open_memory_channel[Delivery](math.inf)

    async def handler(delivery: Delivery) -> None:
        first[0].send_nowait(delivery)

    consumer = await start_consumer(nursery, bus, q.name, handler)
    await bus.publish(COMMANDS, "acked", b'{"n": 1}')
    await next_delivery(first[1])
    await quiesce(bus)  # let the ack reach the broker before the consumer goes
    consumer.cancel()

    # an unacked message would come back when its consumer went, before the marker
    again = await collect(nursery, bus, q.name)
    await bus.publish(COMMANDS, "acked", b'{"marker": true}')
    assert (await next_delivery(again)).body == b'{"marker": true}'


@pytest.mark.parametrize("refusal", [Reject("never"), DecodeError("not JSON")], ids=["Reject", "DecodeError"])
async def test_refused_message_is_dead_lettered(bus: Bus, nursery: trio.Nursery, refusal: Exception) -> None:
    q = queue("refusing", "refuse.*")
    await bus.declare(topology_for(q))

    async def refuse(_: Delivery) -> None:
        raise refusal

    seen = await collect(nursery, bus, q.name, before=refuse)
    dead = await collect(nursery, bus, q.dead_letter_queue)

    await bus.publish(COMMANDS, "refuse.it", b'{"bad": 1}', message_id="poison-1")

    assert (await next_delivery(seen)).message_id == "poison-1"
    d = await next_delivery(dead)
    assert (d.exchange, d.routing_key, d.body, d.message_id) == (DEAD_LETTERS, q.name, b'{"bad": 1}', "poison-1")
    assert d.headers[DEAD_REASON].startswith("refused: "), d.headers
    assert d.headers[DEAD_QUEUE] == q.name


async def test_failing_handler_is_retried_then_dead_lettered(bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("poison", "poison", delivery_limit=2)
    await bus.declare(topology_for(q))

    async def fail_on_poison(delivery: Delivery) -> None:
        if delivery.body == b'{"poison": true}':
            raise RuntimeError("handler bug")

    seen = await collect(nursery, bus, q.name, before=fail_on_poison)
    dead = await collect(nursery, bus, q.dead_letter_queue)

    await bus.publish(COMMANDS, "poison", b'{"poison": true}', message_id="p")
    tries = [await next_delivery(seen) for _ in range(3)]
    assert [t.delivery_count for t in tries] == [0, 1, 2]
    assert [t.redelivered for t in tries] == [False, True, True]
    d = await next_delivery(dead)
    assert d.message_id == "p"
    assert d.headers[DEAD_REASON] == "failed 3 times: RuntimeError: handler bug", d.headers
    assert tries[-1].attempt.last_delivery and not tries[0].attempt.last_delivery

    # the consumer survived its handler's exceptions
    await bus.publish(COMMANDS, "poison", b'{"fine": true}')
    assert (await next_delivery(seen)).body == b'{"fine": true}'


async def test_prefetch_bounds_concurrent_handlers(bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("prefetch", "prefetch")
    await bus.declare(topology_for(q))
    release = trio.Event()
    started_send, started = trio.open_memory_channel[None](math.inf)
    done_send, done = trio.open_memory_channel[None](math.inf)
    active = peak = 0

    async def handler(_: Delivery) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        started_send.send_nowait(None)
        await release.wait()
        active -= 1
        done_send.send_nowait(None)

    await start_consumer(nursery, bus, q.name, handler, prefetch=3)
    for i in range(8):
        await bus.publish(COMMANDS, "prefetch", b"{}", message_id=str(i))
    with trio.fail_after(WAIT):
        for _ in range(3):
            await started.receive()
    await quiesce(bus)
    assert started.statistics().current_buffer_used == 0, "a fourth handler started"
    release.set()
    with trio.fail_after(WAIT):
        for _ in range(8):
            await done.receive()
    assert peak == 3


async def test_competing_consumers_share_a_queue(bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("shared", "shared")
    await bus.declare(topology_for(q))
    release = trio.Event()
    who_send, who = trio.open_memory_channel[str](math.inf)

    def worker(name: str) -> Handler:
        async def handler(_: Delivery) -> None:
            who_send.send_nowait(name)
            await release.wait()
        return handler

    await start_consumer(nursery, bus, q.name, worker("a"), prefetch=1)
    await start_consumer(nursery, bus, q.name, worker("b"), prefetch=1)
    await bus.publish(COMMANDS, "shared", b"{}")
    await bus.publish(COMMANDS, "shared", b"{}")
    with trio.fail_after(WAIT):
        assert {await who.receive(), await who.receive()} == {"a", "b"}
    release.set()


class Echo(Frozen):
    text: str


async def test_rpc_round_trip_and_unknown_operation(bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("rpc", "test.rpc.*")
    await bus.declare(topology_for(q))

    async def echo(request: Echo) -> Echo:
        return Echo(text=request.text.upper())

    await start_consumer(nursery, bus, q.name, rpc_server(bus, {"echo": Operation(Echo, echo)}))
    async with RpcClient.open(bus, "contract-test") as client:
        with trio.fail_after(WAIT):
            assert await client.call(COMMANDS, "test.rpc.echo", Echo(text="hi"), Echo) == Echo(text="HI")
            with pytest.raises(ClearCardError) as refused:
                await client.call(COMMANDS, "test.rpc.nope", Echo(text="hi"), Echo)
    assert refused.value.code is ErrorCode.INVALID_REQUEST


async def test_publish_to_undeclared_exchange_fails(bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("after-error", "after")
    await bus.declare(topology_for(q))
    received = await collect(nursery, bus, q.name)

    with trio.fail_after(WAIT), pytest.raises(BusError):
        await bus.publish("no.such.exchange", "x", b"{}")

    await bus.publish(COMMANDS, "after", b'{"still": "works"}')
    assert (await next_delivery(received)).body == b'{"still": "works"}'


async def test_consuming_a_missing_queue_fails(bus: Bus) -> None:
    with trio.fail_after(WAIT), pytest.raises(BusError):
        await bus.consume("test.no-such-queue", _never)


async def _never(_: Delivery) -> None:
    raise AssertionError("no delivery expected")


async def test_trace_context_travels_to_the_consumer(bus: Bus, nursery: trio.Nursery) -> None:
    q = queue("traced", "traced")
    await bus.declare(topology_for(q))
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    telemetry.add_span_processor(processor)
    try:
        handled_send, handled = trio.open_memory_channel[Delivery](math.inf)
        inner = traced("contract-consumer", q.name, _accept)

        async def handler(delivery: Delivery) -> None:
            await inner(delivery)  # the consumer span has ended once this returns
            handled_send.send_nowait(delivery)

        await start_consumer(nursery, bus, q.name, handler)
        with telemetry.tracer("contract-producer").start_as_current_span("request") as request_span:
            await bus.publish(COMMANDS, "traced", b"{}", message_id="t-1")
        delivery = await next_delivery(handled)
        assert "traceparent" in delivery.headers
    finally:
        telemetry.remove_span_processor(processor)

    spans = {s.name: s for s in exporter.get_finished_spans()}
    trace_id = request_span.get_span_context().trace_id
    send, process = spans[f"send {COMMANDS}"], spans[f"process {q.name}"]
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert send.context.trace_id == process.context.trace_id == trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.attributes["messaging.message.id"] == "t-1"


async def _accept(_: Delivery) -> None:
    return None


async def test_reply_queue_bound_to_events_follows_them(bus: Bus, nursery: trio.Nursery) -> None:
    await bus.declare(topology_for())
    follower = await bus.declare_reply_queue()
    await bus.bind(follower, "clearcard.events", "clear.*")
    received = await collect(nursery, bus, follower)

    await bus.publish("clearcard.events", "clear.progress", b'{"n": 1}')
    await bus.publish("clearcard.events", "audit.other", b'{"n": 2}')
    await bus.publish("clearcard.events", "clear.finished", b'{"n": 3}')

    assert [(await next_delivery(received)).body for _ in range(2)] == [b'{"n": 1}', b'{"n": 3}']
    with pytest.raises(BusError):
        await bus.bind("no.such.queue", "clearcard.events", "#")


async def test_consistent_hash_exchange_keeps_one_key_on_one_queue(bus: Bus, nursery: trio.Nursery) -> None:
    from shared.bus.topology import ExchangeSpec, Topology

    shards = [QueueSpec(f"test.shard.{n}", (("test.hash", "1"),)) for n in range(3)]
    await bus.declare(topology_for() + Topology(exchanges=(ExchangeSpec("test.hash", "x-consistent-hash"),),
                                                queues=tuple(shards)))
    send, receive = trio.open_memory_channel[tuple[str, str]](math.inf)
    for shard in shards:

        async def handler(delivery: Delivery, name: str = shard.name) -> None:
            send.send_nowait((name, delivery.routing_key))

        await start_consumer(nursery, bus, shard.name, handler)
    keys = [f"66150000{n:04d}" for n in range(30)] * 2
    for key in keys:
        await bus.publish("test.hash", key, b"{}")
    seen: dict[str, set[str]] = {}
    for _ in keys:
        with trio.fail_after(WAIT):
            name, key = await receive.receive()
        seen.setdefault(key, set()).add(name)
    assert all(len(queues) == 1 for queues in seen.values())  # a key always lands on one shard
    assert len({q for queues in seen.values() for q in queues}) > 1  # keys spread over shards


async def test_queue_depths_count_waiting_messages(bus: Bus) -> None:
    """What the console's /metrics shows per queue; a queue that does not exist is left out."""
    q = queue("depth", "depth.*")
    await bus.declare(topology_for(q))
    for n in range(3):
        await bus.publish(COMMANDS, "depth.x", b"{}", message_id=f"d{n}")
    depths = await bus.queue_depths([q.name, "test.no-such-queue", q.dead_letter_queue])  # type: ignore[attr-defined]
    assert depths == {q.name: 3, q.dead_letter_queue: 0}
