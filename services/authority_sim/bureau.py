"""The simulated bureau's answers to the `authority.*` commands.

A simulator, not the tax bureau: the real bureau's interface is not public. It reproduces the
states and refusals the product must handle (not filed, comparison failed, no summary reported,
bureau unreachable) and issues write-back packages in the product's own sealed format
(`shared.writeback_package`), which the emulated devices accept.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.authority_sim import rules, store
from shared.db.pool import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.authority import (
    Accepted,
    Clearance,
    ClearanceRequest,
    DeclarationBatch,
    DeclarationBatchQuery,
    DeclarationItem,
    DeclarationQuery,
    DeclarationStatus,
    OfflineInvoicesUpload,
    PackageReply,
    PackageRequest,
    ReportSubmission,
)
from shared.messages.base import INVOICE_TYPES
from shared.messages.device import WritebackPackage
from shared.tax_calendar import TaxCalendar
from shared.writeback_package import emulated_device_key, seal

CLOCK_CALIBRATED_FAMILIES = frozenset({"tax_control_disk"})


def _invalid(message: str) -> ClearCardError:
    return ClearCardError(ErrorCode.INVALID_REQUEST, message)


async def _fault(db: Database, op: str) -> None:
    """Fail this call if a fault was injected for it (committed on its own, before the op)."""
    code = await db.call(store.take_fault, op)
    if code is not None:
        raise ClearCardError(ErrorCode(code), f"simulated bureau fault on {op}")


async def _check_registration(conn: asyncpg.Connection, device_id: str, taxpayer_id: str,
                              machine_no: int | None = None) -> rules.Registration | None:
    reg = await store.registration(conn, device_id)
    if reg is not None and reg.taxpayer_id != taxpayer_id:
        raise _invalid(f"device {device_id} is registered to taxpayer {reg.taxpayer_id}, not {taxpayer_id}")
    if reg is not None and machine_no is not None and reg.machine_no != machine_no:
        raise _invalid(f"device {device_id} is machine {reg.machine_no}, not {machine_no}")
    return reg


async def upload_offline(db: Database, msg: OfflineInvoicesUpload) -> Accepted:
    """Take invoices issued offline; a repeat is accepted again and stored once."""
    await _fault(db, "upload_offline")

    async def unit(conn: asyncpg.Connection) -> None:
        await _check_registration(conn, msg.device_id, msg.taxpayer_id)
        await store.store_offline(conn, msg.device_id, msg.taxpayer_id, msg.period, msg.invoices)

    await db.run(unit)
    return Accepted(accepted=len(msg.invoices))


def _check_summaries(msg: ReportSubmission) -> None:
    if not msg.summaries:
        raise _invalid("a report needs at least one summary")
    for summary in msg.summaries:
        if summary.invoice_type not in INVOICE_TYPES:
            raise _invalid(f"unknown invoice type code {summary.invoice_type!r}")
        if summary.period != msg.period:
            raise _invalid(f"summary of {summary.invoice_type} is for {summary.period}, not {msg.period}")


async def submit_report(db: Database, msg: ReportSubmission) -> Accepted:
    """Take the device's summaries (上报汇总); idempotent per device, period and type."""
    await _fault(db, "submit_report")
    _check_summaries(msg)

    async def unit(conn: asyncpg.Connection) -> None:
        await _check_registration(conn, msg.device_id, msg.taxpayer_id, msg.machine_no)
        await store.store_reports(conn, msg.device_id, msg.taxpayer_id, msg.machine_no, msg.period,
                                  msg.summaries)

    await db.run(unit)
    return Accepted(accepted=len(msg.summaries))


async def _status(conn: asyncpg.Connection, device_id: str, taxpayer_id: str, period: str) -> DeclarationStatus:
    reg = await store.registration(conn, device_id)
    reported_at = await store.first_report(conn, device_id, period)
    return rules.declaration_status(reg, taxpayer_id, period, reported_at, rules.utc_now())


async def declaration_status(db: Database, msg: DeclarationQuery) -> DeclarationStatus:
    """Is the return filed, and did the comparison pass (pending until the summary is reported)?"""
    await _fault(db, "declaration_status")
    return await db.run(_status, msg.device_id, msg.taxpayer_id, msg.period)


async def declaration_statuses(db: Database, msg: DeclarationBatchQuery) -> DeclarationBatch:
    """Many devices' filing and comparison in one answer (the coordinator's scheduled refresh)."""
    await _fault(db, "declaration_statuses")

    async def unit(conn: asyncpg.Connection) -> DeclarationBatch:
        regs = await store.registrations(conn, [q.device_id for q in msg.queries])
        reports = await store.first_reports(conn, [(q.device_id, q.period) for q in msg.queries])
        now = rules.utc_now()
        items = []
        for q in msg.queries:
            status = rules.declaration_status(regs.get(q.device_id), q.taxpayer_id, q.period,
                                              reports.get((q.device_id, q.period)), now)
            items.append(DeclarationItem(device_id=q.device_id, period=q.period, declared=status.declared,
                                         comparison=status.comparison))
        return DeclarationBatch(statuses=items)

    return await db.run(unit)


