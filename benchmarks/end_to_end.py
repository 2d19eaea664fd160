"""End-to-end clear throughput, latency and memory on real RabbitMQ and PostgreSQL, beside raw baselines.

Usage (each prints one JSON document; see docs/performance.md for the figures):
    .venv/bin/python benchmarks/end_to_end.py [--devices 1000] [--branches 50]
        [--latency-devices 300] [--latency-seconds 20] [--rate R]       # throughput + latency
    .venv/bin/python benchmarks/end_to_end.py --scenario throughput --devices 100 --branches 5
    .venv/bin/python benchmarks/end_to_end.py --gateways 2 --coordinators 2   # separate processes
    .venv/bin/python benchmarks/end_to_end.py --scenario fleet --devices 1000 --branches 50 --latency-ms 100
    .venv/bin/python benchmarks/end_to_end.py --scenario memory --devices 2000 --branches 50

Every service runs in this one process on RabbitBus (a fresh vhost) and a fresh database, unless
--gateways/--coordinators ask for `clearcard serve` processes (then auth, backup, audit and the
bureau simulator share one more process). The fleet is emulated. Scenarios:
  - all (default): raw baselines (plain pika publish without confirms and consume+ack, PostgreSQL
    single-row commits/s), then saturation (every branch submitted at once: device clears/s), then
    latency (one-device requests at a fixed rate, by default half the measured throughput:
    p50/p99 from publishing the request to receiving clear.finished), and the CPU seconds the
    benchmark process, PostgreSQL and RabbitMQ spent per cleared device;
  - throughput: raw baselines and saturation only;
  - fleet: one device alone, then the whole fleet at once (use --latency-ms 100): the ratio;
  - memory: every device of the fleet leased and held in flight by the coordinator (its
    per-gateway limit set to 2 drives two at a time; the rest wait leased, as behind slow
    devices); tracemalloc counts what was allocated with a coordinator frame on the stack
    (services/coordinator/), per in-flight clear.
Requests are followed by one consumer of clear.finished/clear.rejected for the whole benchmark,
not one queue per request bound to every clear event (which made the client, not the system,
the cost at many requests in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pika
import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import Group, write_groups
from clearcard.runtime import ALL, start_services
from shared import logs
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.bus.api import Bus, Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import CLEAR_REQUEST, COMMANDS, EVENTS
from shared.config import Settings
from shared.db import Database
from shared.db.migrate import migrate
from shared.messages.clear import ClearRequest
from shared.messages.codec import encode

CLEARCARD = [sys.executable, "-m", "clearcard"]
FINAL = ("clear.finished", "clear.rejected")


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



def cpu_ticks() -> dict[str, int]:
    """CPU ticks (user+system) so far of this process, PostgreSQL's and RabbitMQ's processes."""
    totals = {"benchmark": 0, "postgres": 0, "rabbitmq": 0, "clearcard_serve": 0}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        if int(entry.name) == me:
            totals["benchmark"] += ticks
        elif comm == "postgres":
            totals["postgres"] += ticks
        elif comm == "beam.smp" and b"rabbit" in cmdline and b"rabbitmqctl" not in cmdline:
            totals["rabbitmq"] += ticks
        elif b"clearcard\x00serve" in cmdline and fields[1] == str(me):
            totals["clearcard_serve"] += ticks
    return totals


def cpu_per_clear(before: dict[str, int], after: dict[str, int], clears: int) -> dict[str, float]:
    """CPU milliseconds per cleared device, by process group."""
    hz = os.sysconf("SC_CLK_TCK")
    return {k: round((after[k] - before[k]) / hz * 1000 / max(clears, 1), 1) for k in after}


@dataclass
class Follower:
    """One queue for the benchmark's clear.finished/clear.rejected events, dispatched by request id."""

    bus: Bus
    token: str
    waiting: dict[str, trio.Event] = field(default_factory=dict)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        queue = await self.bus.declare_reply_queue()
        for key in FINAL:
            await self.bus.bind(queue, EVENTS, key)
        await self.bus.consume(queue, self._on, prefetch=1000, task_status=task_status)

    async def _on(self, delivery: Delivery) -> None:
        event = json.loads(delivery.body)
        done = self.waiting.pop(str(event.get("request_id")), None)
        if done is not None:
            self.final[event["request_id"]] = event
            done.set()

    async def clear(self, branch: str, device_ids: list[str] | None = None) -> dict[str, Any]:
        """Submit one request and wait for its final event."""
        request = ClearRequest(request_id=f"b-{uuid.uuid4().hex[:16]}", branch_id=branch, period="2026-10",
                               device_ids=device_ids or [])
        done = self.waiting[request.request_id] = trio.Event()
        await self.bus.publish(COMMANDS, CLEAR_REQUEST, encode(request), message_id=request.request_id,
                               headers={"authorization": f"Bearer {self.token}"})
        await done.wait()
        return self.final.pop(request.request_id)


