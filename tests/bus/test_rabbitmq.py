"""What only a real broker can do to the bus: drop the connection, and see consumers go."""

from __future__ import annotations

import math

import pytest
import trio

from shared.bus.api import BusError, Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.rpc import Operation, RpcClient, rpc_server
from shared.bus.topology import COMMANDS, topology_for
from tests.bus.conftest import rabbitmqctl
from tests.bus.test_contract import Echo, collect, next_delivery, queue, start_consumer
from tests.support.servers import AMQP_URL

pytestmark = pytest.mark.rabbitmq

RECONNECT = 30  # seconds: rabbitmqctl itself takes a second or two


async def drop_connections(vhost: str) -> None:
    await rabbitmqctl("close_all_connections", "-p", vhost, "contract test drops the connection")


async def publish_until_accepted(bus: RabbitBus, routing_key: str, body: bytes, message_id: str) -> None:
    """Retry while the bus reconnects, as every publisher does (stable message id)."""
    while True:
        try:
            await bus.publish(COMMANDS, routing_key, body, message_id=message_id)
            return
        except BusError:
            await trio.sleep(0.1)  # the real broker needs time to take us back


async def test_reconnects_and_resumes_consumers_and_rpc(
    rabbit: tuple[RabbitBus, str], nursery: trio.Nursery
) -> None:
    bus, vhost = rabbit
    q, rpc_q = queue("resume", "resume"), queue("rpc", "test.rpc.*")
    await bus.declare(topology_for(q, rpc_q))
    received = await collect(nursery, bus, q.name)

    async def echo(request: Echo) -> Echo:
        return request

    await start_consumer(nursery, bus, rpc_q.name, rpc_server(bus, {"echo": Operation(Echo, echo)}))
    async with RpcClient.open(bus, "contract-test") as client:
        await bus.publish(COMMANDS, "resume", b'{"n": 1}', message_id="before")
        assert (await next_delivery(received)).message_id == "before"

        await drop_connections(vhost)

        with trio.fail_after(RECONNECT):
            await publish_until_accepted(bus, "resume", b'{"n": 2}', "after")
            while (await received.receive()).message_id != "after":
                pass
            while True:  # the reply queue was redeclared under the same name and is consumed again
                with trio.move_on_after(2):
                    assert await client.call(COMMANDS, "test.rpc.echo", Echo(text="x"), Echo) == Echo(text="x")
                    break


async def test_pending_confirms_fail_when_the_connection_drops(
    rabbit: tuple[RabbitBus, str], nursery: trio.Nursery
) -> None:
    bus, vhost = rabbit
    await bus.declare(topology_for(queue("flood", "flood")))
    confirmed = 0
    enough = trio.Event()
    outcomes: list[BusError] = []

    async def keep_publishing(task: int) -> None:
        nonlocal confirmed
        n = 0
        while True:
            try:
                await bus.publish(COMMANDS, "flood", b"{}", message_id=f"{task}-{n}")
            except BusError as exc:
                outcomes.append(exc)
                return
            n += 1
            confirmed += 1
            if confirmed >= 500:
                enough.set()

    with trio.fail_after(RECONNECT):
        async with trio.open_nursery() as publishers:
            for task in range(20):
                publishers.start_soon(keep_publishing, task)
            await enough.wait()
            await drop_connections(vhost)
    # every publisher ended with BusError; none hung waiting for a confirm
    assert len(outcomes) == 20
    assert any("unconfirmed" in str(exc) for exc in outcomes), [str(e) for e in outcomes]


async def test_cancelling_consume_cancels_the_broker_consumer(
    rabbit: tuple[RabbitBus, str], nursery: trio.Nursery
) -> None:
    bus, vhost = rabbit
    q = queue("cancel", "cancel")
    await bus.declare(topology_for(q))
    send, _receive = trio.open_memory_channel[Delivery](math.inf)

    async def handler(delivery: Delivery) -> None:
        send.send_nowait(delivery)

    consumer = await start_consumer(nursery, bus, q.name, handler)
    assert q.name in await rabbitmqctl("list_consumers", "-p", vhost, "--no-table-headers", "queue_name")
    consumer.cancel()
    with trio.fail_after(RECONNECT):
        while True:
            listed = await rabbitmqctl("list_consumers", "-p", vhost, "--no-table-headers", "queue_name")
            if q.name not in listed:
                break
            await trio.sleep(0.1)  # rabbitmqctl: the broker's view, no event to wait for


async def test_a_consumer_whose_queue_vanished_while_connected_waits_for_it(
    rabbit: tuple[RabbitBus, str], nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed resubscribe while the link is up (the queue deleted, or not yet back after a broker
    restart) is retried with backoff: the consumer neither dies nor takes its service down."""
    bus, vhost = rabbit
    q = queue("vanishing", "vanishing")
    await bus.declare(topology_for(q))
    received = await collect(nursery, bus, q.name)
    await rabbitmqctl("delete_queue", "-p", vhost, q.name)  # the broker cancels our consumer
    logged = ""
    with trio.fail_after(RECONNECT):  # the consumer's own resubscribing fails while the queue is away
        while True:
            logged += capsys.readouterr().out
            if "cannot resubscribe; trying again" in logged:
                break
            await trio.sleep(0.1)  # a log line is all there is to see from outside
    await bus.declare(topology_for(q))  # the queue is back
    with trio.fail_after(RECONNECT):
        await publish_until_accepted(bus, "vanishing", b'{"n": 1}', "back")
        assert (await received.receive()).message_id == "back"


async def test_a_broker_that_resets_every_connection_is_a_connection_failure(nursery: trio.Nursery) -> None:
    """A load balancer or proxy that accepts and resets at once: every connect is a BusError the
    caller can retry, never an exception that ends the bus and its service (tests/bus/test_nbio.py
    covers pika raising from inside its callbacks, which such a reset can make it do)."""
    from tests.faults.proxy import FaultProxy

    proxy = FaultProxy.to_url(AMQP_URL)
    await nursery.start(proxy.serve)
    proxy.refuse()
    for _ in range(30):
        with pytest.raises(BusError), trio.fail_after(RECONNECT):
            async with RabbitBus.connect(proxy.url(AMQP_URL), name="resetting"):
                pass
    assert proxy.refused == 30
