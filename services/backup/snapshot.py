"""What a backup holds, as the documents of its chunks: the head, invoice batches, the end.

    head    {"format": 2, "manifest", "monitoring", "summaries", "device_record"}
    batch   {"invoices": [...]}              (at most INVOICES_PER_CHUNK each)
    end     {"end": {"invoice_count": N}}    (the final chunk)

The head comes first and is small, so a reader knows device, taxpayer, machine number and
period before any invoice; the end lets a reader prove it saw every invoice the manifest names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.backup.sealed import CopyDamaged
from shared.messages.device import PeriodHeader

FORMAT = 2
INVOICES_PER_CHUNK = 1000


def head_document(
    header: PeriodHeader,
    *,
    period: str,
    request_id: str,
    taken_at: datetime,
    device_record: dict[str, Any] | None,
) -> dict[str, Any]:
    """The first chunk: manifest, monitoring data, summaries and the product's device record."""
    info = header.info
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
            "invoice_count": sum(header.invoice_counts.values()),
            "invoice_counts": dict(header.invoice_counts),
            "invoice_types": sorted(info.types),
        },
        "summaries": [s.model_dump(mode="json") for s in header.summaries],
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


def invoices_document(invoices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"invoices": invoices}


def end_document(invoice_count: int) -> dict[str, Any]:
    return {"end": {"invoice_count": invoice_count}}


@dataclass(frozen=True)
class Head:
    """The first document of a backup."""

    manifest: dict[str, Any]
    monitoring: Any
    summaries: Any
    device_record: Any


def walk(documents: Iterator[dict[str, Any]]) -> Iterator[Head | list[dict[str, Any]]]:
    """The head, then each batch of invoices; raises CopyDamaged where the structure is wrong.

    It ends normally only after the end document, once the invoices seen match both the end's
    count and the manifest's.
    """
    first = next(documents, None)
    if first is None or not isinstance(first.get("manifest"), dict):
        raise CopyDamaged("does not begin with a manifest")
    manifest = first["manifest"]
    yield Head(manifest, first.get("monitoring"), first.get("summaries"), first.get("device_record"))
    seen = 0
    for document in documents:
        if "end" in document:
            end = document["end"]
            declared = end.get("invoice_count") if isinstance(end, dict) else None
            if declared != seen or manifest.get("invoice_count", seen) != seen:
                raise CopyDamaged(f"holds {seen} invoices, but its manifest names "
                                  f"{manifest.get('invoice_count')} and its end {declared}")
            if next(documents, None) is not None:
                raise CopyDamaged("has chunks after its end")
            return
        invoices = document.get("invoices")
        if not isinstance(invoices, list) or not all(isinstance(i, dict) for i in invoices):
            raise CopyDamaged("holds a chunk that is neither invoices nor the end")
        seen += len(invoices)
        yield invoices
    raise CopyDamaged("is truncated (its end is missing)")
