"""What each step does to one device. Every effect is idempotent, so a resumed step is safe.

Coarse commands carry a step's work ahead to the next steps: `report_stage` on the device
(upload, report and challenge in one turn), `clearance` at the bureau (report, status and
package in one call) and the write-back's read-back. What they bring for a later step is kept
in the state under keys starting with `_` (IN_MEMORY), which are never persisted: a clear
resumed by another process (or after a crash) has none of it and asks for each part on its
own, the way every step did before, so resumption never trusts an answer from an earlier drive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.coordinator.bureau_view import view_of
from services.coordinator.machine import (
    AlreadyCleared,
    Proceed,
    Refuse,
    decide_after_precheck,
    remaining_after_writeback,
)
from services.coordinator.ports import Ports
from services.coordinator.repository import Work
from shared.errors import ClearCardError, ErrorCode
from shared.messages.authority import (
    Accepted,
    Clearance,
    ClearanceRequest,
    DeclarationQuery,
    DeclarationStatus,
    OfflineInvoicesUpload,
    PackageReply,
    PackageRequest,
    ReportSubmission,
)
from shared.messages.backup import BackupTaken, TakeBackup
from shared.messages.clear import Step
from shared.messages.device import (
    Challenge,
    DeviceCommand,
    DeviceInfo,
    PeriodCommand,
    ReportStage,
    ReportStageCommand,
    WritebackCommand,
    WritebackReply,
)

IN_MEMORY = "_"  # state keys with this prefix live only within one drive (never saved)
STAGED, CLEARANCE, READBACK = "_staged", "_clearance", "_readback"


def persisted(state: dict[str, Any]) -> dict[str, Any]:
    """The part of a step's state that is saved (what a resumed clear may rely on)."""
    return {k: v for k, v in state.items() if not k.startswith(IN_MEMORY)}


def answered_ahead(step: Step, state: dict[str, Any]) -> bool:
    """Whether an earlier command of this drive already brought what `step` needs (no I/O)."""
    if step is Step.DECLARATION_CHECKED:
        clearance = state.get(CLEARANCE)
        return isinstance(clearance, Clearance) and clearance.status is not None
    if step is Step.VERIFIED:
        return isinstance(state.get(READBACK), DeviceInfo)
    return False


class DeviceAlreadyCleared(Exception):
    """The device needs nothing for this period: the clear ends `already_cleared`."""


@dataclass(frozen=True)
class StepResult:
    state: dict[str, Any]
    backup_id: str | None = None


def _period_command(work: Work, types: list[str]) -> PeriodCommand:
    return PeriodCommand(device_id=work.device_id, period=work.period, invoice_types=types,
                         request_id=work.request_id)


async def precheck(ports: Ports, work: Work, state: dict[str, Any]) -> StepResult:
    """PIN, lock, clock and window checks; decides which types this clear covers."""
    info = await ports.gateway(work.gateway_id, "precheck",
                               _period_command(work, list(work.invoice_types)), DeviceInfo)
    decision = decide_after_precheck(info, work.period, work.invoice_types)
    if isinstance(decision, AlreadyCleared):
        raise DeviceAlreadyCleared
    if isinstance(decision, Refuse):
        raise ClearCardError(decision.code, decision.message)
    assert isinstance(decision, Proceed)
    return StepResult({**state, "types": list(decision.types)})


async def back_up(ports: Ports, work: Work, state: dict[str, Any]) -> StepResult:
    """A verified backup of the device's period, taken before anything irreversible."""
    # device errors (offline, busy) pass through as themselves; storage failures are BACKUP_FAILED
    taken = await ports.backup("take", TakeBackup(
        request_id=work.request_id, device_id=work.device_id, period=work.period,
        gateway_id=work.gateway_id), BackupTaken)
    return StepResult({**state, "backup_id": taken.backup_id}, backup_id=taken.backup_id)