def outcomes(events: list[dict[str, Any]]) -> dict[str, int]:
    seen = [r["outcome"] for e in events for r in e.get("results", [])]
    return {o: seen.count(o) for o in sorted(set(seen))}


async def saturation(follower: Follower, group: Group) -> dict[str, Any]:
    """Every branch of the group at once; device clears/s."""
    events: list[dict[str, Any]] = []

    async def one(branch: str) -> None:
        events.append(await follower.clear(branch))

    before = cpu_ticks()
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for branch in group.branch_ids():
            nursery.start_soon(one, branch)
    elapsed = time.perf_counter() - t0
    done = outcomes(events)
    cleared = done.get("cleared", 0)
    return {"devices": group.devices, "branches": group.branches, "latency_ms": group.latency_ms,
            "total_s": round(elapsed, 2), "device_clears_per_s": round(sum(done.values()) / elapsed, 1),
            "outcomes": done, "cpu_ms_per_clear": cpu_per_clear(before, cpu_ticks(), cleared)}


async def latency(follower: Follower, group: Group, rate: float, seconds: float) -> dict[str, Any]:
    """One-device requests at a fixed rate; p50/p99 from publish to clear.finished."""
    members = group.members()
    n = min(len(members), max(1, round(rate * seconds)))
    latencies: list[float] = []
    events: list[dict[str, Any]] = []

    async def one(device: str, branch: str) -> None:
        t0 = time.perf_counter()
        events.append(await follower.clear(branch, [device]))
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, (device, branch) in enumerate(members[:n]):
            await trio.sleep_until(trio.current_time() + max(0.0, start + i / rate - time.perf_counter()))
            nursery.start_soon(one, device, branch)
    return {"rate_per_s": round(rate, 1), "requests": n, "outcomes": outcomes(events),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1)}


