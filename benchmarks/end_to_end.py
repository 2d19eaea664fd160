"""End-to-end clear throughput and latency on real RabbitMQ and PostgreSQL, beside raw baselines.

Usage:
    .venv/bin/python benchmarks/end_to_end.py [--devices 200] [--branches 20] [--latency-ms 0]
        [--amqp amqp://guest:guest@127.0.0.1:5672/%2F] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Every service runs in this one process on RabbitBus (a fresh vhost) and a fresh database; the
fleet is emulated. It prints, from the same run:
  - raw baselines: plain pika publish (no confirms) and consume+ack rates, PostgreSQL commits/s;
  - saturation: all branches submitted at once -> device clears/s and total time;
  - latency: one-device requests at a fixed rate -> p50/p99 end-to-end (publish to finished).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pika
import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import write_fleet
from clearcard.follow import submit_and_follow
from clearcard.runtime import ALL, start_services
from services.auth.roles import Role
from services.auth.tokens import KeyRing
from shared.bus.rabbitmq import RabbitBus
from shared.config import Settings
from shared.db import Database
from shared.db.migrate import migrate
from shared.messages.clear import ClearRequest


def raw_pika(url: str, n: int = 20000) -> tuple[float, float]:
    """Plain BlockingConnection publish (no confirms) and consume+ack, messages/s."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    q = ch.queue_declare(f"raw.{uuid.uuid4().hex}", arguments={"x-queue-type": "quorum"}, durable=True).method.queue
    body = b'{"bench": true}'
    t0 = time.perf_counter()
    for _ in range(n):
        ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=2))
    publish_rate = n / (time.perf_counter() - t0)
    ch.basic_qos(prefetch_count=100)
    got = 0
    t0 = time.perf_counter()
    for method, _props, _body in ch.consume(q, inactivity_timeout=10):
        if method is None:
            break
        ch.basic_ack(method.delivery_tag)
        got += 1
        if got == n:
            break
    consume_rate = got / (time.perf_counter() - t0)
    ch.cancel()
    ch.queue_delete(q)
    conn.close()
    return publish_rate, consume_rate


async def raw_pg(dsn: str, n: int = 3000) -> float:
    """Sequential single-row INSERT transactions, commits/s (asyncio, no trio crossing)."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TEMP TABLE bench (id bigint primary key, v text)")
    t0 = time.perf_counter()
    for i in range(n):
        async with conn.transaction():
            await conn.execute("INSERT INTO bench VALUES ($1, 'x')", i)
    rate = n / (time.perf_counter() - t0)
    await conn.close()
    return rate


def vhost(amqp: str) -> tuple[str, str]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    return name, amqp.rsplit("/", 1)[0] + "/" + quote(name, safe="")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {}
    name, url = await trio.to_thread.run_sync(vhost, args.amqp)
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await trio_asyncio.aio_as_trio(asyncpg.connect)(args.pg)
    await trio_asyncio.aio_as_trio(admin.execute)(f'CREATE DATABASE "{db_name}"')
    dsn = args.pg.rsplit("/", 1)[0] + "/" + db_name
    try:
        results["raw_pika_publish_per_s"], results["raw_pika_consume_per_s"] = await trio.to_thread.run_sync(
            raw_pika, url)
        results["raw_pg_commits_per_s"] = await trio_asyncio.aio_as_trio(raw_pg)(dsn)
        with tempfile.TemporaryDirectory() as tmp:
            fleet = Path(tmp) / "fleet.toml"
            branches = write_fleet(fleet, args.devices, args.branches, latency_ms=args.latency_ms)
            latency_branch_devices = write_fleet(Path(tmp) / "unused.toml", 1, 1)  # noqa: F841
            settings = Settings.from_env({"CLEARCARD_DATA_DIR": tmp, "CLEARCARD_FLEET": str(fleet),
                                          "CLEARCARD_DATABASE_URL": dsn, "CLEARCARD_AMQP_URL": url})
            token = KeyRing(settings.keys_dir).issue("bench", Role.ADMIN, ["*"], ttl=3600)
            async with Database.open(dsn, max_size=20) as db, RabbitBus.connect(url, name="bench") as bus:
                await migrate(db)
                async with trio.open_nursery() as nursery:
                    t0 = time.perf_counter()
                    await start_services(nursery, ALL, bus, db, settings)
                    results["startup_s"] = round(time.perf_counter() - t0, 2)
                    # saturation: every branch at once
                    outcomes: list[str] = []
                    latencies: list[float] = []

                    async def one(branch: str, device_ids: list[str] | None = None) -> None:
                        request = ClearRequest(request_id=f"b-{uuid.uuid4().hex[:12]}", branch_id=branch,
                                               period="2026-10", device_ids=device_ids or [])
                        started = time.perf_counter()
                        followed = await submit_and_follow(bus, request, token)
                        latencies.append(time.perf_counter() - started)
                        outcomes.extend(r["outcome"] for r in followed.final.get("results", []))

                    t0 = time.perf_counter()
                    async with trio.open_nursery() as clears:
                        for branch in branches:
                            clears.start_soon(one, branch)
                    elapsed = time.perf_counter() - t0
                    results["saturation"] = {
                        "devices": args.devices, "branches": args.branches, "latency_ms": args.latency_ms,
                        "total_s": round(elapsed, 2), "device_clears_per_s": round(len(outcomes) / elapsed, 1),
                        "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))},
                    }
                    nursery.cancel_scope.cancel()
    finally:
        await trio_asyncio.aio_as_trio(admin.execute)(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await trio_asyncio.aio_as_trio(admin.close)()
        await trio.run_process(["rabbitmqctl", "-q", "delete_vhost", name], capture_stdout=True)
    results["per_request_latency_s"] = {
        "p50": round(statistics.median(latencies), 3), "p99": round(percentile(latencies, 99), 3),
        "n": len(latencies)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--branches", type=int, default=20)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    async def entry() -> dict[str, object]:
        async with trio_asyncio.open_loop():
            return await run(args)

    print(json.dumps(trio.run(entry), indent=2))


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
