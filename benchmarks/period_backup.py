"""A busy month's backup: time and peak memory of the gateway and backup processes by period size.

Usage (prints one JSON document; docs/performance.md holds the figures):
    .venv/bin/python benchmarks/period_backup.py                        # 15,000 and 60,000 invoices
    .venv/bin/python benchmarks/period_backup.py --invoices 15000 60000 150000

For each size: a fresh vhost and database, one emulated UKey holding that many invoices in its
period (three types, equal shares), and `clearcard serve` processes on real RabbitMQ and
PostgreSQL: `gateway` alone, `backup` alone, and `auth coordinator audit authority-sim`. One clear
of the device is followed through its events. Printed per size:
  - clear_s (request to clear.finished) and backup_s (step `prechecked` to `backed_up`: the
    header, every page, the stream into both locations and reading both copies back);
  - per process, rss_ready_mib (VmRSS once it serves) and peak_rss_mib (VmHWM, /proc/<pid>/status,
    after the clear): the growth is what the period cost the process;
  - `clearcard backup verify` and `backup restore` as processes: seconds and peak RSS (wait4);
  - restore and verify run here under tracemalloc: the peak Python allocation while streaming;
  - the backup file's size and the restored invoices.json's size (what one message would have had
    to carry before periods travelled in pages).
Memory bounded by the chunk shows as peak figures that stay flat while the period grows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import Group, device_id, write_groups
from services.backup import storage, store
from services.backup.restore import restore_first_intact
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
from tests.support.processes import CLEARCARD, serving
from tests.support.servers import fresh_database
from tests.support.vhosts import fresh_vhost

TYPES = ("004", "007", "026")
MIB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


async def follow_clear(bus: Bus, token: str, branch: str) -> tuple[dict[str, Any], dict[str, float]]:
    """Submit one clear and follow its events; the final event and when each step arrived."""
    request = ClearRequest(request_id=f"pb-{uuid.uuid4().hex[:12]}", branch_id=branch, period="2026-10")
    seen: dict[str, float] = {}
    final: dict[str, Any] = {}
    done = trio.Event()

    async def on(delivery: Delivery) -> None:
        event = json.loads(delivery.body)
        if event.get("request_id") != request.request_id:
            return
        if event["event"] == "clear.progress":
            seen[event["step"]] = time.perf_counter()
        elif event["event"] in ("clear.finished", "clear.rejected"):
            final.update(event)
            done.set()

    queue = await bus.declare_reply_queue()
    await bus.bind(queue, EVENTS, "clear.*")
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.consume, queue, on)
        seen["submitted"] = time.perf_counter()
        await bus.publish(COMMANDS, CLEAR_REQUEST, encode(request), message_id=request.request_id,
                          headers={"authorization": f"Bearer {token}"})
        with trio.fail_after(1800):
            await done.wait()
        seen["finished"] = time.perf_counter()
        nursery.cancel_scope.cancel()
    return final, seen


def timed_child(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run one `clearcard` command; its seconds, exit code and peak RSS (wait4's ru_maxrss)."""
    t0 = time.perf_counter()
    child = subprocess.Popen([*CLEARCARD, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"s": round(time.perf_counter() - t0, 2), "exit": child.returncode,
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def traced(work: Any) -> tuple[Any, float]:
    """`work()` under tracemalloc: its result and the peak traced MiB."""
    tracemalloc.start()
    try:
        result = work()
        return result, round(tracemalloc.get_traced_memory()[1] / MIB, 2)
    finally:
        tracemalloc.stop()


async def one_size(args: argparse.Namespace, invoices: int) -> dict[str, Any]:
    per_type = invoices // len(TYPES)
    group = Group(devices=1, branches=1, prefix="busy")
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(fresh_vhost(args.amqp))
        dsn = await stack.enter_async_context(fresh_database(args.pg))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="period-backup-")))
        fleet = tmp / "fleet.toml"
        write_groups(fleet, [group], types=TYPES, invoices_per_type=per_type)
        env = {"CLEARCARD_DATA_DIR": str(tmp / "data"), "CLEARCARD_FLEET": str(fleet), "CLEARCARD_DATABASE_URL": dsn,
               "CLEARCARD_AMQP_URL": url, "CLEARCARD_BACKUP_SCHEDULE": "off"}
        settings = Settings.from_env(env)
        token = KeyRing(settings.keys_dir).issue("bench", Role.ADMIN, ["*"], ttl=7200)  # keys before serving
        db = await stack.enter_async_context(Database.open(dsn))
        await migrate(db)
        child = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
        child.update(env, CLEARCARD_LOG_LEVEL="WARNING", CLEARCARD_HTTP="127.0.0.1:0")
        processes = {
            "gateway": await stack.enter_async_context(serving(child, "gateway", log=tmp / "gateway.log",
                                                               ready_within=120)),
            "backup": await stack.enter_async_context(serving(child, "backup", log=tmp / "backup.log",
                                                              ready_within=120)),
            "others": await stack.enter_async_context(serving(
                child, "auth", "coordinator", "audit", "authority-sim", log=tmp / "others.log", ready_within=120)),
        }
        ready = {name: _status_kib(p.pid, "VmRSS") for name, p in processes.items()}
        bus = await stack.enter_async_context(RabbitBus.connect(url, name="period-bench"))
        final, seen = await follow_clear(bus, token, group.branch_ids()[0])
        peaks = {name: _status_kib(p.pid, "VmHWM") for name, p in processes.items()}
        if final.get("status") != "succeeded":
            raise RuntimeError(f"the clear did not succeed: {final}")
        [result] = final["results"]
        row = await db.run(store.by_id, result["backup_id"])
        assert row is not None
        restored = tmp / "restored"
        verify = await trio.to_thread.run_sync(timed_child, child, "backup", "verify", row.backup_id)
        restore = await trio.to_thread.run_sync(
            timed_child, child, "backup", "restore", row.backup_id, "--to", str(restored))
        _, verify_traced = await trio.to_thread.run_sync(traced, lambda: storage.check_all(
            settings, list(row.locations), row.file_name, row.checksum))
        _, restore_traced = await trio.to_thread.run_sync(traced, lambda: restore_first_intact(
            settings, list(row.locations), row.file_name, row.checksum, tmp / "traced"))
        with (restored / "invoices.json").open("rb") as f:
            restored_count = sum(1 for line in f if line.startswith(b'    "invoice_type"'))
        restored_size = (restored / "invoices.json").stat().st_size
    return {
        "invoices": per_type * len(TYPES),
        "device": device_id(0),
        "clear_s": round(seen["finished"] - seen["submitted"], 2),
        "backup_s": round(seen["backed_up"] - seen["prechecked"], 2),
        "processes": {name: {"rss_ready_mib": round(ready[name] / 1024, 1),
                             "peak_rss_mib": round(peaks[name] / 1024, 1),
                             "growth_mib": round((peaks[name] - ready[name]) / 1024, 1)} for name in processes},
        "verify_process": verify,
        "restore_process": restore,
        "verify_traced_peak_mib": verify_traced,
        "restore_traced_peak_mib": restore_traced,
        "backup_file_mib": round(row.size / MIB, 2),
        "restored_invoices": restored_count,
        "restored_invoices_json_mib": round(restored_size / MIB, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, nargs="+", default=[15_000, 60_000],
                        help="invoices in the device's period (split over three types)")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    logs.configure("WARNING")

    async def entry() -> list[dict[str, Any]]:
        async with trio_asyncio.open_loop():
            return [await one_size(args, n) for n in args.invoices]

    print(json.dumps(trio.run(entry), indent=2))


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