async def _stage(ports: Ports, work: Work, types: list[str]) -> tuple[ReportStage, int]:
    """`report_stage` until the device reported; offline invoices go to the bureau in between."""
    command = ReportStageCommand(device_id=work.device_id, period=work.period, invoice_types=types,
                                 request_id=work.request_id)
    stage = await ports.gateway(work.gateway_id, "report_stage", command, ReportStage)
    if not stage.offline:
        return stage, 0
    await ports.authority("upload_offline", OfflineInvoicesUpload(
        device_id=work.device_id, taxpayer_id=work.taxpayer_id, period=work.period,
        invoices=stage.offline), Accepted)
    again = command.model_copy(update={"offline_sent": True})
    return await ports.gateway(work.gateway_id, "report_stage", again, ReportStage), len(stage.offline)


async def upload_offline(ports: Ports, work: Work, state: dict[str, Any]) -> StepResult:
    """Invoices issued offline reach the bureau before the device may report.

    The device's report and challenge come back in the same command when nothing was pending
    (or in the next one after the upload), kept for the next step.
    """
    stage, uploaded = await _stage(ports, work, state["types"])
    return StepResult({**state, "offline_uploaded": uploaded, STAGED: stage})


async def report(ports: Ports, work: Work, state: dict[str, Any]) -> StepResult:
    """Report the period summary copied off the device to the bureau (抄税 + 上报汇总).

    One `clearance` call also brings the filing, the comparison and (when both allow it) the
    package bound to the device's challenge, for the next two steps.
    """
    stage = state.get(STAGED)
    if not isinstance(stage, ReportStage):
        stage, _ = await _stage(ports, work, state["types"])
    summaries = stage.summaries or []
    submission = ReportSubmission(device_id=work.device_id, taxpayer_id=work.taxpayer_id,
                                  machine_no=work.machine_no, period=work.period, summaries=summaries)
    rest = {k: v for k, v in state.items() if k != STAGED}
    reported = sorted(s.invoice_type for s in summaries)
    if not stage.challenge:  # a device answering without one: the report alone, the rest later
        await ports.authority("submit_report", submission, Accepted)
        return StepResult({**rest, "reported": reported})
    clearance = await ports.authority("clearance", ClearanceRequest(
        report=submission, family=work.family, invoice_types=list(state["types"]),
        challenge=stage.challenge), Clearance)
    return StepResult({**rest, "reported": reported, CLEARANCE: clearance})


async def check_declaration(ports: Ports, work: Work, state: dict[str, Any]) -> StepResult:
    """The return must be filed and the comparison passed before the bureau issues a package.

    A pending comparison is not a failure of the return: the clear ends COMPARISON_PENDING and
    the coordinator's leader asks the bureau again on its schedule and resumes the clear once
    the comparison is done (bureau_watch.py).
    """
    clearance = state.get(CLEARANCE)
    status = clearance.status if isinstance(clearance, Clearance) else None
    if status is None:
        status = await ports.authority("declaration_status", DeclarationQuery(
            taxpayer_id=work.taxpayer_id, period=work.period, device_id=work.device_id),
            DeclarationStatus)
    if not status.declared:
        raise ClearCardError(ErrorCode.NOT_DECLARED)
    if status.comparison == "fail":
        raise ClearCardError(ErrorCode.COMPARISON_FAILED)
    if status.comparison != "pass":
        raise ClearCardError(ErrorCode.COMPARISON_PENDING, pending_message(work.period))
    filing, comparison = view_of(status)
    return StepResult({**state, "bureau": {"filing": filing, "comparison": comparison}})


def pending_message(period: str) -> str:
    """What a device waiting for the bureau's comparison tells a person."""
    return (f"Awaiting the bureau's comparison (一窗式比对) of the {period} return with the reported "
            "invoices: the return is filed and the summary reported. ClearCard asks the bureau again "
            "on its schedule and finishes the clear by itself once the comparison passes; nothing is "
            "needed from you unless it fails.")


