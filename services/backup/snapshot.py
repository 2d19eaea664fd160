"""What a backup holds: the device's period as the gateway read it plus the product's own record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.messages.device import PeriodData

FORMAT = 1


def build_snapshot(
    data: PeriodData,
    *,
    period: str,
    request_id: str,
    taken_at: datetime,
    device_record: dict[str, Any] | None,
) -> dict[str, Any]:
    """The snapshot's plain structure (encrypted before it is stored anywhere)."""
    info = data.info
    return {
        "format": FORMAT,
        "manifest": {
            "device_id": info.device_id,
            "taxpayer_id": info.taxpayer_id,
            "machine_no": info.machine_no,
            "family": info.family,
            "period": period,
            "taken_at": taken_at.isoformat(),
            "request_id": request_id,
            "invoice_count": len(data.invoices),
            "invoice_types": sorted(info.types),
        },
        "invoices": [i.model_dump(mode="json") for i in data.invoices],
        "summaries": [s.model_dump(mode="json") for s in data.summaries],
        "monitoring": {
            **info.monitoring.model_dump(mode="json"),
            "types": dict(info.types),
            "open_period": info.open_period,
            "offline_pending": info.offline_pending,
            "pin_tries_left": info.pin_tries_left,
            "device_clock": info.clock,
        },
        "device_record": device_record,
    }
