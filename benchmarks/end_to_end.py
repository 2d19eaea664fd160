"""End-to-end clear throughput, latency, memory and slow-fleet concurrency on real RabbitMQ and
PostgreSQL, beside raw baselines of the same run, with what each device clear cost.

Usage (each prints one JSON document; docs/performance.md holds the figures). Run on a quiet
machine: the broker's counters are node-wide.
    .venv/bin/python benchmarks/end_to_end.py                      # baselines, throughput, latency
        [--devices 1000] [--branches 50] [--latency-samples 1000] [--rate R] [--warmup 100]
    .venv/bin/python benchmarks/end_to_end.py --scenario throughput --devices 2000 --branches 100
    .venv/bin/python benchmarks/end_to_end.py --gateways 2 --coordinators 2   # `clearcard serve` processes
    .venv/bin/python benchmarks/end_to_end.py --workers 2     # `clearcard serve ... --workers 2`
    .venv/bin/python benchmarks/end_to_end.py --scenario fleet --devices 1000 --branches 50 --latency-ms 1000
    .venv/bin/python benchmarks/end_to_end.py --scenario memory --devices 10000 --branches 500 --latency-ms 600000
        [--coordinators 1]   # slow devices, so the two being driven do not finish and free their places

Needs the broker's counters: `rabbitmq-plugins enable rabbitmq_prometheus` (scripts/services does).

Every service runs in this one process on RabbitBus (a fresh vhost) and a fresh database, unless
--gateways/--coordinators ask for `clearcard serve` processes (then auth, backup, audit and the
bureau simulator share one more process). The fleet is emulated (two invoice types per device).
Scenarios:
  - all (default): baselines, then throughput, then latency on the same system;
  - throughput: a warm-up clear of --warmup devices, then every branch of --devices at once:
    device clears/s and the cost per clear (CPU of Python, RabbitMQ and PostgreSQL; the broker's
    publishes, deliveries and confirms; the product's RPCs; PostgreSQL commits from
    pg_stat_database, read after its backends report, so they include ~11 s of idle polling);
  - latency: --latency-samples one-device requests (each a device of its own) sent on a fixed
    schedule at --rate (default half the measured throughput), each timed from its *scheduled*
    send to its clear.finished, so a late send counts against the system;
  - fleet: one device alone, then the whole fleet at once (use --latency-ms 1000): the ratio;
  - memory: every device held in flight by the coordinator (its per-gateway limit set to 2 drives
    two at a time, the rest wait leased as behind slow devices); tracemalloc counts what was
    allocated with a coordinator frame on the stack (services/coordinator/), per in-flight clear;
    with --coordinators 1 the coordinator runs in a process of its own and its RSS growth is
    measured instead (tracemalloc slows a 10,000-device fill past the 30-minute limit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baselines import broker_confirmed_publish, database_commits
from benchmarks.counters import Reading, cpu_ticks
from benchmarks.fleetgen import Group
from benchmarks.harness import Follower, fresh_database, fresh_vhost, outcomes, system
from shared import logs
from shared.db import Database

STATS_SETTLE_S = 11.0  # PostgreSQL backends report their counters at the latest 10 s after going idle


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def reading(dsn: str) -> Reading:
    await trio.sleep(STATS_SETTLE_S)
    return await trio_asyncio.aio_as_trio(Reading.take)(dsn)


async def with_cpu(server: str, unit: str, call: Any, *args: Any) -> dict[str, Any]:
    """A baseline's figures plus the server's CPU per unit of work in it, to set beside the
    product's per-clear CPU: what a message or a commit costs the broker or PostgreSQL alone."""
    before = cpu_ticks()[server]
    figures = dict(await call(*args))
    ticks = cpu_ticks()[server] - before
    figures[f"{server}_cpu_us_per_{unit}"] = round(ticks / os.sysconf("SC_CLK_TCK") * 1e6 / figures.pop("units"), 1)
    return figures


async def whole_group(follower: Follower, group: Group) -> tuple[list[dict[str, Any]], float]:
    """Every branch of the group at once; the final events and the seconds it took."""
    events: list[dict[str, Any]] = []

    async def one(branch: str) -> None:
        events.append((await follower.clear(branch))[0])

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for branch in group.branch_ids():
            nursery.start_soon(one, branch)
    return events, time.perf_counter() - t0


