"""Reading a device's period from its gateway: the header, then the invoices page by page.

No page is more than one bus message, and only one is held at a time. Across pages this checks
what the gateway cannot see on one page: every type's invoices come in strictly increasing
(code, number) order with no page repeated, they add up to the count the device announced,
and their counts and amounts add up to the type's period summary (what is reported to the
bureau). A device whose pages do not add up fails the backup; nothing partial is ever kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import trio

from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.errors import RETRIED_AT_ONCE, ClearCardError, ErrorCode
from shared.messages.backup import TakeBackup
from shared.messages.device import (
    PAGE_INVOICES,
    Invoice,
    InvoicePage,
    InvoicePageCommand,
    PeriodCommand,
    PeriodHeader,
    TypeSummary,
)
from shared.paging import page_problem

HEADER_TIMEOUT = 120.0  # the device computes its summaries over the whole period
PAGE_TIMEOUT = 60.0
PAGE_ATTEMPTS = 3  # a page is a plain read: a lost or busy one is asked for again


def _failed(message: str) -> ClearCardError:
    return ClearCardError(ErrorCode.BACKUP_FAILED, message)


async def read_header(rpc: RpcClient, msg: TakeBackup) -> PeriodHeader:
    """The period's header from the device's gateway; device errors pass through as they are."""
    command = PeriodCommand(device_id=msg.device_id, period=msg.period, request_id=msg.request_id)
    try:
        with trio.fail_after(HEADER_TIMEOUT):
            header = await rpc.call(COMMANDS, gateway_routing_key(msg.gateway_id, "read_period"), command,
                                    PeriodHeader)
    except trio.TooSlowError:
        raise ClearCardError(
            ErrorCode.TIMEOUT, f"gateway {msg.gateway_id} did not return the device's period in time"
        ) from None
    if header.info.device_id != msg.device_id:
        raise _failed(f"the gateway answered for device {header.info.device_id}, not {msg.device_id}")
    summarized = {s.invoice_type for s in header.summaries}
    if summarized != set(header.invoice_counts) or not summarized <= set(header.info.types):
        raise _failed(f"device {msg.device_id} described its period inconsistently: summaries of "
                      f"{sorted(summarized)}, invoice counts of {sorted(header.invoice_counts)}")
    return header


async def _page(rpc: RpcClient, msg: TakeBackup, command: InvoicePageCommand) -> InvoicePage:
    key = gateway_routing_key(msg.gateway_id, "read_invoices")
    delay = 0.5
    for attempt in range(1, PAGE_ATTEMPTS + 1):
        try:
            with trio.fail_after(PAGE_TIMEOUT):
                return await rpc.call(COMMANDS, key, command, InvoicePage)
        except trio.TooSlowError:
            error = ClearCardError(ErrorCode.TIMEOUT, f"gateway {msg.gateway_id} did not return a page "
                                                      f"of device {msg.device_id}'s invoices in time")
        except ClearCardError as exc:
            error = exc
        if error.code not in RETRIED_AT_ONCE or attempt == PAGE_ATTEMPTS:
            raise error
        await trio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


@dataclass
class _Tally:
    """One type's invoices as they pass: how many of each kind, their amounts, the last key."""

    summary: TypeSummary
    count: int = 0
    last: tuple[str, str] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"normal": 0, "negative": 0, "void": 0})
    amounts: dict[str, Decimal] = field(default_factory=lambda: {"normal": Decimal(0), "negative": Decimal(0)})
    taxes: dict[str, Decimal] = field(default_factory=lambda: {"normal": Decimal(0), "negative": Decimal(0)})

    def add(self, invoices: list[Invoice]) -> str | None:
        """Count a page in; returns what is wrong with it across pages, if anything."""
        if invoices and self.last is not None and (invoices[0].code, invoices[0].number) <= self.last:
            return f"a page starts at invoice {invoices[0].code}/{invoices[0].number}, not after " \
                   f"{self.last[0]}/{self.last[1]} (a page repeated or out of order)"
        for invoice in invoices:
            self.counts[invoice.kind] += 1
            if invoice.kind != "void":
                self.amounts[invoice.kind] += Decimal(invoice.amount)
                self.taxes[invoice.kind] += Decimal(invoice.tax)
        self.count += len(invoices)
        if invoices:
            self.last = (invoices[-1].code, invoices[-1].number)
        return None

    def mismatch(self) -> str | None:
        """Where the invoices disagree with the type's summary, if anywhere."""
        s = self.summary
        expected = {
            "normal invoices": (s.normal_count, self.counts["normal"]),
            "negative invoices": (s.negative_count, self.counts["negative"]),
            "void invoices": (s.void_count, self.counts["void"]),
            "normal amount": (Decimal(s.normal_amount), self.amounts["normal"]),
            "normal tax": (Decimal(s.normal_tax), self.taxes["normal"]),
            "negative amount": (Decimal(s.negative_amount), self.amounts["negative"]),
            "negative tax": (Decimal(s.negative_tax), self.taxes["negative"]),
        }
        wrong = [f"{what} {got} (summary {want})" for what, (want, got) in expected.items() if want != got]
        return "; ".join(wrong) or None


async def invoice_pages(rpc: RpcClient, msg: TakeBackup, header: PeriodHeader,
                        limit: int = PAGE_INVOICES) -> AsyncIterator[list[Invoice]]:
    """Every invoice of the period, one checked page at a time, type after type."""
    summaries = {s.invoice_type: s for s in header.summaries}
    for invoice_type, expected in header.invoice_counts.items():
        tally = _Tally(summaries[invoice_type])
        cursor: str | None = None
        while True:
            command = InvoicePageCommand(device_id=msg.device_id, request_id=msg.request_id, period=msg.period,
                                         invoice_type=invoice_type, cursor=cursor, limit=limit)
            page = await _page(rpc, msg, command)
            problem = page_problem(command, page) or tally.add(page.invoices)
            if problem is None and tally.count > expected:
                problem = f"it gave more than the {expected} invoices it announced"
            if problem is not None:
                raise _failed(f"device {msg.device_id}, type {invoice_type}: {problem}")
            yield page.invoices
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        if tally.count != expected:
            raise _failed(f"device {msg.device_id}, type {invoice_type}: it gave {tally.count} of the "
                          f"{expected} invoices it announced")
        mismatch = tally.mismatch()
        if mismatch is not None:
            raise _failed(f"device {msg.device_id}, type {invoice_type}: its invoices do not add up to "
                          f"its period summary: {mismatch}")
