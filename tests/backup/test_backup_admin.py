"""Retention, repair, key rotation and scheduled backups, on real PostgreSQL with a fake gateway."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import trio
from backup_fakes import DEVICE, GATEWAY, TAXPAYER, Harness

from services.backup import keep_from_env, prune, repair_backup, restore_backup, rotate_backup_key, verify_backup
from services.backup.retention import WriteBack, choose_expired
from services.backup.schedule import (
    BackupsScheduled,
    RoundReport,
    ScheduleBackups,
    SchedulePolicy,
    back_up_devices,
    leadership,
    monthly_request_id,
    run_scheduler,
    schedule_from_env,
)
from services.backup.store import BackupRow
from shared.bus.topology import COMMANDS
from shared.config import Settings
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.backup import BackupTaken, TakeBackup

pytestmark = pytest.mark.postgres
OTHER = "661500000002"


async def _take(h: Harness, request_id: str, device_id: str = DEVICE, period: str = "2026-10") -> BackupTaken:
    msg = TakeBackup(request_id=request_id, device_id=device_id, period=period, gateway_id=GATEWAY)
    with trio.fail_after(10):
        return await h.rpc.call(COMMANDS, "backup.take", msg, BackupTaken)


async def _register(db: Database, *devices: str) -> None:
    for device_id in devices:
        await db.execute(
            "INSERT INTO devices (device_id, family, taxpayer_id, branch_id, gateway_id, open_period)"
            " VALUES ($1, 'ukey', $2, 'wuhan-hankou', $3, '2026-10')", device_id, TAXPAYER, GATEWAY)


async def _written_back(db: Database, request_id: str, device_id: str, period: str, backup_id: str) -> None:
    await db.execute("INSERT INTO clear_requests (request_id, branch_id, period, mode, subject, trace_id)"
                     " VALUES ($1, 'wuhan-hankou', $2, 'auto', 'test', $3)", request_id, period, "0" * 32)
    await db.execute("INSERT INTO device_clears (request_id, device_id, step, outcome, backup_id)"
                     " VALUES ($1, $2, 'verified', 'cleared', $3)", request_id, device_id, backup_id)


def _row(backup_id: str, device_id: str, period: str, minute: int) -> BackupRow:
    return BackupRow(backup_id=backup_id, device_id=device_id, taxpayer_id=TAXPAYER, machine_no=0, family="ukey",
                     period=period, request_id=backup_id, taken_at=datetime(2026, 11, 1, tzinfo=UTC)
                     + timedelta(minutes=minute), size=1, checksum="0" * 64, key_id="k", file_name="f",
                     locations=[])


def test_the_rule_keeps_n_per_device_and_period_and_the_backup_a_writeback_relied_on() -> None:
    rows = [_row(f"a{m}", DEVICE, "2026-10", m) for m in range(5)]
    rows += [_row(f"b{m}", DEVICE, "2026-09", m) for m in range(2)]
    rows += [_row(f"c{m}", OTHER, "2026-10", m) for m in range(3)]
    assert choose_expired(rows, [], 2) == ["a0", "a1", "a2", "c0"]
    assert choose_expired(rows, [WriteBack(DEVICE, "2026-10", "a0")], 2) == ["a1", "a2", "c0"]
    assert choose_expired(rows, [WriteBack(DEVICE, "2026-10", "a0")], 1) == ["a1", "a2", "a3", "b0", "c0", "c1"]
    with pytest.raises(ValueError):
        choose_expired(rows, [], 0)


def test_keep_comes_from_the_environment() -> None:
    assert keep_from_env({}) == 3
    assert keep_from_env({"CLEARCARD_BACKUP_KEEP": " 7 "}) == 7
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="CLEARCARD_BACKUP_KEEP"):
            keep_from_env({"CLEARCARD_BACKUP_KEEP": bad})


async def test_prune_removes_rows_and_files_but_keeps_written_back_evidence(
    harness: Harness, database: Database, settings: Settings
) -> None:
    taken = [await _take(harness, f"req-{n}") for n in range(4)]
    await _written_back(database, "clear-1", DEVICE, "2026-10", taken[0].backup_id)
    dry = await prune(database, settings, keep=1, dry_run=True)
    assert dry.removed == sorted([taken[1].backup_id, taken[2].backup_id]) and dry.dry_run
    assert len(list(settings.backup_dirs[0].rglob("*.ccbk"))) == 4
    report = await prune(database, settings, keep=1)
    assert report.removed == dry.removed and report.kept == 2 and report.leftovers == []
    left = {p.name for d in settings.backup_dirs for p in d.rglob("*.ccbk")}
    assert left == {f"{taken[0].checksum}.ccbk", f"{taken[3].checksum}.ccbk"}
    for kept in (taken[0], taken[3]):
        assert (await verify_backup(database, settings, kept.backup_id)).ok
    assert (await prune(database, settings, keep=1)).removed == []


async def test_repair_rewrites_damaged_and_missing_copies_from_an_intact_one(
    harness: Harness, database: Database, settings: Settings
) -> None:
    taken = await _take(harness, "req-1")
    primary, secondary = settings.backup_dirs
    assert await repair_backup(database, settings, taken.backup_id) == []
    for path in primary.rglob("*.ccbk"):
        path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    assert await repair_backup(database, settings, taken.backup_id) == [str(primary)]
    assert (await verify_backup(database, settings, taken.backup_id)).ok
    for path in secondary.rglob("*.ccbk"):
        path.unlink()
    assert await repair_backup(database, settings, taken.backup_id) == [str(secondary)]
    assert (await verify_backup(database, settings, taken.backup_id)).ok
    for path in [*primary.rglob("*.ccbk"), *secondary.rglob("*.ccbk")]:
        path.write_bytes(b"CCBK garbage")
    with pytest.raises(ClearCardError) as err:
        await repair_backup(database, settings, taken.backup_id)
    assert err.value.code is ErrorCode.BACKUP_FAILED and "no intact copy" in err.value.message


async def test_key_rotation_reencrypts_every_backup_under_the_new_key(
    harness: Harness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    old = await _take(harness, "req-1")
    key_id, moved = await rotate_backup_key(database, settings, reencrypt=True)
    assert moved == [old.backup_id]
    assert not list(settings.backup_dirs[0].rglob(f"{old.checksum}.ccbk"))  # old files are gone
    [path] = settings.backup_dirs[0].rglob("*.ccbk")
    assert path.read_bytes()[6 : 6 + len(key_id)].decode() == key_id
    assert (await verify_backup(database, settings, old.backup_id)).ok
    out = await restore_backup(database, settings, old.backup_id, tmp_path / "out")
    assert len(json.loads((out / "invoices.json").read_text())) == 10
    newer, again = await rotate_backup_key(database, settings)
    assert newer > key_id and again == []


async def test_schedule_backs_up_registered_devices_once_per_request(harness: Harness, database: Database) -> None:
    await _register(database, DEVICE, OTHER)
    msg = ScheduleBackups(request_id="on-demand-1", device_ids=[DEVICE, OTHER, "661500000099"])
    with trio.fail_after(10):
        done = await harness.rpc.call(COMMANDS, "backup.schedule", msg, BackupsScheduled)
    by_device = {r.device_id: r for r in done.results}
    assert by_device[DEVICE].backup_id and by_device[OTHER].backup_id and by_device[DEVICE].period == "2026-10"
    assert by_device["661500000099"].error_code == "UNKNOWN_DEVICE"
    with trio.fail_after(10):
        again = await harness.rpc.call(COMMANDS, "backup.schedule", msg, BackupsScheduled)
    assert again == done and harness.gateway.reads == 2
    harness.gateway.offline = True
    with trio.fail_after(10):
        failed = await harness.rpc.call(COMMANDS, "backup.schedule",
                                        ScheduleBackups(request_id="on-demand-2"), BackupsScheduled)
    assert {r.error_code for r in failed.results} == {"DEVICE_OFFLINE"}


def test_the_monthly_round_is_due_from_its_day_in_china_time() -> None:
    policy = SchedulePolicy(day=3)
    assert monthly_request_id(datetime(2026, 11, 2, 15, 59, tzinfo=UTC), policy) is None
    assert monthly_request_id(datetime(2026, 11, 2, 16, 0, tzinfo=UTC), policy) == "scheduled-2026-11"
    assert monthly_request_id(datetime(2026, 11, 20, tzinfo=UTC), SchedulePolicy(day=None)) is None
    assert schedule_from_env({}).day == 1 and schedule_from_env({"CLEARCARD_BACKUP_SCHEDULE": "off"}).day is None
    assert schedule_from_env({"CLEARCARD_BACKUP_SCHEDULE": "5"}).day == 5
    with pytest.raises(ValueError, match="CLEARCARD_BACKUP_SCHEDULE"):
        schedule_from_env({"CLEARCARD_BACKUP_SCHEDULE": "31"})


async def test_one_leader_at_a_time(database: Database) -> None:
    async with leadership(database.dsn) as first:
        assert first is not None and await first.alive()
        async with leadership(database.dsn) as second:
            assert second is None
    async with leadership(database.dsn) as third:
        assert third is not None


async def test_only_the_leader_runs_the_monthly_round_and_another_takes_over(
    harness: Harness, database: Database, settings: Settings
) -> None:
    await _register(database, DEVICE)
    policy = SchedulePolicy(day=1, interval=0.2, startup_delay=0)
    clock = partial(datetime, 2026, 11, 3, 2, tzinfo=UTC)

    async def take(msg: TakeBackup) -> BackupTaken:
        return await harness.rpc.call(COMMANDS, "backup.take", msg, BackupTaken)

    send_a, reports_a = trio.open_memory_channel[RoundReport](10)
    send_b, reports_b = trio.open_memory_channel[RoundReport](10)
    with trio.fail_after(20):
        async with trio.open_nursery() as outer:
            scope_a = trio.CancelScope()

            async def replica_a() -> None:
                with scope_a:
                    await run_scheduler(database, take, policy, clock=clock, reports=send_a)

            outer.start_soon(replica_a)
            first = await reports_a.receive()
            assert first.leader and first.result is not None
            [result] = first.result.results
            assert result.backup_id and first.result.request_id == "scheduled-2026-11"
            outer.start_soon(partial(run_scheduler, database, take, policy, clock=clock, reports=send_b))
            assert not (await reports_b.receive()).leader
            scope_a.cancel()  # the leader goes away; the other replica takes over
            while not (report := await reports_b.receive()).leader:
                pass
            assert report.result is not None and report.result.results == first.result.results
            outer.cancel_scope.cancel()
    assert harness.gateway.reads == 1  # the round's request id made the second round a no-op
    direct = await back_up_devices(database, take, ScheduleBackups(request_id="scheduled-2026-11"))
    assert direct.results == first.result.results
