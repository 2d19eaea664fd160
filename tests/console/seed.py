"""A month of a large fleet written straight into PostgreSQL, for the month view, reports and benchmarks.

Device i of `seed_month` ends the period in a state chosen by i % 10, so the expected counts are
known exactly: 0-5 cleared (on window day i % 4 + 1, with a backup), 6 failed COMPARISON_FAILED,
7 failed NOT_DECLARED, 8 running, 9 not started with its lock date two days off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

from shared.db import Database

PERIOD = "2026-10"
TODAY = "2026-11-05T09:00:00+08:00"  # the emulated fleet clock: day 5 of the window
LOCK = date(2026, 11, 15)
NEXT_LOCK = date(2026, 12, 15)
FAMILIES = ("ukey", "golden_tax_disk", "tax_control_disk")
TAXPAYER = "91420100MA4K0001XK"


@dataclass(frozen=True)
class Expected:
    devices: int
    cleared: int
    comparison_failed: int
    not_declared: int
    running: int
    not_started: int
    real_minus_fleet: timedelta = timedelta(0)


def device_id(i: int) -> str:
    return f"{660000000000 + i:012d}"


def branch_of(i: int, branches: int) -> str:
    return f"branch-{i % branches:04d}"


def expected(devices: int, shift: timedelta = timedelta(0)) -> Expected:
    states = [i % 10 for i in range(devices)]
    return Expected(devices, sum(s <= 5 for s in states), states.count(6), states.count(7), states.count(8),
                    states.count(9), shift)


def attempt_at(i: int, real_minus_fleet: timedelta) -> datetime:
    """When device i's clear was recorded: on window day i % 4 + 1 of the fleet clock, in real time."""
    return datetime(2026, 11, 1, 1, 0, tzinfo=UTC) + timedelta(days=i % 4, minutes=i % 600) + real_minus_fleet


async def _write(conn: asyncpg.Connection, devices: int, branches: int) -> timedelta:
    # the fleet clock reads TODAY now: recorded (real) times are that far from the fleet's calendar
    shift = datetime.now(UTC) - datetime.fromisoformat(TODAY)
    device_rows, clear_rows, backup_rows = [], [], []
    requests: dict[str, tuple[str, datetime]] = {}
    for i in range(devices):
        state, branch, did = i % 10, branch_of(i, branches), device_id(i)
        cleared = state <= 5
        types = {"004": 2, "007": 2} if cleared else {"004": 1 if state in (6, 7, 8) else 0, "007": 0}
        lock = NEXT_LOCK if cleared else (LOCK - timedelta(days=8) if state == 9 else LOCK)
        device_rows.append((did, FAMILIES[i % 3], TAXPAYER, branch, i % 2, "default", ["004", "007"],
                            json.dumps(types), "2026-11" if cleared else PERIOD, lock, 5, True))
        if state == 9:
            continue
        at = attempt_at(i, shift)
        rid = f"seed-{branch}-{i % 4}"
        requests.setdefault(rid, (branch, at))
        outcome = {6: "failed", 7: "failed", 8: None}.get(state, "cleared")
        code = {6: "COMPARISON_FAILED", 7: "NOT_DECLARED"}.get(state)
        backup = f"bk-{did}" if cleared else None
        clear_rows.append((rid, did, "verified" if cleared else "reported", outcome, code,
                           f"{code} at the bureau" if code else None, backup, at))
        if backup:
            backup_rows.append((backup, did, TAXPAYER, i % 2, FAMILIES[i % 3], PERIOD, rid, at - timedelta(minutes=1),
                                4096, "0" * 64, "k1", f"{did}/x.ccbk", ["/backups/a", "/backups/b"]))
    await conn.execute("INSERT INTO authority_clock (fleet_clock, started_at) VALUES ($1, now())"
                       " ON CONFLICT (id) DO UPDATE SET fleet_clock = $1, started_at = now()", TODAY)
    await conn.copy_records_to_table("devices", records=device_rows, columns=[
        "device_id", "family", "taxpayer_id", "branch_id", "machine_no", "gateway_id", "invoice_types",
        "type_status", "open_period", "lock_date", "pin_tries_left", "online"])
    await conn.copy_records_to_table("clear_requests", records=[
        (rid, branch, PERIOD, "auto", "seed", "0" * 32, "finished", at) for rid, (branch, at) in requests.items()],
        columns=["request_id", "branch_id", "period", "mode", "subject", "trace_id", "status", "created_at"])
    await conn.copy_records_to_table("device_clears", records=clear_rows, columns=[
        "request_id", "device_id", "step", "outcome", "error_code", "error_message", "backup_id", "updated_at"])
    await conn.copy_records_to_table("backups", records=backup_rows, columns=[
        "backup_id", "device_id", "taxpayer_id", "machine_no", "family", "period", "request_id", "taken_at",
        "size", "checksum", "key_id", "file_name", "locations"])
    return shift


async def seed_month(db: Database, devices: int, branches: int) -> Expected:
    """Write `devices` devices over `branches` branches and their month; returns the expected counts."""
    shift = await db.run(_write, devices, branches)
    return expected(devices, shift)
