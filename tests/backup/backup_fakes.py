"""A fake gateway answering `read_period` and `read_invoices` for the backup tests, and the harness."""

from __future__ import annotations

from dataclasses import dataclass

from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.errors import ClearCardError, ErrorCode
from shared.messages.device import (
    DeviceInfo,
    Invoice,
    InvoicePage,
    InvoicePageCommand,
    Monitoring,
    PeriodCommand,
    PeriodHeader,
    TypeSummary,
)

DEVICE = "661500000001"
TAXPAYER = "91420100MA4K0001XX"
GATEWAY = "gw1"


def invoice_number(type_code: str, n: int) -> str:
    return f"8{type_code}{n:04d}"  # 8 digits, distinctive enough to search the stored files for


def _info(device_id: str) -> DeviceInfo:
    return DeviceInfo(
        device_id=device_id,
        family="ukey",
        taxpayer_id=TAXPAYER,
        machine_no=0,
        clock="2026-11-03T09:00:00+08:00",
        open_period="2026-10",
        types={"004": 0, "007": 0},
        offline_pending=0,
        pin_tries_left=5,
        monitoring=Monitoring(
            lock_date="2026-11-15",
            report_window_start="2026-11-01",
            report_window_end="2026-11-15",
            upload_deadline="2026-11-15",
            single_invoice_limit="99999.99",
            positive_cumulative_limit="1000000.00",
            negative_cumulative_limit="100000.00",
            offline_hours_limit=72,
            offline_amount_limit="50000.00",
        ),
    )


def invoices_of(type_code: str, count: int) -> list[Invoice]:
    return [Invoice(invoice_type=type_code, code=f"04200{type_code}", number=invoice_number(type_code, n),
                    issued_at="2026-10-12T10:00:00+08:00", amount="1000.00", tax="130.00")
            for n in range(1, count + 1)]


def summary_of(type_code: str, count: int) -> TypeSummary:
    return TypeSummary(invoice_type=type_code, period="2026-10", opening_stock=100 + count, bought=0,
                       closing_stock=100, normal_count=count, normal_amount=f"{1000 * count}.00",
                       normal_tax=f"{130 * count}.00", negative_count=0, negative_amount="0.00",
                       negative_tax="0.00", void_count=0, signature="")


@dataclass
class FakeGateway:
    """A gateway whose device holds `per_type` normal invoices of 004 and 007 (1,000.00 each).

    `fault` makes its pages lie the way a broken device could: `short` (the last page missing),
    `repeat` (the first page's invoices again as the second page), `summary` (the summary's amount off by a cent).
    """

    reads: int = 0
    pages: int = 0
    offline: bool = False
    per_type: int = 5
    page_limit: int | None = None  # at most this many invoices per page, whatever was asked
    fault: str | None = None

    async def read_period(self, command: PeriodCommand) -> PeriodHeader:
        self.reads += 1
        if self.offline:
            raise ClearCardError(ErrorCode.DEVICE_OFFLINE)
        summaries = [summary_of(t, self.per_type) for t in ("004", "007")]
        if self.fault == "summary":
            summaries[0] = summaries[0].model_copy(update={"normal_amount": f"{1000 * self.per_type}.01"})
        return PeriodHeader(info=_info(command.device_id), summaries=summaries,
                            invoice_counts={"004": self.per_type, "007": self.per_type})

    async def read_invoices(self, command: InvoicePageCommand) -> InvoicePage:
        self.pages += 1
        limit = min(command.limit, self.page_limit or command.limit)
        start = int(command.cursor or 0)
        end = min(start + limit, self.per_type)
        if self.fault == "short" and end == self.per_type:
            return InvoicePage(invoice_type=command.invoice_type, invoices=[])
        shown = 0 if self.fault == "repeat" and start == limit else start  # the first page again
        invoices = invoices_of(command.invoice_type, self.per_type)[shown:shown + end - start]
        return InvoicePage(invoice_type=command.invoice_type, invoices=invoices,
                           next_cursor=str(end) if end < self.per_type else None)


@dataclass
class Harness:
    bus: MemoryBus
    rpc: RpcClient
    gateway: FakeGateway
