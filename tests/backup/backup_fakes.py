"""A fake gateway answering `read_period` for the backup tests, and the test harness."""

from __future__ import annotations

from dataclasses import dataclass

from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.errors import ClearCardError, ErrorCode
from shared.messages.device import DeviceInfo, Invoice, Monitoring, PeriodCommand, PeriodData, TypeSummary

DEVICE = "661500000001"
TAXPAYER = "91420100MA4K0001XX"
GATEWAY = "gw1"


def invoice_number(type_code: str, n: int) -> str:
    return f"8{type_code}{n:04d}"  # 8 digits, distinctive enough to search the stored files for


def period_data(device_id: str = DEVICE) -> PeriodData:
    info = DeviceInfo(
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
    invoices = [
        Invoice(invoice_type=t, code=f"04200{t}", number=invoice_number(t, n),
                issued_at="2026-10-12T10:00:00+08:00", amount="1000.00", tax="130.00")
        for t in ("004", "007") for n in range(1, 6)
    ]
    summaries = [
        TypeSummary(invoice_type=t, period="2026-10", opening_stock=100, bought=0, closing_stock=95,
                    normal_count=5, normal_amount="5000.00", normal_tax="650.00", negative_count=0,
                    negative_amount="0.00", negative_tax="0.00", void_count=0, signature="")
        for t in ("004", "007")
    ]
    return PeriodData(info=info, invoices=invoices, summaries=summaries)


@dataclass
class FakeGateway:
    reads: int = 0
    offline: bool = False

    async def read_period(self, command: PeriodCommand) -> PeriodData:
        self.reads += 1
        if self.offline:
            raise ClearCardError(ErrorCode.DEVICE_OFFLINE)
        return period_data(command.device_id)


@dataclass
class Harness:
    bus: MemoryBus
    rpc: RpcClient
    gateway: FakeGateway
