"""What the gateway needs from a device driver (one per family; vendors plug in their own).

Drivers are synchronous (pyusb blocks): the device actor calls them from a worker thread, one
call at a time per device. Every method raises ClearCardError, never a library exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from shared.messages.device import (
    Challenge,
    DeviceInfo,
    InvoicePage,
    OfflineUpload,
    PeriodHeader,
    ReportReply,
    WritebackPackage,
    WritebackReply,
)


@dataclass(frozen=True)
class DeviceStatus:
    """INFO: the device's own description plus its health flags."""

    info: DeviceInfo
    clock_abnormal: bool
    locked: bool


class DeviceDriver(Protocol):
    """One open device of one family."""

    family: ClassVar[str]
    vendor_id: ClassVar[int]
    product_id: ClassVar[int]

    def __init__(self, backend: Any, device_id: str) -> None: ...

    @property
    def is_open(self) -> bool: ...

    def set_deadline(self, deadline: float) -> None:
        """Bound every following transfer by this `time.monotonic()` instant."""

    def open(self) -> None:
        """Find the device by ids and serial, configure it and claim its interface."""

    def close(self) -> None:
        """Release the interface and the handle; never raises."""

    def info(self) -> DeviceStatus: ...

    def verify_pin(self, pin: str) -> int:
        """Verify the certificate PIN; returns the tries left. A wrong PIN costs one try."""

    def read_period(self, period: str, invoice_types: list[str]) -> PeriodHeader:
        """The period's summaries and invoice counts per type, without the invoices."""

    def read_invoices(self, period: str, invoice_type: str, cursor: str | None, limit: int) -> InvoicePage:
        """One page (at most `limit`) of one type's invoices: one device command, never the period."""

    def upload_offline(self, period: str) -> OfflineUpload: ...

    def report(self, period: str, invoice_types: list[str]) -> ReportReply: ...

    def challenge(self) -> Challenge: ...

    def write_clock(self, clock_block: str) -> str: ...

    def writeback(self, package: WritebackPackage) -> WritebackReply:
        """Write a write-back package (after its clock block where the family needs one)."""
