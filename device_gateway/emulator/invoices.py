"""The invoices an emulated device issued in a period and its signed summary (pure).

Invoices are generated deterministically from the device id, period and type, so the device
"holds" them without storing them; offline-issued invoices are extra invoices of the first type.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from device_gateway.emulator.clock import CST, parse_period
from device_gateway.emulator.state import DeviceState
from shared.writeback_package import emulated_device_key

_CENT = Decimal("0.01")
_TAX_RATE = {"004": Decimal("0.13"), "028": Decimal("0.13"), "005": Decimal("0.13")}
_DEFAULT_RATE = Decimal("0.06")


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


def _issued_at(rng: random.Random, period: str) -> str:
    y, m = parse_period(period)
    first = date(y, m, 1)
    day = first + timedelta(days=rng.randrange(28))
    moment = datetime.combine(day, time(9), CST) + timedelta(seconds=rng.randrange(9 * 3600))
    return moment.isoformat()


def period_invoices(state: DeviceState, period: str, invoice_type: str) -> list[GeneratedInvoice]:
    """Every invoice of one type the device issued in `period`, in number order."""
    rng = _rng(state.device_id, period, invoice_type)
    count = state.invoices_per_type
    offline = 0
    if period == state.open_period and state.invoice_types and invoice_type == state.invoice_types[0]:
        offline = state.offline_total
    y, _ = parse_period(period)
    code = f"42{y % 100:02d}{invoice_type}{state.machine_no % 1000:03d}"  # 10-digit 发票代码
    start = rng.randrange(1, 90_000_000)
    rate = _TAX_RATE.get(invoice_type, _DEFAULT_RATE)
    out = []
    for index in range(count + offline):
        amount = (Decimal(rng.randrange(1_000, 5_000_000)) / 100).quantize(_CENT)
        kind = "void" if index % 10 == 9 else "negative" if index % 10 == 6 else "normal"
        if kind == "negative":
            amount = -amount
        out.append(GeneratedInvoice(
            invoice_type=invoice_type,
            code=code,
            number=f"{start + index:08d}",
            issued_at=_issued_at(rng, period),
            amount=amount,
            tax=(amount * rate).quantize(_CENT),
            kind=kind,
            offline=index >= count,
        ))
    return out


def build_summary(state: DeviceState, period: str, invoice_type: str) -> dict[str, Any]:
    """The period summary (抄税) of one type, unsigned (signature empty)."""
    invoices = period_invoices(state, period, invoice_type)
    rng = _rng(state.device_id, period, invoice_type, "stock")
    bought = 100 * rng.randrange(0, 3)
    opening = len(invoices) + rng.randrange(50, 500)

    def total(kind: str, field: str) -> str:
        return str(sum((getattr(i, field) for i in invoices if i.kind == kind), Decimal("0.00")))

    return {
        "invoice_type": invoice_type,
        "period": period,
        "opening_stock": opening,
        "bought": bought,
        "closing_stock": opening + bought - len(invoices),
        "normal_count": sum(1 for i in invoices if i.kind == "normal"),
        "normal_amount": total("normal", "amount"),
        "normal_tax": total("normal", "tax"),
        "negative_count": sum(1 for i in invoices if i.kind == "negative"),
        "negative_amount": total("negative", "amount"),
        "negative_tax": total("negative", "tax"),
        "void_count": sum(1 for i in invoices if i.kind == "void"),
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
