"""The backup service on the in-memory bus with a fake gateway and real PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from backup_fakes import DEVICE, GATEWAY, TAXPAYER, Harness, invoice_number

from services.backup import (
    check_copies,
    list_backups,
    restore_backup,
    rotate_key,
    sealed,
    take_backup,
    verify_backup,
)
from shared.bus.topology import BACKUP, COMMANDS
from shared.config import Settings
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.backup import BackupTaken, BackupVerified, TakeBackup, VerifyBackup

pytestmark = pytest.mark.postgres


async def _take(h: Harness, request_id: str = "req-1") -> BackupTaken:
    msg = TakeBackup(request_id=request_id, device_id=DEVICE, period="2026-10", gateway_id=GATEWAY)
    with trio.fail_after(10):
        return await h.rpc.call(COMMANDS, "backup.take", msg, BackupTaken)


async def _verify(h: Harness, backup_id: str) -> BackupVerified:
    with trio.fail_after(10):
        return await h.rpc.call(COMMANDS, "backup.verify", VerifyBackup(backup_id=backup_id), BackupVerified)


def _stored_files(settings: Settings) -> list[Path]:
    return [p for d in settings.backup_dirs for p in d.rglob("*") if p.is_file()]


async def test_take_then_verify(harness: Harness, database: Database, settings: Settings) -> None:
    taken = await _take(harness)
    assert taken.locations == [str(d) for d in settings.backup_dirs]
    assert taken.backup_id.startswith(f"{DEVICE}-2026-10-")
    files = _stored_files(settings)
    assert [p.name for p in files] == [f"{taken.checksum}.ccbk"] * 2
    verified = await _verify(harness, taken.backup_id)
    assert verified.ok and verified.damaged == []
    [listed] = await list_backups(database)
    assert listed["id"] == taken.backup_id and listed["device_id"] == DEVICE
    assert listed["period"] == "2026-10" and listed["size"] == files[0].stat().st_size
    assert listed["locations"] == taken.locations and listed["taken_at"]


async def test_a_repeated_take_returns_the_same_backup(harness: Harness, database: Database) -> None:
    first = await _take(harness)
    again = await _take(harness)
    assert again == first and harness.gateway.reads == 1
    assert len(await list_backups(database)) == 1
    other = await _take(harness, "req-2")
    assert other.backup_id != first.backup_id


async def test_a_damaged_location_is_named_and_restore_uses_the_other(
    harness: Harness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    taken = await _take(harness)
    primary = settings.backup_dirs[0]
    for path in primary.rglob("*.ccbk"):
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    verified = await _verify(harness, taken.backup_id)
    assert not verified.ok and verified.damaged == [str(primary)]
    [bad, good] = await check_copies(database, settings, taken.backup_id)
    assert "checksum" in (bad.reason or "") and good.ok
    out = await restore_backup(database, settings, taken.backup_id, tmp_path / "restored",
                               expect_taxpayer=TAXPAYER, expect_machine_no=0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device_id"] == DEVICE and manifest["taxpayer_id"] == TAXPAYER
    assert manifest["machine_no"] == 0 and manifest["period"] == "2026-10"
    invoices = json.loads((out / "invoices.json").read_text())
    assert len(invoices) == 10 and invoices[0]["number"] == invoice_number("004", 1)
    monitoring = json.loads((out / "monitoring.json").read_text())
    assert monitoring["lock_date"] == "2026-11-15" and monitoring["types"] == {"004": 0, "007": 0}


async def test_the_products_device_record_is_restored_without_the_pin(
    harness: Harness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    await database.execute(
        "INSERT INTO devices (device_id, family, taxpayer_id, branch_id, gateway_id, invoice_types,"
        " type_status, lock_date, last_seen) VALUES ($1, 'ukey', $2, 'wuhan-hankou', $3,"
        " '{004,007}', '{\"004\": 0}', '2026-11-15', now())",
        DEVICE, TAXPAYER, GATEWAY,
    )
    taken = await _take(harness)
    out = await restore_backup(database, settings, taken.backup_id, tmp_path / "out")
    record = json.loads((out / "device_record.json").read_text())
    assert record["branch_id"] == "wuhan-hankou" and record["lock_date"] == "2026-11-15"
    assert record["type_status"] == {"004": 0} and record["invoice_types"] == ["004", "007"]
    assert "pin_cipher" not in record


async def test_a_missing_copy_is_named_and_no_intact_copy_fails_restore(
    harness: Harness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    taken = await _take(harness)
    primary, secondary = settings.backup_dirs
    for path in secondary.rglob("*.ccbk"):
        path.unlink()
    result = await verify_backup(database, settings, taken.backup_id)
    assert result.damaged == [str(secondary)]
    [_, missing] = await check_copies(database, settings, taken.backup_id)
    assert missing.reason == "the copy is missing"
    for path in primary.rglob("*.ccbk"):
        path.write_bytes(b"CCBK garbage")
    with pytest.raises(ClearCardError) as err:
        await restore_backup(database, settings, taken.backup_id, tmp_path / "out")
    assert err.value.code is ErrorCode.BACKUP_FAILED
    assert str(primary) in err.value.message and str(secondary) in err.value.message


async def test_an_unwritable_location_fails_the_backup(
    database: Database, settings: Settings, harness: Harness, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a backup folder should be")
    broken = replace(settings, backup_dirs=(settings.backup_dirs[0], blocker))
    msg = TakeBackup(request_id="req-1", device_id=DEVICE, period="2026-10", gateway_id=GATEWAY)
    with pytest.raises(ClearCardError) as err:
        await take_backup(database, broken, harness.rpc, msg)
    assert err.value.code is ErrorCode.BACKUP_FAILED and str(blocker) in err.value.message
    assert await list_backups(database) == []


async def test_no_stored_file_holds_plain_invoice_data(harness: Harness, settings: Settings) -> None:
    await _take(harness)
    files = _stored_files(settings) + [p for p in settings.data_dir.rglob("*") if p.is_file()]
    assert files
    secrets = [invoice_number(t, n).encode() for t in ("004", "007") for n in range(1, 6)]
    secrets += [TAXPAYER.encode(), b"1000.00", b"invoice"]
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"{secret!r} in {path}"


async def test_old_backups_still_decrypt_after_key_rotation(
    harness: Harness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    old = await _take(harness, "req-old")
    new_key = await trio.to_thread.run_sync(rotate_key, settings)
    new = await _take(harness, "req-new")
    primary = settings.backup_dirs[0]
    old_file = (primary / DEVICE / f"{old.checksum}.ccbk").read_bytes()
    new_file = (primary / DEVICE / f"{new.checksum}.ccbk").read_bytes()
    assert sealed.key_id_of(new_file) == new_key != sealed.key_id_of(old_file)
    for taken in (old, new):
        assert (await verify_backup(database, settings, taken.backup_id)).ok
        out = await restore_backup(database, settings, taken.backup_id, tmp_path / taken.backup_id)
        assert len(json.loads((out / "invoices.json").read_text())) == 10


async def test_restore_refuses_another_taxpayer_or_machine_unless_forced(
    harness: Harness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    taken = await _take(harness)
    with pytest.raises(ClearCardError, match="same taxpayer"):
        await restore_backup(database, settings, taken.backup_id, tmp_path / "x",
                             expect_taxpayer="91110000100000000X")
    with pytest.raises(ClearCardError, match="same taxpayer"):
        await restore_backup(database, settings, taken.backup_id, tmp_path / "x", expect_machine_no=1)
    assert not (tmp_path / "x").exists()
    out = await restore_backup(database, settings, taken.backup_id, tmp_path / "x",
                               expect_machine_no=1, force=True)
    assert (out / "invoices.json").exists()


async def test_device_errors_pass_through_and_nothing_is_recorded(harness: Harness, database: Database) -> None:
    harness.gateway.offline = True
    with pytest.raises(ClearCardError) as err:
        await _take(harness)
    assert err.value.code is ErrorCode.DEVICE_OFFLINE
    assert await list_backups(database) == []


async def test_unknown_backups_and_malformed_commands_are_answered(harness: Harness) -> None:
    with pytest.raises(ClearCardError) as err:
        await _verify(harness, "no-such-backup")
    assert err.value.code is ErrorCode.INVALID_REQUEST
    bad = VerifyBackup(backup_id="x")  # sent to the take op: missing fields
    with pytest.raises(ClearCardError) as err, trio.fail_after(10):
        await harness.rpc.call(COMMANDS, "backup.take", bad, BackupTaken)
    assert err.value.code is ErrorCode.INVALID_REQUEST
    assert harness.bus.depth(BACKUP.dead_letter_queue) == 0