async def throughput(follower: Follower, group: Group, dsn: str, in_process: bool) -> dict[str, Any]:
    """Device clears/s with every branch submitted at once, and what each clear cost."""
    before = await reading(dsn)
    events, elapsed = await whole_group(follower, group)
    done = outcomes(events)
    after = await reading(dsn)
    return {"devices": group.devices, "branches": group.branches, "total_s": round(elapsed, 2),
            "device_clears_per_s": round(sum(done.values()) / elapsed, 1), "outcomes": done,
            "per_clear": before.per_clear(after, sum(done.values()), in_process_rpcs=in_process)}


async def latency(follower: Follower, group: Group, rate: float, dsn: str, in_process: bool) -> dict[str, Any]:
    """One-device requests on a fixed schedule; latency from each request's scheduled send."""
    members = group.members()
    latencies: list[float] = []
    events: list[dict[str, Any]] = []

    async def one(device: str, branch: str, due: float) -> None:
        event, finished = await follower.clear(branch, [device])
        events.append(event)
        latencies.append(finished - due)

    before = await reading(dsn)
    start = time.perf_counter() + 0.5
    async with trio.open_nursery() as nursery:
        for i, (device, branch) in enumerate(members):
            due = start + i / rate
            await trio.sleep(max(0.0, due - time.perf_counter()))
            nursery.start_soon(one, device, branch, due)
    after = await reading(dsn)
    return {"rate_per_s": round(rate, 1), "samples": len(latencies), "outcomes": outcomes(events),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p90_ms": round(percentile(latencies, 90) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1),
            "per_clear": before.per_clear(after, len(latencies), in_process_rpcs=in_process)}


async def fill(follower: Follower, db: Database, group: Group, nursery: trio.Nursery) -> int:
    """Submit every branch of the group and wait until all its devices are leased and unfinished."""
    for branch in group.branch_ids():
        nursery.start_soon(follower.clear, branch)
    in_flight = settled = 0
    with trio.move_on_after(1800):
        while in_flight + settled < group.devices:  # finished devices no longer wait (use slow devices)
            await trio.sleep(1.0)  # a benchmark's progress poll
            rows = await db.fetch("SELECT count(*) FILTER (WHERE lease_owner IS NOT NULL AND outcome IS NULL) AS n,"
                                  " count(*) FILTER (WHERE outcome IS NOT NULL) AS done FROM device_clears")
            in_flight, settled = rows[0]["n"], rows[0]["done"]
    await trio.sleep(5.0)  # let every driver reach its first device command
    return int(in_flight)


async def memory(follower: Follower, db: Database, group: Group) -> dict[str, Any]:
    """Hold every device of the group in flight; coordinator-attributed memory per in-flight clear."""
    coordinator = [tracemalloc.Filter(True, "*services/coordinator/*", all_frames=True)]
    tracemalloc.start(40)
    base = tracemalloc.take_snapshot().filter_traces(coordinator)
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        in_flight = await fill(follower, db, group, nursery)
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


def coordinator_rss_kib() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of the `clearcard serve coordinator` process this benchmark started."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and b"serve\x00coordinator" in (entry / "cmdline").read_bytes()
                    and (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me):
                status = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines())
                return {k: int(status[k].split()[0]) for k in ("VmRSS", "VmHWM")}
        except OSError:
            continue
    raise SystemExit("no `clearcard serve coordinator` process of this benchmark found")


async def memory_in_process_of_its_own(follower: Follower, db: Database, group: Group) -> dict[str, Any]:
    """Hold every device in flight in a coordinator process of its own; its RSS growth per clear.

    An upper bound for the coordinator's state (RSS also holds the allocator's slack, asyncpg's
    buffers and the broker's deliveries), without tracemalloc's slowdown, so 10,000 fill in minutes."""
    before = coordinator_rss_kib()
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        in_flight = await fill(follower, db, group, nursery)
        held = coordinator_rss_kib()
        nursery.cancel_scope.cancel()
    grown = (held["VmRSS"] - before["VmRSS"]) * 1024
    return {"devices_in_flight": in_flight, "seconds_to_fill": round(time.perf_counter() - t0, 1),
            "coordinator_rss_before_mib": round(before["VmRSS"] / 1024, 1),
            "coordinator_rss_held_mib": round(held["VmRSS"] / 1024, 1),
            "coordinator_rss_peak_mib": round(held["VmHWM"] / 1024, 1),
            "per_in_flight_kib": round(grown / max(in_flight, 1) / 1024, 2)}