async def write_back(ports: Ports, work: Work, state: dict[str, Any]) -> StepResult:
    """Write the bureau's package to the device. No undo.

    Within one drive the package `clearance` brought is written at once: no write-back was
    started before this drive (the runner's write-back intent), so nothing can have been applied
    but by this package, which the device answers `already` when repeated. Otherwise (resumed,
    or no package yet) the device is read first and a package fetched for a fresh challenge.
    """
    rest = {k: v for k, v in state.items() if k != CLEARANCE}
    clearance = state.get(CLEARANCE)
    package = clearance.package if isinstance(clearance, Clearance) else None
    if package is not None and sorted(package.invoice_types) == sorted(state["types"]):
        try:
            reply = await ports.gateway(work.gateway_id, "writeback", WritebackCommand(
                device_id=work.device_id, package=package, request_id=work.request_id), WritebackReply)
        except ClearCardError as exc:
            if not (exc.code == ErrorCode.WRITEBACK_REJECTED and _challenge_mismatch(exc)):
                raise
            # the challenge was replaced since (a gateway that restarted ran a command again):
            # one fresh challenge and package is safe, a second mismatch stops the clear
            return await _write_back_afresh(ports, work, rest, attempts=(2,))
        else:
            return StepResult({**rest, "written_back": sorted(reply.applied + reply.already),
                               "package_id": package.package_id, READBACK: reply.info})
    return await _write_back_afresh(ports, work, rest)


async def _write_back_afresh(ports: Ports, work: Work, state: dict[str, Any],
                             attempts: tuple[int, ...] = (1, 2)) -> StepResult:
    info = await ports.gateway(work.gateway_id, "info", DeviceCommand(device_id=work.device_id),
                               DeviceInfo)
    remaining = remaining_after_writeback(info, work.period, tuple(state["types"]))
    if not remaining:  # applied before a crash: never write back twice
        return StepResult({**state, "written_back": state["types"]})
    for attempt in attempts:
        challenge = await ports.gateway(work.gateway_id, "challenge",
                                        DeviceCommand(device_id=work.device_id), Challenge)
        package = await ports.authority("writeback_package", PackageRequest(
            device_id=work.device_id, taxpayer_id=work.taxpayer_id, machine_no=work.machine_no,
            family=work.family, period=work.period, invoice_types=list(remaining),
            challenge=challenge.challenge), PackageReply)
        try:
            reply = await ports.gateway(work.gateway_id, "writeback", WritebackCommand(
                device_id=work.device_id, package=package.package, request_id=work.request_id), WritebackReply)
        except ClearCardError as exc:
            # A gateway that died after answering `challenge` but before its ack is handed the
            # command again on restart and issues a new challenge. The device checks the challenge
            # before applying anything, so one fresh challenge and package is safe; a second
            # mismatch is someone else using the device, and the clear stops.
            if attempt == 1 and exc.code == ErrorCode.WRITEBACK_REJECTED and _challenge_mismatch(exc):
                continue
            raise
        return StepResult({**state, "written_back": sorted(reply.applied + reply.already),
                           "package_id": package.package.package_id, READBACK: reply.info})
    raise AssertionError("unreachable")


def _challenge_mismatch(exc: ClearCardError) -> bool:
    return "challenge mismatch" in exc.message.lower()


async def verify(ports: Ports, work: Work, state: dict[str, Any]) -> StepResult:
    """Read the device back: every type of this clear must now be cleared.

    The write-back's own read-back serves when it came with the answer (same drive).
    """
    info = state.get(READBACK)
    if not isinstance(info, DeviceInfo):
        info = await ports.gateway(work.gateway_id, "info", DeviceCommand(device_id=work.device_id),
                                   DeviceInfo)
    state = {k: v for k, v in state.items() if k != READBACK}
    left = remaining_after_writeback(info, work.period, tuple(state["types"]))
    if left:
        raise ClearCardError(
            ErrorCode.WRITEBACK_REJECTED,
            f"After the write-back the device still shows types {', '.join(left)} uncleared.",
        )
    return StepResult({**state, "lock_date": info.monitoring.lock_date})


STEP_EFFECTS: dict[Step, Callable[[Ports, Work, dict[str, Any]], Awaitable[StepResult]]] = {
    Step.PRECHECKED: precheck,
    Step.BACKED_UP: back_up,
    Step.OFFLINE_UPLOADED: upload_offline,
    Step.REPORTED: report,
    Step.DECLARATION_CHECKED: check_declaration,
    Step.WRITTEN_BACK: write_back,
    Step.VERIFIED: verify,
}
