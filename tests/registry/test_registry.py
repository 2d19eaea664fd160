"""The registry on real PostgreSQL: import all or none, list, export, retire, PINs, audited."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clearcard.commands.device import _ChainAudit
from clearcard.status_command import device_status
from device_gateway.repository import record_sightings
from device_registry import ImportRefused, PinVault, Registry
from device_registry.directory import export_page, list_page
from device_registry.enrolment import HEADER, to_csv_line
from shared.config import Settings
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.base import taxpayer_check_char

TAXPAYER = "91420100MA4K0001X" + taxpayer_check_char("91420100MA4K0001X")
WRONG_CHECK = TAXPAYER[:17] + ("0" if TAXPAYER[17] != "0" else "1")
A, B, C = "661500000001", "661500000002", "661500000003"
SETTINGS = Settings.from_env({})


def csv(*rows: str) -> list[str]:
    return io.StringIO(",".join(HEADER) + "\n" + "".join(r + "\n" for r in rows)).readlines()


def row(device_id: str, branch: str = "wuhan-hankou", family: str = "ukey", machine: int = 0) -> str:
    return f"{device_id},{family},{TAXPAYER},{branch},{machine}"


@pytest.fixture
async def registry(database: Database, tmp_path: Path) -> AsyncIterator[Registry]:
    yield Registry(database, PinVault.open(tmp_path / "keys"), _ChainAudit(database))


async def actions(db: Database) -> list[tuple[str, str | None]]:
    rows = await db.fetch("SELECT action, device_id FROM audit_log ORDER BY seq")
    return [(r["action"], r["device_id"]) for r in rows]


async def test_one_bad_row_and_a_duplicate_import_nothing_and_are_named(registry: Registry, database: Database) -> None:
    with pytest.raises(ImportRefused) as refused:
        await registry.import_file(csv(row(A), f"{B},ukey,{WRONG_CHECK},wuhan-hankou,0", row(C), row(A)),
                                   actor="admin", source="import", name="devices.csv")
    assert [(e.line, e.message.split(" (")[0]) for e in refused.value.errors] == [
        (3, f"taxpayer id {WRONG_CHECK} has a wrong check character"),
        (5, f"device {A} appears twice"),
    ]
    assert refused.value.code is ErrorCode.INVALID_REQUEST and refused.value.total == 2
    assert await database.fetch("SELECT 1 FROM device_enrolments") == []
    assert await database.fetch("SELECT 1 FROM devices") == []
    record = (await database.fetch("SELECT * FROM audit_log WHERE action = 'device.import'"))[0]
    assert record["outcome"] == "rejected" and record["error_code"] == "INVALID_REQUEST"


async def test_import_enrols_updates_and_is_audited_per_device(registry: Registry, database: Database) -> None:
    counts = await registry.import_file(csv(row(A), row(B)), actor="admin", source="import")
    assert (counts.enrolled, counts.updated, counts.unchanged) == (2, 0, 0)
    again = await registry.import_file(csv(row(A), row(B, branch="wuhan-wuchang", machine=2)), actor="admin",
                                       source="import")
    assert (again.enrolled, again.updated, again.unchanged) == (0, 1, 1)
    devices = {r["device_id"]: r for r in await database.fetch("SELECT * FROM devices")}
    assert devices[B]["branch_id"] == "wuhan-wuchang" and devices[B]["machine_no"] == 2
    assert devices[A]["gateway_id"] is None  # no gateway has seen it yet
    assert [a for a in await actions(database)] == [
        ("device.import", None), ("device.enrolled", A), ("device.enrolled", B),
        ("device.import", None), ("device.updated", B)]
    shown = [r["device_id"] for r in await device_status(database, SETTINGS, None)]
    assert shown == [A, B]


async def test_hardware_seen_but_not_enrolled_is_listed_and_enrolled_where_it_is(
        registry: Registry, database: Database) -> None:
    await database.run(record_sightings, "cabinet-7", {C: "golden_tax_disk"}, True)
    [seen] = await database.run(list_page)
    assert seen["enrolled"] is False and seen["retired"] is False
    assert (seen["gateway_id"], seen["family"], seen["serial"], seen["online"]) == (
        "cabinet-7", "golden_tax_disk", C, True)
    assert await database.run(list_page, "", ["wuhan-hankou"]) == []  # it belongs to no branch
    assert await device_status(database, SETTINGS, None) == []  # not driven, not shown: unknown to the product
    await registry.import_file(csv(row(C, family="ukey")), actor="admin", source="import")
    [listed] = await database.run(list_page)
    assert listed["enrolled"] is True and listed["hardware_family"] == "golden_tax_disk"
    row_ = (await database.fetch("SELECT gateway_id, online FROM devices WHERE device_id = $1", C))[0]
    assert row_["gateway_id"] == "cabinet-7" and row_["online"] is True


async def test_retire_keeps_history_and_a_new_import_brings_it_back(registry: Registry, database: Database) -> None:
    await registry.import_file(csv(row(A), row(B)), actor="admin", source="import")
    await database.execute("INSERT INTO clear_requests (request_id, branch_id, period, mode, subject, trace_id)"
                           " VALUES ('r1', 'wuhan-hankou', '2026-10', 'auto', 't', $1)", "0" * 32)
    await database.execute("INSERT INTO device_clears (request_id, device_id, step) VALUES ('r1', $1, 'reported')", A)
    with pytest.raises(ClearCardError) as busy:
        await registry.retire(A, actor="admin")
    assert busy.value.code is ErrorCode.DEVICE_BUSY and "r1" in busy.value.message
    await database.execute("UPDATE device_clears SET outcome = 'cleared'")
    assert await registry.retire(A, actor="admin") is True
    assert await registry.retire(A, actor="admin") is False
    with pytest.raises(ClearCardError) as unknown:
        await registry.retire(C, actor="admin")
    assert unknown.value.code is ErrorCode.UNKNOWN_DEVICE and "not enrolled" in unknown.value.message
    assert [r["device_id"] for r in await database.fetch("SELECT device_id FROM devices")] == [B]
    assert len(await database.fetch("SELECT 1 FROM device_clears WHERE device_id = $1", A)) == 1
    listed = {r["device_id"]: r for r in await database.run(list_page)}
    assert listed[A]["retired"] is True and listed[A]["retired_at"] and listed[B]["retired"] is False
    assert [e.device_id for e in await database.run(export_page)] == [B]
    with pytest.raises(ClearCardError) as retired:
        await registry.set_pin(A, "12345678", actor="admin")
    assert retired.value.code is ErrorCode.UNKNOWN_DEVICE and "retired" in retired.value.message
    back = await registry.import_file(csv(row(A)), actor="admin", source="import")
    assert back.reinstated == 1 and ("device.reinstated", A) in await actions(database)
    assert {r["device_id"] for r in await database.fetch("SELECT device_id FROM devices")} == {A, B}


async def test_set_pin_is_encrypted_and_each_one_is_a_new_revision(registry: Registry, database: Database,
                                                                   tmp_path: Path) -> None:
    await registry.import_file(csv(row(A)), actor="admin", source="import")
    assert await registry.set_pin(A, "12345678", actor="admin") == 1
    assert await registry.set_pin(A, "12345678", actor="admin") == 2
    [stored] = await database.fetch("SELECT pin_cipher, pin_revision FROM device_enrolments")
    assert b"12345678" not in bytes(stored["pin_cipher"]) and stored["pin_revision"] == 2
    assert PinVault.open(tmp_path / "keys").unseal(bytes(stored["pin_cipher"]), A) == "12345678"
    for bad in ("", "1234 5678", "x" * 33):
        with pytest.raises(ClearCardError) as refused:
            await registry.set_pin(A, bad, actor="admin")
        assert refused.value.code is ErrorCode.INVALID_REQUEST
    audit = await database.fetch("SELECT detail FROM audit_log WHERE action = 'device.pin_recorded'")
    assert len(audit) == 2 and all("12345678" not in json.dumps(r["detail"]) for r in audit)
    assert "12345678" not in json.dumps(await database.run(list_page))


async def test_a_branch_administrator_enrols_only_in_their_branches(registry: Registry, database: Database) -> None:
    with pytest.raises(ImportRefused) as refused:
        await registry.import_file(csv(row(A), row(B, branch="beijing")), actor="admin-wh", source="console",
                                   branches={"wuhan-hankou"})
    assert [e.line for e in refused.value.errors] == [3] and "beijing" in refused.value.errors[0].message
    await registry.import_file(csv(row(A)), actor="admin-wh", source="console", branches={"wuhan-hankou"})
    with pytest.raises(ClearCardError) as denied:
        await registry.retire(A, actor="admin-bj", branches={"beijing"})
    assert denied.value.code is ErrorCode.PERMISSION_DENIED


async def test_a_fleet_sized_file_imports_and_exports_page_by_page(registry: Registry, database: Database) -> None:
    ids = [f"{440000000000 + n}" for n in range(20_000)]
    counts = await registry.import_file(csv(*(row(i, branch=f"b{int(i) % 50}") for i in ids)), actor="admin",
                                        source="import")
    assert counts.enrolled == 20_000
    exported, after = [], ""
    while page := await database.run(export_page, after):
        exported.extend(to_csv_line(e) for e in page)
        after = page[-1].device_id
    assert len(exported) == 20_000 and exported[0] == to_csv_line(
        (await database.run(export_page, "", None, 1))[0])
    again = await registry.import_file(csv(*(line.strip() for line in exported)), actor="admin", source="import")
    assert (again.enrolled, again.updated, again.unchanged) == (0, 0, 20_000)
