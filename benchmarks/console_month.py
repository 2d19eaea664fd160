"""The month at a glance and the period report over a large fleet: time, answer size and memory.

Seeds N devices over B branches with their month (tests/console/seed.py: cleared, failed, running,
not started) into a fresh database on the local PostgreSQL (CLEARCARD_TEST_DATABASE_URL or
postgresql://postgres@127.0.0.1:5432/postgres), then times `month_at_a_glance` (what
GET /api/month runs), the Excel report (write-only openpyxl, to a temporary file) and the CSV report,
with the process's peak RSS after each.

    .venv/bin/python benchmarks/console_month.py --devices 50000 --branches 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.console import fleet, month
from services.console.report import Report
from services.console.report_files import csv_chunks, write_xlsx
from shared.db import Database
from shared.db.migrate import migrate
from tests.console.seed import PERIOD, seed_month
from tests.support.servers import PG_ADMIN_DSN, fresh_database

ADMIN = PG_ADMIN_DSN  # CLEARCARD_TEST_DATABASE_URL, as the tests read it


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(devices: int, branches: int) -> None:
    async with fresh_database(ADMIN, prefix="cc_bench") as dsn, Database.open(dsn) as db:
        await migrate(db)
        started = time.perf_counter()
        await seed_month(db, devices, branches)
        print(f"seeded {devices} devices over {branches} branches in {time.perf_counter() - started:.1f} s")
        await db.execute("ANALYZE")
        today = await db.run(fleet.today)
        for n in range(3):
            started = time.perf_counter()
            answer = await db.run(month.month_at_a_glance, PERIOD, today, None, limit=50)
            took = time.perf_counter() - started
            size = len(json.dumps(answer))
            print(f"month at a glance #{n + 1}: {took * 1000:.0f} ms, answer {size / 1024:.1f} KiB, "
                  f"peak RSS {rss_mib():.0f} MiB")
        report = Report(period=PERIOD, branches=None, locale="zh-CN")
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "report.xlsx"
            started = time.perf_counter()
            await write_xlsx(db, report, target)
            print(f"xlsx report: {time.perf_counter() - started:.1f} s, {target.stat().st_size / 1024:.0f} KiB, "
                  f"peak RSS {rss_mib():.0f} MiB")
            started = time.perf_counter()
            written = 0
            async for chunk in csv_chunks(db, report):
                written += len(chunk)
            print(f"csv report: {time.perf_counter() - started:.1f} s, {written / 1024:.0f} KiB, "
                  f"peak RSS {rss_mib():.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=50_000)
    parser.add_argument("--branches", type=int, default=1_000)
    args = parser.parse_args()

    async def run() -> None:
        async with trio_asyncio.open_loop():
            await main(args.devices, args.branches)

    trio.run(run)
