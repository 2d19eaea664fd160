"""The gateway's commands: each one device job through the device's actor, then the registry.

Handlers take one typed command; the state they need lives on the devices and in the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
import trio

from device_gateway.drivers.base import DeviceDriver, DeviceStatus
from device_gateway.repository import (
    pin_state,
    record_info,
    record_online,
    record_refused_pin,
    record_seen,
)
from device_gateway.roster import Roster
from device_registry import store as registry_store
from device_registry.pins import PinVault
from device_registry.registry import unknown_words
from shared import metrics
from shared.bus.rpc import Operation
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.device import (
    Challenge,
    DeviceCommand,
    DeviceInfo,
    InvoicePage,
    InvoicePageCommand,
    OfflineUpload,
    PeriodCommand,
    PeriodHeader,
    ReportReply,
    ReportStage,
    ReportStageCommand,
    WritebackCommand,
    WritebackReply,
)
from shared.outages import OUTAGE_ERRORS, describe
from shared.paging import checked_page

log = structlog.get_logger("clearcard.gateway")

T = TypeVar("T")
COMMAND_TIMEOUT_S = 30.0
WRITEBACK_TIMEOUT_S = 60.0
REGISTRY_REFRESH_S = 30.0


def _status_after(driver: DeviceDriver) -> DeviceStatus | None:
    """INFO after a state-changing command, for the registry; its failure must not hide the result."""
    try:
        return driver.info()
    except ClearCardError:
        return None


def _window_refusal(info: DeviceInfo, period: str) -> ClearCardError | None:
    if period > info.open_period:
        return ClearCardError(ErrorCode.NOT_IN_REPORTING_WINDOW,
                              f"period {period} is not closed on device {info.device_id} "
                              f"(its open period is {info.open_period})")
    if period == info.open_period and info.clock[:10] < info.monitoring.report_window_start:
        return ClearCardError(ErrorCode.NOT_IN_REPORTING_WINDOW,
                              f"the reporting window for {period} opens on "
                              f"{info.monitoring.report_window_start}; device clock {info.clock}")
    return None


@dataclass
class Gateway:
    """What every command needs: the devices this gateway drives, the database and the PIN vault."""

    gateway_id: str
    db: Database
    vault: PinVault
    roster: Roster
    command_timeout: float = COMMAND_TIMEOUT_S
    writeback_timeout: float = WRITEBACK_TIMEOUT_S
    # what the registry last got per device (info without its clock, trio time): an unchanged
    # device is written again only after REGISTRY_REFRESH_S, so polling costs no database write
    _recorded: dict[str, tuple[str, float]] = field(default_factory=dict)

    async def _run(self, device_id: str, label: str, work: Callable[[DeviceDriver], T]) -> T:
        actor = await self.roster.actor(device_id)
        seconds = self.writeback_timeout if label == "writeback" else self.command_timeout
        started, outcome = time.perf_counter(), "interrupted"
        try:
            with trio.fail_after(seconds):
                result = await actor.call(label, work)
            outcome = "ok"
            return result
        except trio.TooSlowError:
            outcome = ErrorCode.TIMEOUT.value
            raise ClearCardError(ErrorCode.TIMEOUT,
                                 f"device {device_id} did not finish {label} within {seconds:g} s") from None
        except ClearCardError as exc:
            outcome = exc.code.value
            if exc.code is ErrorCode.DEVICE_OFFLINE:
                self._recorded.pop(device_id, None)
                await self._registry(record_online, [device_id], False)
            raise
        finally:
            # the gateway's own view: waiting for the device's turn plus the device's work
            metrics.GATEWAY_COMMAND.labels(label, outcome).observe(time.perf_counter() - started)

    async def _registry(self, fn: Callable[..., object], *args: object) -> None:
        """Update the registry, which mirrors the devices: a failure is logged, not answered, since
        the command's effect on the device stands; the device is recorded again next time."""
        try:
            await self.db.run(fn, *args)  # type: ignore[arg-type]
        except OUTAGE_ERRORS as exc:
            log.warning("device registry not updated; the database is away", error=describe(exc))
            self._recorded.clear()
        except Exception as exc:  # a bug (or a device saying something the table cannot hold): loudly
            log.error("device registry not updated: a bug", exc_info=exc)
            self._recorded.clear()

    async def _record(self, device_id: str, status: DeviceStatus | None) -> None:
        now = trio.current_time()
        if status is None:
            last = self._recorded.get(device_id)
            if last is None or now - last[1] >= REGISTRY_REFRESH_S:
                await self._registry(record_seen, device_id)
                self._recorded[device_id] = (last[0] if last else "", now)
            return
        await self._record_info(status.info, now)

    async def _record_info(self, info: DeviceInfo, now: float) -> None:
        shown = info.model_dump_json(exclude={"clock"})
        last = self._recorded.get(info.device_id)
        if last is not None and last[0] == shown and now - last[1] < REGISTRY_REFRESH_S:
            return
        await self._registry(record_info, info)
        self._recorded[info.device_id] = (shown, now)

    # --- commands --------------------------------------------------------------------------

    async def info(self, cmd: DeviceCommand) -> DeviceInfo:
        """What the device says about itself now."""
        return await self.info_of(cmd.device_id)

    async def info_of(self, device_id: str) -> DeviceInfo:
        """INFO for one device, recorded in the registry."""
        status = await self._run(device_id, "info", lambda d: d.info())
        await self._record(device_id, status)
        return status.info

    async def probe(self, device_id: str) -> None:
        """Ask a newly driven device for its state so the registry shows it; a failure is logged."""
        try:
            await self.info_of(device_id)
        except ClearCardError as exc:
            log.warning("new device did not answer", device_id=device_id, code=str(exc.code), error=exc.message)

    def forget(self, device_ids: set[str]) -> None:
        """These devices were disconnected: what they show next is recorded, even if unchanged."""
        for device_id in device_ids:
            self._recorded.pop(device_id, None)

    async def precheck(self, cmd: PeriodCommand) -> DeviceInfo:
        """Verify the PIN on record (never one already refused), then the device's health.

        The registry is asked at every precheck, so a device retired a moment ago is refused
        and a PIN recorded a moment ago (`clearcard device set-pin`) is the one tried.
        """
        await self.roster.actor(cmd.device_id)  # UNKNOWN_DEVICE in plain words
        pins = await self.db.run(pin_state, cmd.device_id)
        if not pins.in_service:  # retired since the roster last looked
            found = await self.db.run(registry_store.standing, cmd.device_id)
            raise ClearCardError(ErrorCode.UNKNOWN_DEVICE, unknown_words(cmd.device_id, found))
        if pins.cipher is None:
            raise ClearCardError(ErrorCode.DEVICE_PIN_INVALID,
                                 f"No certificate PIN is on record for device {cmd.device_id}: record it with "
                                 f"`clearcard device set-pin {cmd.device_id} --pin-stdin`. No try was used.")
        if pins.already_refused:
            raise ClearCardError(
                ErrorCode.DEVICE_PIN_INVALID,
                f"the PIN on record for device {cmd.device_id} was already refused by the device; "
                "it was not tried again (no try used). Correct the PIN on record "
                f"(`clearcard device set-pin {cmd.device_id} --pin-stdin`) before retrying.",
            )
        pin = self.vault.unseal(pins.cipher, cmd.device_id)

        def verify(driver: DeviceDriver) -> tuple[ClearCardError | None, DeviceStatus | None]:
            try:
                driver.verify_pin(pin)
            except ClearCardError as exc:
                if exc.code not in (ErrorCode.DEVICE_PIN_INVALID, ErrorCode.DEVICE_PIN_LOCKED):
                    raise
                return exc, _status_after(driver)
            return None, driver.info()

        refusal, status = await self._run(cmd.device_id, "precheck", verify)
        if refusal is not None and refusal.code is ErrorCode.DEVICE_PIN_INVALID:
            await self._registry(record_refused_pin, cmd.device_id, pins.revision)
        elif refusal is None and pins.refused_revision is not None:
            await self._registry(record_refused_pin, cmd.device_id, None)
        await self._record(cmd.device_id, status)
        if refusal is not None:
            raise refusal
        assert status is not None
        if status.locked:
            raise ClearCardError(ErrorCode.DEVICE_LOCKED,
                                 f"device {cmd.device_id} passed its lock date "
                                 f"{status.info.monitoring.lock_date} uncleared")
        if status.clock_abnormal:
            raise ClearCardError(ErrorCode.DEVICE_CLOCK_ABNORMAL,
                                 f"the clock of device {cmd.device_id} is abnormal ({status.info.clock})")
        unknown = sorted(set(cmd.invoice_types) - set(status.info.types))
        if unknown:
            raise ClearCardError(ErrorCode.INVALID_REQUEST,
                                 f"device {cmd.device_id} does not hold invoice types {unknown}")
        refusal = _window_refusal(status.info, cmd.period)
        if refusal is not None:
            raise refusal
        return status.info

    async def read_period(self, cmd: PeriodCommand) -> PeriodHeader:
        """The period's summaries and invoice counts; its invoices come page by page (`read_invoices`)."""
        header = await self._run(cmd.device_id, "read_period",
                                 lambda d: d.read_period(cmd.period, list(cmd.invoice_types)))
        await self._record_info(header.info, trio.current_time())
        return header

    async def read_invoices(self, cmd: InvoicePageCommand) -> InvoicePage:
        """One checked page of one type's invoices of the period: one device command."""
        page = await self._run(cmd.device_id, "read_invoices",
                               lambda d: d.read_invoices(cmd.period, cmd.invoice_type, cmd.cursor, cmd.limit))
        return checked_page(cmd.device_id, cmd, page)

    async def upload_offline(self, cmd: PeriodCommand) -> OfflineUpload:
        """Upload the offline-issued invoices of the period."""
        upload, status = await self._run(
            cmd.device_id, "upload_offline", lambda d: (d.upload_offline(cmd.period), _status_after(d)))
        await self._record(cmd.device_id, status)
        return upload

    async def report(self, cmd: PeriodCommand) -> ReportReply:
        """Report the period's summaries; types already reported return their summary."""
        reply, status = await self._run(
            cmd.device_id, "report",
            lambda d: (d.report(cmd.period, list(cmd.invoice_types)), _status_after(d)))
        await self._record(cmd.device_id, status)
        return reply

    async def report_stage(self, cmd: ReportStageCommand) -> ReportStage:
        """UPLOAD_OFFLINE, then REPORT and CHALLENGE unless invoices were pending: one device turn.

        UPLOAD_OFFLINE marks the pending invoices uploaded on the device, so the command stops
        right after it when there were any: the bureau must have them before the summary, and the
        caller asks again (`offline_sent`) once it has sent them. Every part is idempotent: a
        repeat uploads nothing new, REPORT answers the stored summaries, CHALLENGE replaces the
        old challenge.
        """
        def work(driver: DeviceDriver) -> tuple[ReportStage, DeviceStatus | None]:
            upload = None if cmd.offline_sent else driver.upload_offline(cmd.period)
            if upload is not None and upload.invoices:
                return ReportStage(device_id=cmd.device_id, offline=upload.invoices), _status_after(driver)
            reply = driver.report(cmd.period, list(cmd.invoice_types))
            challenge = driver.challenge()
            return ReportStage(device_id=cmd.device_id, offline=[], summaries=reply.summaries,
                               challenge=challenge.challenge), _status_after(driver)

        stage, status = await self._run(cmd.device_id, "report_stage", work)
        await self._record(cmd.device_id, status)
        return stage

    async def challenge(self, cmd: DeviceCommand) -> Challenge:
        """A fresh random challenge for the bureau's next package."""
        challenge = await self._run(cmd.device_id, "challenge", lambda d: d.challenge())
        await self._record(cmd.device_id, None)
        return challenge

    async def writeback(self, cmd: WritebackCommand) -> WritebackReply:
        """Write the bureau's package; a package already applied comes back in `already`."""
        if cmd.package.device_id != cmd.device_id:
            raise ClearCardError(ErrorCode.WRITEBACK_REJECTED,
                                 f"the package is for device {cmd.package.device_id}, not {cmd.device_id}")
        reply, status = await self._run(
            cmd.device_id, "writeback", lambda d: (d.writeback(cmd.package), _status_after(d)))
        await self._record(cmd.device_id, status)
        # the read-back travels with the answer: the caller verifies without asking again
        return reply.model_copy(update={"info": status.info}) if status is not None else reply

    def operations(self) -> dict[str, Operation]:
        """The RPC table: routing-key suffix -> request model and handler."""
        return {
            "info": Operation(DeviceCommand, self.info),
            "precheck": Operation(PeriodCommand, self.precheck),
            "read_period": Operation(PeriodCommand, self.read_period),
            "read_invoices": Operation(InvoicePageCommand, self.read_invoices, remember=False),
            "upload_offline": Operation(PeriodCommand, self.upload_offline),
            "report": Operation(PeriodCommand, self.report),
            "report_stage": Operation(ReportStageCommand, self.report_stage),
            "challenge": Operation(DeviceCommand, self.challenge),
            "writeback": Operation(WritebackCommand, self.writeback),
        }
