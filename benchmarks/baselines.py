"""Raw baselines measured beside every benchmark run: what the broker and the database do alone.

Honest means doing the same durable work the product does, without the product:

- broker: plain pika (no ClearCard code) publishing persistent messages to a durable quorum queue
  with publisher confirms, a window of confirms in flight (as the product pipelines them), then
  consuming them with manual acks;
- database: single-row INSERT transactions into a real (WAL-logged) table with the server's
  `synchronous_commit`, so every COMMIT waits for the WAL flush, sequentially and from several
  connections at once (PostgreSQL groups concurrent flushes);
- both after a warm-up, so connection set-up and first-touch costs stay out of the figures.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pika
from pika.adapters.select_connection import SelectConnection

BODY = b'{"request_id": "baseline", "device_id": "660000000000", "step": "reported"}'


def broker_confirmed_publish(url: str, n: int = 20000, window: int = 200, warmup: int = 2000) -> dict[str, float]:
    """Persistent publishes to a durable quorum queue with confirms (`window` in flight): per second."""
    queue = f"baseline.{uuid.uuid4().hex}"
    state: dict[str, Any] = {"sent": 0, "confirmed": 0, "t0": 0.0, "t1": 0.0, "total": n + warmup}

    def on_open(connection: SelectConnection) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel: Any) -> None:
        state["channel"] = channel
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"},
                              callback=lambda _frame: channel.confirm_delivery(on_confirm, callback=lambda _f: fill()))

    def fill() -> None:
        channel = state["channel"]
        while state["sent"] < state["total"] and state["sent"] - state["confirmed"] < window:
            channel.basic_publish("", queue, BODY, pika.BasicProperties(delivery_mode=2,
                                                                       content_type="application/json"))
            state["sent"] += 1

    def on_confirm(frame: Any) -> None:
        method = frame.method
        before = state["confirmed"]
        if method.multiple:
            state["confirmed"] = method.delivery_tag
        else:
            state["confirmed"] += 1
        if before < warmup <= state["confirmed"]:
            state["t0"] = time.perf_counter()
        if state["confirmed"] >= state["total"]:
            state["t1"] = time.perf_counter()
            state["connection"].close()
            return
        fill()

    connection = SelectConnection(pika.URLParameters(url), on_open_callback=on_open,
                                  on_close_callback=lambda _c, _r: connection.ioloop.stop())
    state["connection"] = connection
    connection.ioloop.start()
    publish_rate = n / (state["t1"] - state["t0"])
    consume_rate = _consume_all(url, queue, n + warmup)
    return {"confirmed_publish_per_s": round(publish_rate), "consume_ack_per_s": round(consume_rate),
            "units": n + warmup}  # each message published, confirmed, delivered and acked once


def _consume_all(url: str, queue: str, total: int) -> float:
    """Consume and ack every message of `queue` (prefetch 200), per second; deletes the queue."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=200)
        got = 0
        t0 = time.perf_counter()
        for method, _props, _body in channel.consume(queue, inactivity_timeout=10):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            got += 1
            if got == total:
                break
        rate = got / (time.perf_counter() - t0)
        channel.cancel()
        channel.queue_delete(queue)
        return rate
    finally:
        conn.close()


async def database_commits(dsn: str, n: int = 3000, connections: int = 8, warmup: int = 300) -> dict[str, float]:
    """WAL-flushing single-row commits into a real table: sequential, and from `connections` at once."""
    table = f"baseline_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, v text NOT NULL)")
        assert await admin.fetchval("SHOW synchronous_commit") != "off"

        async def commits(conn: asyncpg.Connection, count: int) -> None:
            for _ in range(count):
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} (v) VALUES ('x')")

        await commits(admin, warmup)
        t0 = time.perf_counter()
        await commits(admin, n)
        sequential = n / (time.perf_counter() - t0)
        pool = [await asyncpg.connect(dsn) for _ in range(connections)]
        try:
            per = n // connections
            t0 = time.perf_counter()
            await asyncio.gather(*(commits(c, per) for c in pool))
            concurrent = per * connections / (time.perf_counter() - t0)
        finally:
            for conn in pool:
                await conn.close()
        await admin.execute(f"DROP TABLE {table}")
    finally:
        await admin.close()
    return {"sequential_commits_per_s": round(sequential),
            f"commits_per_s_{connections}_connections": round(concurrent),
            "units": warmup + n + per * connections}  # commits made