@asynccontextmanager
async def fresh_database(pg: str) -> AsyncIterator[str]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg)
    await trio_asyncio.aio_as_trio(admin.execute)(f'CREATE DATABASE "{name}"')
    try:
        yield pg.rsplit("/", 1)[0] + "/" + name
    finally:
        with trio.CancelScope(shield=True):
            await trio_asyncio.aio_as_trio(admin.execute)(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await trio_asyncio.aio_as_trio(admin.close)()


@asynccontextmanager
async def fresh_vhost(amqp: str) -> AsyncIterator[str]:
    name, url = await trio.to_thread.run_sync(vhost, amqp)
    try:
        yield url
    finally:
        with trio.CancelScope(shield=True):
            await trio.run_process(["rabbitmqctl", "-q", "delete_vhost", name], capture_stdout=True)


@asynccontextmanager
async def serving(env: dict[str, str], services: list[str], log: Path) -> AsyncIterator[None]:
    """`clearcard serve ...` in its own process until the block ends (SIGTERM)."""
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process([*CLEARCARD, "serve", *services], env=env,
                                                   stdout=sink, stderr=sink)
        try:
            with trio.fail_after(300):
                while b"serving" not in await trio.Path(log).read_bytes():
                    if process.poll() is not None:
                        raise RuntimeError(f"serve {services} exited:\n{(await trio.Path(log).read_text())[-2000:]}")
                    await trio.sleep(0.2)  # a child's log has no event to wait on
            yield
        finally:
            with trio.CancelScope(shield=True):
                process.terminate()
                with trio.move_on_after(20):
                    await process.wait()
                if process.poll() is None:
                    process.kill()


@asynccontextmanager
async def system(args: argparse.Namespace, groups: list[Group], tmp: Path, url: str, dsn: str,
                 env_extra: dict[str, str]) -> AsyncIterator[tuple[Follower, Bus, Database]]:
    """The fleet, the services (here or in processes) and a follower, ready to clear."""
    fleet = tmp / "fleet.toml"
    write_groups(fleet, groups)
    env = {"CLEARCARD_DATA_DIR": str(tmp), "CLEARCARD_FLEET": str(fleet), "CLEARCARD_DATABASE_URL": dsn,
           "CLEARCARD_AMQP_URL": url, "CLEARCARD_BACKUP_SCHEDULE": "off", **env_extra}
    settings = Settings.from_env(env)
    token = KeyRing(settings.keys_dir).issue("bench", Role.ADMIN, ["*"], ttl=7200)  # keys exist before serving
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(Database.open(dsn, max_size=int(env.get("CLEARCARD_DB_POOL_MAX", 20))))
        await migrate(db)
        bus = await stack.enter_async_context(RabbitBus.connect(url, name="bench"))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        if args.gateways or args.coordinators:
            child = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
            child.update(env, CLEARCARD_LOG_LEVEL="WARNING", CLEARCARD_HTTP="127.0.0.1:0")
            shards = {"CLEARCARD_GATEWAY_SHARDS": str(4 * args.gateways)} if args.gateways > 1 else {}
            await stack.enter_async_context(serving(child, ["auth", "backup", "audit", "authority-sim"],
                                                    tmp / "services.log"))
            for n in range(max(1, args.gateways)):
                await stack.enter_async_context(serving({**child, **shards}, ["gateway"], tmp / f"gateway{n}.log"))
            for n in range(max(1, args.coordinators)):
                await stack.enter_async_context(serving(child, ["coordinator"], tmp / f"coordinator{n}.log"))
        else:
            saved = dict(os.environ)
            os.environ.update(env_extra)  # the coordinator reads its tunables from the environment
            try:
                await start_services(nursery, ALL, bus, db, settings)
            finally:
                os.environ.clear()
                os.environ.update(saved)
        follower = Follower(bus, token)
        await nursery.start(follower.run)
        yield follower, bus, db


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"scenario": args.scenario, "gateways": args.gateways,
                               "coordinators": args.coordinators,
                               "db_pool_max": int(os.environ.get("CLEARCARD_DB_POOL_MAX", 20))}
    async with fresh_vhost(args.amqp) as url, fresh_database(args.pg) as dsn:
        if args.scenario in ("all", "throughput"):
            results["raw_pika_publish_per_s"], results["raw_pika_consume_per_s"] = (
                round(r) for r in await trio.to_thread.run_sync(raw_pika, url))
            results["raw_pg_commits_per_s"] = round(await trio_asyncio.aio_as_trio(raw_pg)(dsn))
        main = Group(args.devices, args.branches, latency_ms=args.latency_ms)
        solo = Group(1, 1, prefix="solo", first=args.devices, latency_ms=args.latency_ms)
        timed = Group(args.latency_devices, 10, prefix="timed", first=args.devices + 1, latency_ms=args.latency_ms)
        env_extra: dict[str, str] = {}
        if args.scenario == "memory":
            # every device leased and held by the coordinator, two driven at a time: a slow
            # device latency instead would also stall the gateway's start (its info per device)
            env_extra = {"CLEARCARD_COORDINATOR_MAX_IN_FLIGHT": str(args.devices + 10),
                         "CLEARCARD_COORDINATOR_PER_GATEWAY": "2",
                         "CLEARCARD_COORDINATOR_PER_BRANCH": str(args.devices + 10)}
        groups = [main, solo] + ([timed] if args.scenario == "all" else [])
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            async with system(args, groups, Path(tmp), url, dsn, env_extra) as (follower, _bus, db):
                results["startup_s"] = round(time.perf_counter() - t0, 2)
                if args.scenario == "memory":
                    results["memory"] = await memory(follower, db, main)
                elif args.scenario == "fleet":
                    t1 = time.perf_counter()
                    one = await follower.clear(solo.branch_ids()[0])
                    single = time.perf_counter() - t1
                    fleet_run = await saturation(follower, main)
                    results["fleet"] = {"one_device_s": round(single, 2), "one_device": outcomes([one]),
                                        **fleet_run, "ratio_to_one_device": round(fleet_run["total_s"] / single, 1)}
                else:
                    results["saturation"] = await saturation(follower, main)
                    if args.scenario == "all":
                        rate = args.rate or results["saturation"]["device_clears_per_s"] / 2
                        results["latency"] = await latency(follower, timed, rate, args.latency_seconds)
    return results


