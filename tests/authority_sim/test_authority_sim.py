"""The bureau simulator on the in-memory bus and real PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TypeVar

import pytest
import trio
from authority_fakes import Bureau
from pydantic import BaseModel

from services.authority_sim import inject_faults, issued_packages, run_authority_sim, set_declaration
from shared.bus.memory import MemoryBus
from shared.bus.topology import COMMANDS
from shared.config import Settings
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.authority import (
    Accepted,
    Clearance,
    ClearanceRequest,
    DeclarationBatch,
    DeclarationBatchQuery,
    DeclarationQuery,
    DeclarationStatus,
    OfflineInvoicesUpload,
    PackageReply,
    PackageRequest,
    ReportSubmission,
)
from shared.messages.device import Invoice, TypeSummary
from shared.tax_calendar import DEFAULT, load_calendar
from shared.writeback_package import emulated_device_key, open_sealed

R = TypeVar("R", bound=BaseModel)

DISK, UKEY, GOLDEN = "661500000001", "661500000002", "661500000003"
TAXPAYERS = {DISK: "91420100MA4K0001XK", UKEY: "91420100MA4K0002XL", GOLDEN: "91420100MA4K0003XM"}
MACHINES = {DISK: 0, UKEY: 1, GOLDEN: 0}
FAMILIES = {DISK: "tax_control_disk", UKEY: "ukey", GOLDEN: "golden_tax_disk"}


async def _call(b: Bureau, op: str, request: BaseModel, reply: type[R]) -> R:
    with trio.fail_after(10):
        return await b.rpc.call(COMMANDS, f"authority.{op}", request, reply)


def _summary(invoice_type: str, period: str = "2026-10") -> TypeSummary:
    return TypeSummary(invoice_type=invoice_type, period=period, opening_stock=100, bought=0,
                       closing_stock=80, normal_count=20, normal_amount="20000.00", normal_tax="2600.00",
                       negative_count=0, negative_amount="0.00", negative_tax="0.00", void_count=0,
                       signature="ab" * 32)


async def _report(b: Bureau, device: str, *types: str, period: str = "2026-10") -> Accepted:
    msg = ReportSubmission(device_id=device, taxpayer_id=TAXPAYERS[device], machine_no=MACHINES[device],
                           period=period, summaries=[_summary(t, period) for t in types])
    return await _call(b, "submit_report", msg, Accepted)


async def _status(b: Bureau, device: str, period: str = "2026-10", taxpayer: str | None = None
                  ) -> DeclarationStatus:
    msg = DeclarationQuery(device_id=device, taxpayer_id=taxpayer or TAXPAYERS[device], period=period)
    return await _call(b, "declaration_status", msg, DeclarationStatus)


def _package_request(device: str, *types: str, period: str = "2026-10") -> PackageRequest:
    return PackageRequest(device_id=device, taxpayer_id=TAXPAYERS[device], machine_no=MACHINES[device],
                          family=FAMILIES[device], period=period, invoice_types=list(types),
                          challenge="c0ffee42")


async def _refusal(b: Bureau, op: str, request: BaseModel, reply: type[BaseModel]) -> ClearCardError:
    with pytest.raises(ClearCardError) as err:
        await _call(b, op, request, reply)
    return err.value


async def test_declaration_status_follows_the_fleet_and_the_reports(bureau: Bureau) -> None:
    assert await _status(bureau, DISK) == DeclarationStatus(declared=True, comparison="pending")
    await _report(bureau, DISK, "004")
    assert await _status(bureau, DISK) == DeclarationStatus(declared=True, comparison="pass")
    assert await _status(bureau, UKEY) == DeclarationStatus(declared=False, comparison="pending")
    await _report(bureau, GOLDEN, "007")
    assert await _status(bureau, GOLDEN) == DeclarationStatus(declared=True, comparison="fail")
    assert await _status(bureau, "661599999999", taxpayer=TAXPAYERS[DISK]) == DeclarationStatus(
        declared=False, comparison="pending")
    assert (await _status(bureau, DISK, "2026-09")).comparison == "pass"
    assert not (await _status(bureau, DISK, "2026-11")).declared
    assert not (await _status(bureau, DISK, taxpayer=TAXPAYERS[UKEY])).declared


async def test_a_package_is_issued_sealed_for_the_device(bureau: Bureau, database: Database) -> None:
    await _report(bureau, DISK, "004", "007")
    reply = await _call(bureau, "writeback_package", _package_request(DISK, "004", "007"), PackageReply)
    package = reply.package
    payload = open_sealed(package.package_id, package.ciphertext, package.checksum,
                          emulated_device_key(DISK, TAXPAYERS[DISK]))
    assert payload == {
        "package_id": package.package_id,
        "device_id": DISK,
        "taxpayer_id": TAXPAYERS[DISK],
        "machine_no": 0,
        "period": "2026-10",
        "invoice_types": ["004", "007"],
        "issued_at": package.issued_at,
        "challenge": "c0ffee42",
        "next_lock_date": "2026-12-15",
        "clock_block": package.issued_at,
    }
    assert package.next_lock_date == "2026-12-15" and package.clock_block == package.issued_at
    issued = datetime.fromisoformat(package.issued_at)
    start = datetime.fromisoformat("2026-11-03T09:00:00+08:00")
    assert start <= issued < start + timedelta(minutes=5) and issued.utcoffset() == timedelta(hours=8)
    again = await _call(bureau, "writeback_package", _package_request(DISK, "004", "007"), PackageReply)
    assert again.package.package_id != package.package_id
    recorded = await issued_packages(database, DISK)
    assert [p["package_id"] for p in recorded] == [package.package_id, again.package.package_id]


async def test_packages_for_other_families_carry_no_clock_block(bureau: Bureau, database: Database) -> None:
    await set_declaration(database, UKEY, declared=True)
    await _report(bureau, UKEY, "026")
    reply = await _call(bureau, "writeback_package", _package_request(UKEY, "026"), PackageReply)
    assert reply.package.clock_block is None and reply.package.machine_no == 1


async def test_refusals_name_their_reason(bureau: Bureau, database: Database) -> None:
    err = await _refusal(bureau, "writeback_package", _package_request(UKEY, "026"), PackageReply)
    assert err.code is ErrorCode.NOT_DECLARED
    err = await _refusal(bureau, "writeback_package", _package_request(DISK, "004"), PackageReply)
    assert err.code is ErrorCode.INVALID_REQUEST and "no summary was reported" in err.message
    await _report(bureau, DISK, "004")
    err = await _refusal(bureau, "writeback_package", _package_request(DISK, "004", "007"), PackageReply)
    assert err.code is ErrorCode.INVALID_REQUEST and "007" in err.message and "004" not in err.message
    await _report(bureau, GOLDEN, "007")
    err = await _refusal(bureau, "writeback_package", _package_request(GOLDEN, "007"), PackageReply)
    assert err.code is ErrorCode.COMPARISON_FAILED
    err = await _refusal(bureau, "writeback_package", _package_request(DISK), PackageReply)
    assert err.code is ErrorCode.INVALID_REQUEST
    stranger = _package_request(DISK, "004").model_copy(update={"taxpayer_id": TAXPAYERS[UKEY]})
    err = await _refusal(bureau, "writeback_package", stranger, PackageReply)
    assert err.code is ErrorCode.INVALID_REQUEST and "registered to taxpayer" in err.message
    assert await issued_packages(database, DISK) == []
    # the bureau's side changes: the return is filed and compared again
    await set_declaration(database, GOLDEN, comparison="pass")
    await _call(bureau, "writeback_package", _package_request(GOLDEN, "007"), PackageReply)


async def test_reports_and_offline_uploads_are_idempotent(bureau: Bureau, database: Database) -> None:
    assert (await _report(bureau, DISK, "004", "007")).accepted == 2
    assert (await _report(bureau, DISK, "004")).accepted == 1
    rows = await database.fetch("SELECT invoice_type FROM authority_reports WHERE device_id = $1", DISK)
    assert sorted(r["invoice_type"] for r in rows) == ["004", "007"]
    invoices = [Invoice(invoice_type="004", code="042001", number=f"{n:08d}", issued_at="2026-10-05",
                        amount="100.00", tax="13.00", offline=True) for n in range(3)]
    upload = OfflineInvoicesUpload(device_id=DISK, taxpayer_id=TAXPAYERS[DISK], period="2026-10",
                                   invoices=invoices)
    assert (await _call(bureau, "upload_offline", upload, Accepted)).accepted == 3
    assert (await _call(bureau, "upload_offline", upload, Accepted)).accepted == 3
    assert len(await database.fetch("SELECT 1 FROM authority_offline_invoices")) == 3
    wrong = ReportSubmission(device_id=DISK, taxpayer_id=TAXPAYERS[DISK], machine_no=0, period="2026-10",
                             summaries=[_summary("004", "2026-09")])
    err = await _refusal(bureau, "submit_report", wrong, Accepted)
    assert err.code is ErrorCode.INVALID_REQUEST


async def test_injected_faults_make_the_bureau_unavailable(bureau: Bureau, database: Database) -> None:
    await inject_faults(database, 2)
    for _ in range(2):
        err = await _refusal(bureau, "declaration_status",
                             DeclarationQuery(device_id=DISK, taxpayer_id=TAXPAYERS[DISK], period="2026-10"),
                             DeclarationStatus)
        assert err.code is ErrorCode.AUTHORITY_UNAVAILABLE and err.transient
    assert (await _status(bureau, DISK)).declared
    await inject_faults(database, 1, op="submit_report")
    assert (await _status(bureau, DISK)).declared
    err = await _refusal(bureau, "submit_report",
                         ReportSubmission(device_id=DISK, taxpayer_id=TAXPAYERS[DISK], machine_no=0,
                                          period="2026-10", summaries=[_summary("004")]), Accepted)
    assert err.code is ErrorCode.AUTHORITY_UNAVAILABLE
    assert (await _report(bureau, DISK, "004")).accepted == 1


async def test_malformed_and_unknown_commands_are_answered(bureau: Bureau) -> None:
    err = await _refusal(bureau, "writeback_package",
                         DeclarationQuery(device_id=DISK, taxpayer_id="x", period="2026-10"), PackageReply)
    assert err.code is ErrorCode.INVALID_REQUEST
    err = await _refusal(bureau, "issue_refund", _package_request(DISK, "004"), PackageReply)
    assert err.code is ErrorCode.INVALID_REQUEST


async def test_the_clock_seed_survives_a_restart(database: Database, settings: Settings) -> None:
    for _ in range(2):
        bus = MemoryBus()
        async with trio.open_nursery() as nursery:
            await nursery.start(run_authority_sim, bus, database, settings)
            nursery.cancel_scope.cancel()
    rows = await database.fetch("SELECT fleet_clock FROM authority_clock")
    assert [r["fleet_clock"] for r in rows] == ["2026-11-03T09:00:00+08:00"]


def test_next_lock_date_is_the_next_periods_lock_date() -> None:
    assert DEFAULT.next_lock_date("2026-10") == date(2026, 12, 15)
    assert DEFAULT.next_lock_date("2026-11") == date(2027, 1, 15)
    assert DEFAULT.next_lock_date("2026-12") == date(2027, 2, 15)
    published = load_calendar("cn-2026")  # holidays and weekends move deadlines later
    assert published.next_lock_date("2026-09") == date(2026, 11, 16)
    assert published.next_lock_date("2026-12") == date(2027, 2, 15)  # 2027 not published: the 15th


async def test_a_pending_comparison_waits_then_passes_and_many_devices_answer_at_once(
        bureau: Bureau, database: Database) -> None:
    await set_declaration(database, DISK, comparison="pending")  # by hand: pending until changed
    await _report(bureau, DISK, "004")
    assert await _status(bureau, DISK) == DeclarationStatus(declared=True, comparison="pending")
    refused = await _refusal(bureau, "writeback_package", _package_request(DISK, "004"), PackageReply)
    assert refused.code is ErrorCode.COMPARISON_PENDING
    # seeded from a fleet file: `comparison_pending_minutes` after the report it passes by itself
    await database.execute("UPDATE authority_taxpayers SET pending_minutes = 0 WHERE device_id = $1", DISK)
    queries = [DeclarationQuery(device_id=d, taxpayer_id=TAXPAYERS[d], period="2026-10") for d in (DISK, UKEY, GOLDEN)]
    batch = await _call(bureau, "declaration_statuses", DeclarationBatchQuery(queries=queries), DeclarationBatch)
    assert [(s.device_id, s.declared, s.comparison) for s in batch.statuses] == [
        (DISK, True, "pass"), (UKEY, False, "pending"), (GOLDEN, True, "pending")]  # golden: not reported yet


def _clearance(device: str, *types: str) -> ClearanceRequest:
    report = ReportSubmission(device_id=device, taxpayer_id=TAXPAYERS[device], machine_no=MACHINES[device],
                              period="2026-10", summaries=[_summary(t) for t in types])
    return ClearanceRequest(report=report, family=FAMILIES[device], invoice_types=list(types),
                            challenge="c0ffee42")


async def test_clearance_reports_then_answers_status_and_package(bureau: Bureau, database: Database) -> None:
    passed = await _call(bureau, "clearance", _clearance(DISK, "004", "007"), Clearance)
    assert passed.accepted == 2 and passed.status == DeclarationStatus(declared=True, comparison="pass")
    assert passed.package is not None and passed.package.challenge == "c0ffee42"
    assert passed.package.invoice_types == ["004", "007"]
    assert [p["package_id"] for p in await issued_packages(database, DISK)] == [passed.package.package_id]
    # not filed: the report is still taken, no package
    unfiled = await _call(bureau, "clearance", _clearance(UKEY, "026"), Clearance)
    assert unfiled.accepted == 1 and unfiled.status is not None and not unfiled.status.declared
    assert unfiled.package is None
    rows = await database.fetch("SELECT 1 FROM authority_reports WHERE device_id = $1", UKEY)
    assert len(rows) == 1
    # comparison failed: reported, refused the package
    failed = await _call(bureau, "clearance", _clearance(GOLDEN, "007"), Clearance)
    assert failed.status == DeclarationStatus(declared=True, comparison="fail") and failed.package is None


async def test_clearance_meets_each_parts_faults(bureau: Bureau, database: Database) -> None:
    await inject_faults(database, 1, op="submit_report")
    err = await _refusal(bureau, "clearance", _clearance(DISK, "004"), Clearance)
    assert err.code is ErrorCode.AUTHORITY_UNAVAILABLE
    assert await database.fetch("SELECT 1 FROM authority_reports") == []
    await inject_faults(database, 1, op="declaration_status")
    partial = await _call(bureau, "clearance", _clearance(DISK, "004"), Clearance)
    assert partial == Clearance(accepted=1)  # reported; the status is to be asked on its own
    await inject_faults(database, 1, op="writeback_package")
    no_package = await _call(bureau, "clearance", _clearance(DISK, "004"), Clearance)
    assert no_package.status is not None and no_package.status.comparison == "pass"
    assert no_package.package is None and await issued_packages(database, DISK) == []
    whole = await _call(bureau, "clearance", _clearance(DISK, "004"), Clearance)
    assert whole.package is not None
    invalid = _clearance(DISK, "004").model_copy(update={"challenge": ""})
    assert (await _refusal(bureau, "clearance", invalid, Clearance)).code is ErrorCode.INVALID_REQUEST