async def _issue(conn: asyncpg.Connection, msg: PackageRequest, types: list[str],
                 calendar: TaxCalendar) -> WritebackPackage:
    await _check_registration(conn, msg.device_id, msg.taxpayer_id, msg.machine_no)
    status = await _status(conn, msg.device_id, msg.taxpayer_id, msg.period)
    if not status.declared:
        raise ClearCardError(ErrorCode.NOT_DECLARED)
    missing = sorted(set(types) - await store.reported_types(conn, msg.device_id, msg.period))
    if missing:
        raise _invalid(
            f"no summary was reported for invoice type(s) {', '.join(missing)} of {msg.period}; "
            "report the summary before asking for the write-back"
        )
    if status.comparison == "fail":
        raise ClearCardError(ErrorCode.COMPARISON_FAILED)
    if status.comparison == "pending":
        raise ClearCardError(ErrorCode.COMPARISON_PENDING)
    seed = await store.clock_seed(conn)
    if seed is None:
        raise ClearCardError(ErrorCode.INTERNAL, "the bureau simulator's clock was never seeded")
    issued_at = rules.bureau_now(seed[0], seed[1], rules.utc_now()).isoformat(timespec="seconds")
    package_id = uuid.uuid4().hex
    payload: dict[str, Any] = {
        "package_id": package_id,
        "device_id": msg.device_id,
        "taxpayer_id": msg.taxpayer_id,
        "machine_no": msg.machine_no,
        "period": msg.period,
        "invoice_types": types,
        "issued_at": issued_at,
        "challenge": msg.challenge,
        "next_lock_date": calendar.next_lock_date(msg.period).isoformat(),
        # tax control disks take a clock-calibration block (the bureau's time) before the clear block
        "clock_block": issued_at if msg.family in CLOCK_CALIBRATED_FAMILIES else None,
    }
    ciphertext, checksum = seal(package_id, payload, emulated_device_key(msg.device_id, msg.taxpayer_id))
    await store.record_package(conn, payload, checksum)
    return WritebackPackage(**payload, ciphertext=ciphertext, checksum=checksum)


def _package_types(msg: PackageRequest) -> list[str]:
    types = list(dict.fromkeys(msg.invoice_types))
    if not types:
        raise _invalid("a write-back package names at least one invoice type")
    unknown = [t for t in types if t not in INVOICE_TYPES]
    if unknown:
        raise _invalid(f"unknown invoice type code(s) {', '.join(unknown)}")
    if not msg.challenge or len(msg.challenge) > 128:
        raise _invalid("the device's challenge must be 1 to 128 characters")
    return types


async def writeback_package(db: Database, calendar: TaxCalendar, msg: PackageRequest) -> PackageReply:
    """Issue the clear package bound to the device's challenge, or refuse with the reason."""
    await _fault(db, "writeback_package")
    types = _package_types(msg)
    return PackageReply(package=await db.run(_issue, msg, types, calendar))


async def clearance(db: Database, calendar: TaxCalendar, msg: ClearanceRequest) -> Clearance:
    """`submit_report`, `declaration_status` and `writeback_package` in one transaction.

    Each part meets the faults injected for its own command: a fault on the report refuses the
    call; one on a later part leaves that part out of the answer (None), so the caller asks for
    it on its own, and the parts before it stand.
    """
    report = msg.report
    _check_summaries(report)
    request = PackageRequest(device_id=report.device_id, taxpayer_id=report.taxpayer_id,
                             machine_no=report.machine_no, family=msg.family, period=report.period,
                             invoice_types=msg.invoice_types, challenge=msg.challenge)
    types = _package_types(request)

    async def unit(conn: asyncpg.Connection) -> Clearance | str:
        fault = await store.take_fault(conn, "submit_report")
        if fault is not None:
            return fault  # committed (the fault is used up), then refused below
        await _check_registration(conn, report.device_id, report.taxpayer_id, report.machine_no)
        await store.store_reports(conn, report.device_id, report.taxpayer_id, report.machine_no,
                                  report.period, report.summaries)
        reported = Clearance(accepted=len(report.summaries))
        if await store.take_fault(conn, "declaration_status") is not None:
            return reported
        status = await _status(conn, report.device_id, report.taxpayer_id, report.period)
        known = reported.model_copy(update={"status": status})
        if not status.declared or status.comparison != "pass":
            return known
        if await store.take_fault(conn, "writeback_package") is not None:
            return known
        return known.model_copy(update={"package": await _issue(conn, request, types, calendar)})

    answer = await db.run(unit)
    if isinstance(answer, str):
        raise ClearCardError(ErrorCode(answer), "simulated bureau fault on submit_report")
    return answer
