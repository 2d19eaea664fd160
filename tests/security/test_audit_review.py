"""The auditors' anomaly report is a pure function over audit records."""

from __future__ import annotations

from typing import Any

from services.audit.review import anomalies


def rec(seq: int, at: str, action: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "at": at, "action": action, "subject": fields.pop("subject", "coordinator"),
            "detail": fields.pop("detail", {}), **fields}


def test_each_kind_of_anomaly_is_found() -> None:
    records = [
        # PIN refused for one device in two requests
        rec(1, "2026-11-02T01:00:00+00:00", "device.finished", device_id="661500000001", request_id="a",
            outcome="failed", error_code="DEVICE_PIN_INVALID"),
        rec(2, "2026-11-02T02:00:00+00:00", "device.finished", device_id="661500000001", request_id="b",
            outcome="failed", error_code="DEVICE_PIN_INVALID"),
        # a manual clear accepted at 23:30 China time (15:30 UTC), written back on the 20th
        rec(3, "2026-11-20T15:30:00+00:00", "clear.accepted", request_id="m", subject="li.wei",
            detail={"mode": "manual", "period": "2026-10"}),
        rec(4, "2026-11-20T15:31:00+00:00", "step.written_back", request_id="m", device_id="539900000004"),
        # a normal clear in the window: no anomaly
        rec(5, "2026-11-03T01:00:00+00:00", "clear.accepted", request_id="ok", detail={"mode": "auto",
                                                                                     "period": "2026-10"}),
        rec(6, "2026-11-03T01:05:00+00:00", "step.written_back", request_id="ok", device_id="661500000001"),
    ]
    # five refusals of one subject within three minutes
    records += [rec(10 + n, f"2026-11-03T02:0{n}:00+00:00", "clear.rejected", subject="mallory",
                    outcome="rejected", error_code="AUTH_INVALID") for n in range(5)]
    found = anomalies(records)
    kinds = [(a.kind, a.device_id or a.subject) for a in found]
    assert ("pin_failures", "661500000001") in kinds
    assert ("manual_clear_at_night", "li.wei") in kinds
    assert ("outside_reporting_window", "539900000004") in kinds
    assert ("rejection_burst", "mallory") in kinds
    assert len(found) == 4
    burst = next(a for a in found if a.kind == "rejection_burst")
    assert burst.seqs == [10, 11, 12, 13, 14]


def test_quiet_log_has_no_anomalies() -> None:
    records = [rec(n, f"2026-11-03T0{n}:00:00+00:00", "clear.rejected", subject="x", outcome="rejected",
                   error_code="PERMISSION_DENIED") for n in range(1, 5)]
    assert anomalies(records) == []