async def memory(follower: Follower, db: Database, group: Group) -> dict[str, Any]:
    """Hold every device of the group in flight (slow devices); coordinator-attributed memory each."""
    coordinator = [tracemalloc.Filter(True, "*services/coordinator/*", all_frames=True)]
    tracemalloc.start(40)
    base = tracemalloc.take_snapshot().filter_traces(coordinator)
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for branch in group.branch_ids():
            nursery.start_soon(follower.clear, branch)
        in_flight = 0
        with trio.move_on_after(600):
            while in_flight < group.devices:
                await trio.sleep(1.0)  # a benchmark's progress poll
                rows = await db.fetch("SELECT count(*) AS n FROM device_clears WHERE lease_owner IS NOT NULL"
                                      " AND outcome IS NULL")
                in_flight = rows[0]["n"]
        await trio.sleep(5.0)  # let every driver reach its first device command
        held = tracemalloc.take_snapshot().filter_traces(coordinator)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        nursery.cancel_scope.cancel()
    grown = sum(s.size_diff for s in held.compare_to(base, "filename"))
    top = [f"{s.traceback[0].filename.rsplit('/', 3)[-1]}:{s.traceback[0].lineno} {s.size_diff // 1024} KiB"
           for s in held.compare_to(base, "lineno")[:8]]
    return {"devices_in_flight": in_flight, "seconds_to_fill": round(time.perf_counter() - t0, 1),
            "coordinator_bytes": grown, "per_in_flight_kib": round(grown / max(in_flight, 1) / 1024, 2),
            "process_peak_traced_mib": round(peak / 2**20, 1), "top_lines": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("all", "throughput", "fleet", "memory"), default="all")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--branches", type=int, default=50)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--latency-devices", type=int, default=300)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=0.0, help="one-device requests/s (default: half the throughput)")
    parser.add_argument("--gateways", type=int, default=0, help="gateway processes (0: all services in this process)")
    parser.add_argument("--coordinators", type=int, default=0, help="coordinator processes")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if (args.gateways or args.coordinators) and args.scenario == "memory":
        parser.error("the memory scenario measures an in-process coordinator")
    if args.gateways or args.coordinators:
        args.gateways, args.coordinators = max(1, args.gateways), max(1, args.coordinators)
    logs.configure("WARNING")  # a log line per backup would be measured too

    async def entry() -> dict[str, Any]:
        async with trio_asyncio.open_loop():
            return await run(args)

    print(json.dumps(trio.run(entry), indent=2))


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
