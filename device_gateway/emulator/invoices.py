"""The invoices an emulated device issued in a period and its signed summary (pure).

Invoices are generated deterministically from the device id, period, type and the invoice's
index, so the device "holds" them without storing them and can produce any page of a period
on its own: memory follows the page, never the period. Offline-issued invoices are extra
invoices of the first type, numbered after the others.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from device_gateway.emulator.clock import parse_period
from device_gateway.emulator.state import DeviceState
from shared.china_time import CHINA
from shared.writeback_package import emulated_device_key

_CENT = Decimal("0.01")
_TAX_RATE = {"004": Decimal("0.13"), "028": Decimal("0.13"), "005": Decimal("0.13")}
_DEFAULT_RATE = Decimal("0.06")
_WORKDAY_SECONDS = 9 * 3600


@dataclass(frozen=True)
class GeneratedInvoice:
    invoice_type: str
    code: str
    number: str
    issued_at: str
    amount: Decimal
    tax: Decimal
    kind: str  # normal | negative | void
    offline: bool

    def as_dict(self) -> dict[str, Any]:
        """The invoice as the device sends it (amounts as decimal strings)."""
        return {
            "invoice_type": self.invoice_type, "code": self.code, "number": self.number,
            "issued_at": self.issued_at, "amount": str(self.amount), "tax": str(self.tax),
            "kind": self.kind, "offline": self.offline,
        }


def _rng(*parts: object) -> random.Random:
    seed = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


@dataclass(frozen=True)
class InvoiceBook:
    """One type's invoices of one period: what it takes to produce any one of them alone."""

    device_id: str
    period: str
    invoice_type: str
    code: str  # 10-digit 发票代码
    first_number: int
    issued: int  # invoices issued online
    offline: int  # ... plus these, issued offline, numbered after them
    rate: Decimal

    @property
    def count(self) -> int:
        return self.issued + self.offline


def offline_issued(state: DeviceState, period: str, invoice_type: str) -> int:
    """How many invoices of this type the device issued offline in `period`."""
    if not state.invoice_types or invoice_type != state.invoice_types[0]:
        return 0
    if period == state.open_period:
        return state.offline_total
    return state.offline_closed.get(period, 0)


def invoice_book(state: DeviceState, period: str, invoice_type: str) -> InvoiceBook:
    """The book of one type in one period."""
    y, _ = parse_period(period)
    return InvoiceBook(
        device_id=state.device_id,
        period=period,
        invoice_type=invoice_type,
        code=f"42{y % 100:02d}{invoice_type}{state.machine_no % 1000:03d}",
        first_number=_rng(state.device_id, period, invoice_type).randrange(1, 90_000_000),
        issued=state.invoices_per_type,
        offline=offline_issued(state, period, invoice_type),
        rate=_TAX_RATE.get(invoice_type, _DEFAULT_RATE),
    )


def invoice_at(book: InvoiceBook, index: int) -> GeneratedInvoice:
    """The book's invoice number `index` (0-based, in number order)."""
    digest = hashlib.sha256(f"{book.device_id}|{book.period}|{book.invoice_type}|{index}".encode()).digest()
    amount = (Decimal(1_000 + int.from_bytes(digest[0:4], "big") % 4_999_000) / 100).quantize(_CENT)
    kind = "void" if index % 10 == 9 else "negative" if index % 10 == 6 else "normal"
    if kind == "negative":
        amount = -amount
    y, m = parse_period(book.period)
    day = date(y, m, 1) + timedelta(days=digest[4] % 28)
    moment = datetime.combine(day, time(9), CHINA) + timedelta(
        seconds=int.from_bytes(digest[5:8], "big") % _WORKDAY_SECONDS)
    return GeneratedInvoice(
        invoice_type=book.invoice_type,
        code=book.code,
        number=f"{book.first_number + index:08d}",
        issued_at=moment.isoformat(),
        amount=amount,
        tax=(amount * book.rate).quantize(_CENT),
        kind=kind,
        offline=index >= book.issued,
    )


def iter_invoices(book: InvoiceBook, start: int = 0, stop: int | None = None) -> Iterator[GeneratedInvoice]:
    """The book's invoices from `start` up to `stop` (default: the end), one at a time."""
    end = book.count if stop is None else min(stop, book.count)
    for index in range(max(start, 0), end):
        yield invoice_at(book, index)


def period_invoices(state: DeviceState, period: str, invoice_type: str) -> list[GeneratedInvoice]:
    """Every invoice of one type the device issued in `period`, in number order (small periods only)."""
    return list(iter_invoices(invoice_book(state, period, invoice_type)))


def build_summary(state: DeviceState, period: str, invoice_type: str) -> dict[str, Any]:
    """The period summary (抄税) of one type, unsigned (signature empty); one pass, no list."""
    book = invoice_book(state, period, invoice_type)
    counts = {"normal": 0, "negative": 0, "void": 0}
    amounts = {"normal": Decimal("0.00"), "negative": Decimal("0.00")}
    taxes = {"normal": Decimal("0.00"), "negative": Decimal("0.00")}
    for invoice in iter_invoices(book):
        counts[invoice.kind] += 1
        if invoice.kind != "void":
            amounts[invoice.kind] += invoice.amount
            taxes[invoice.kind] += invoice.tax
    rng = _rng(state.device_id, period, invoice_type, "stock")
    bought = 100 * rng.randrange(0, 3)
    opening = book.count + rng.randrange(50, 500)
    return {
        "invoice_type": invoice_type,
        "period": period,
        "opening_stock": opening,
        "bought": bought,
        "closing_stock": opening + bought - book.count,
        "normal_count": counts["normal"],
        "normal_amount": str(amounts["normal"]),
        "normal_tax": str(taxes["normal"]),
        "negative_count": counts["negative"],
        "negative_amount": str(amounts["negative"]),
        "negative_tax": str(taxes["negative"]),
        "void_count": counts["void"],
        "signature": "",
    }


def summary_signature(device_id: str, taxpayer_id: str, summary: dict[str, Any]) -> str:
    """HMAC-SHA256 with the emulated device key over the summary's canonical JSON."""
    body = {k: v for k, v in summary.items() if k != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(emulated_device_key(device_id, taxpayer_id), canonical, hashlib.sha256).hexdigest()


def signed_summary(state: DeviceState, period: str, invoice_type: str) -> dict[str, Any]:
    """The summary of one type, signed by the device."""
    summary = build_summary(state, period, invoice_type)
    summary["signature"] = summary_signature(state.device_id, state.taxpayer_id, summary)
    return summary