class Results(dict[str, Any]):
    """The run's JSON document; each part is also printed to stderr as it is measured, so a run
    cut short (a time limit, a crash) still leaves the figures it reached."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        print(json.dumps({key: value}), file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    in_process = not (args.gateways or args.coordinators or args.workers)
    results = Results(scenario=args.scenario, gateways=args.gateways, coordinators=args.coordinators,
                      workers=args.workers,
                      db_pool_max=int(os.environ.get("CLEARCARD_DB_POOL_MAX", 20)))
    async with fresh_vhost(args.amqp) as url, fresh_database(args.pg) as dsn:
        if args.scenario in ("all", "throughput"):
            results["baseline_broker"] = await with_cpu("rabbitmq", "message", trio.to_thread.run_sync,
                                                        broker_confirmed_publish, url)
            commits = trio_asyncio.aio_as_trio(database_commits)
            results["baseline_postgres"] = await with_cpu("postgres", "commit", commits, dsn)
        lat = args.latency_ms
        main = Group(args.devices, args.branches, latency_ms=lat)
        warm = Group(args.warmup, max(1, args.warmup // 20), prefix="warm", first=args.devices, latency_ms=lat)
        solo = Group(1, 1, prefix="solo", first=args.devices + args.warmup, latency_ms=lat)
        timed = Group(args.latency_samples, 50, prefix="timed", first=args.devices + args.warmup + 1, latency_ms=lat)
        env_extra: dict[str, str] = {}
        if args.scenario == "memory":
            env_extra = {"CLEARCARD_COORDINATOR_MAX_IN_FLIGHT": str(args.devices + 10),
                         "CLEARCARD_COORDINATOR_PER_GATEWAY": "2",
                         "CLEARCARD_COORDINATOR_PER_BRANCH": str(args.devices + 10)}
        groups = [main, warm, solo] + ([timed] if args.scenario == "all" else [])
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            async with system(args, groups, Path(tmp), url, dsn, env_extra) as (follower, _bus, db):
                results["startup_s"] = round(time.perf_counter() - t0, 2)
                if args.scenario == "memory":
                    measure = memory_in_process_of_its_own if args.coordinators else memory
                    results["memory"] = await measure(follower, db, main)
                    return results
                if args.warmup:
                    warm_events, warm_s = await whole_group(follower, warm)
                    results["warmup"] = {"devices": args.warmup, "seconds": round(warm_s, 2),
                                         "outcomes": outcomes(warm_events)}
                if args.scenario == "fleet":
                    t1 = time.perf_counter()
                    one, _ = await follower.clear(solo.branch_ids()[0])
                    single = time.perf_counter() - t1
                    fleet_events, fleet_s = await whole_group(follower, main)
                    results["fleet"] = {"devices": args.devices, "latency_ms": lat,
                                        "one_device_s": round(single, 2), "one_device": outcomes([one]),
                                        "fleet_s": round(fleet_s, 2), "outcomes": outcomes(fleet_events),
                                        "ratio_to_one_device": round(fleet_s / single, 2)}
                    return results
                results["throughput"] = await throughput(follower, main, dsn, in_process)
                if args.scenario == "all":
                    rate = args.rate or results["throughput"]["device_clears_per_s"] / 2
                    results["latency"] = await latency(follower, timed, rate, dsn, in_process)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("all", "throughput", "fleet", "memory"), default="all")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--branches", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=100, help="devices cleared before measuring")
    parser.add_argument("--latency-ms", type=int, default=0, help="emulated time per device command")
    parser.add_argument("--latency-samples", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0, help="one-device requests/s (default: half the throughput)")
    parser.add_argument("--gateways", type=int, default=0, help="gateway processes (0: all services in this process)")
    parser.add_argument("--coordinators", type=int, default=0, help="coordinator processes")
    parser.add_argument("--workers", type=int, default=0,
                        help="every service in `clearcard serve --workers N` (0: in this process)")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.workers and (args.gateways or args.coordinators):
        parser.error("--workers runs every service; --gateways/--coordinators choose processes by service")
    if args.scenario == "memory" and (args.workers or args.coordinators > 1):
        parser.error("the memory scenario measures one coordinator: in this process, or with --coordinators 1")
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
