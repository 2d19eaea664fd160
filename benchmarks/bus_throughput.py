"""Confirmed publishes/s and consume+ack/s: RabbitBus against raw pika BlockingConnection.

Usage: .venv/bin/python benchmarks/bus_throughput.py [--url amqp://guest:guest@127.0.0.1:5672/%2F] [-n 20000]

Each run uses its own quorum queue (uuid-named, bound to nothing, deleted afterwards) on the
default exchange. RabbitBus publishes with 50 publishes in flight, each awaiting its own
confirm; BlockingConnection can have only one confirm in flight per channel, so it is shown
with confirms (the product's mode) and without (the raw ceiling). Consuming acks each message
with a prefetch of 100.
"""

from __future__ import annotations

import argparse
import time
import uuid

import pika
import trio

from shared.bus.api import Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import DEFAULT, QueueSpec, Topology

IN_FLIGHT = 50
PREFETCH = 100
BODY = b'{"request_id": "bench", "device_id": "661500000001", "step": "reported"}'


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:9.0f}/s"


async def bench_rabbitbus(url: str, n: int) -> tuple[float, float]:
    spec = QueueSpec(f"bench.{uuid.uuid4().hex}", bindings=())
    async with RabbitBus.connect(url, name="bench") as bus:
        await bus.declare(Topology(queues=(spec,)))
        per_task = n // IN_FLIGHT

        async def publisher(task: int) -> None:
            for i in range(per_task):
                await bus.publish(DEFAULT, spec.name, BODY, message_id=f"{task}-{i}")

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for task in range(IN_FLIGHT):
                nursery.start_soon(publisher, task)
        published = time.perf_counter() - start

        total = per_task * IN_FLIGHT
        seen = 0
        all_seen = trio.Event()

        async def handler(_: Delivery) -> None:
            nonlocal seen
            seen += 1
            if seen == total:
                all_seen.set()

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: bus.consume(
                spec.name, handler, prefetch=PREFETCH, task_status=task_status))
            await all_seen.wait()
            consumed = time.perf_counter() - start
            nursery.cancel_scope.cancel()
    _delete_queues(url, spec)
    return total / published, total / consumed


def bench_blocking(url: str, n: int, confirms: bool) -> tuple[float, float]:
    name = f"bench.{uuid.uuid4().hex}"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    if confirms:
        channel.confirm_delivery()
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    start = time.perf_counter()
    for i in range(n):
        props.message_id = str(i)
        channel.basic_publish("", name, BODY, props)
    if not confirms:
        channel.queue_declare(name, passive=True)  # a round trip: the broker has seen them all
    published = time.perf_counter() - start

    channel.basic_qos(prefetch_count=PREFETCH)
    seen = 0

    def on_message(ch: object, method: object, _props: object, _body: bytes) -> None:
        nonlocal seen
        channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
        seen += 1
        if seen == n:
            channel.stop_consuming()

    start = time.perf_counter()
    channel.basic_consume(name, on_message)
    channel.start_consuming()
    consumed = time.perf_counter() - start
    channel.queue_delete(name)
    connection.close()
    return n / published, n / consumed


def _delete_queues(url: str, spec: QueueSpec) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_delete(spec.name)
    channel.queue_delete(spec.dead_letter_queue)
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("-n", type=int, default=20000, help="messages per measurement")
    args = parser.parse_args()

    print(f"{args.n} messages of {len(BODY)} bytes, quorum queue\n")
    print(f"{'':44}{'publish':>11}{'consume+ack':>14}")
    pub, con = trio.run(bench_rabbitbus, args.url, args.n)
    print(f"{'RabbitBus (confirms, 50 in flight)':44}{rate(1, 1 / pub):>11}{rate(1, 1 / con):>14}")
    pub, con = bench_blocking(args.url, min(args.n, 5000), confirms=True)
    print(f"{'BlockingConnection (confirms, 1 in flight)':44}{rate(1, 1 / pub):>11}{rate(1, 1 / con):>14}")
    pub, con = bench_blocking(args.url, args.n, confirms=False)
    print(f"{'BlockingConnection (no confirms)':44}{rate(1, 1 / pub):>11}{rate(1, 1 / con):>14}")


if __name__ == "__main__":
    main()
