"""The auditors' review: anomalies found in audit records. A pure function, no I/O.

Records are the documents `export`/`search` return (or AuditRecord dumps): `at`, `subject`,
`action`, `request_id`, `device_id`, `branch_id`, `outcome`, `error_code`, `detail`. Times are
judged in China time (UTC+8), where the devices and the reporting window live.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.china_time import CHINA

PIN_ERRORS = frozenset({"DEVICE_PIN_INVALID", "DEVICE_PIN_LOCKED"})
REFUSALS = frozenset({"rejected", "failed", "refused"})
# where a refusal is about *who* asked (auth), not about a device or the bureau
AUTH_ERRORS = frozenset({"AUTH_REQUIRED", "AUTH_INVALID", "PERMISSION_DENIED", "INVALID_REQUEST"})


@dataclass(frozen=True)
class Rules:
    """Thresholds of the review; the defaults suit a monthly clear run."""

    pin_failures: int = 2  # this many PIN failures of one device (distinct requests) is an anomaly
    window_end_day: int = 15  # the reporting window closes on this day (later in holiday months)
    night_start_hour: int = 22
    night_end_hour: int = 6
    burst_count: int = 5  # this many refusals of one subject ...
    burst_window: timedelta = timedelta(minutes=10)  # ... within this long is a burst


@dataclass(frozen=True)
class Anomaly:
    kind: str  # pin_failures | outside_reporting_window | manual_clear_at_night | rejection_burst
    message: str
    at: str  # ISO time of the (first) record concerned
    subject: str | None = None
    device_id: str | None = None
    request_id: str | None = None
    branch_id: str | None = None
    seqs: list[int] = field(default_factory=list)  # the records that show it

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _at(record: Mapping[str, Any]) -> datetime:
    value = record["at"]
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _seq(record: Mapping[str, Any]) -> list[int]:
    return [int(record["seq"])] if record.get("seq") is not None else []


def _closed_period(day: date) -> str:
    """The period a clear on `day` (China date) may report: the month before."""
    first = day.replace(day=1) - timedelta(days=1)
    return f"{first.year:04d}-{first.month:02d}"


def pin_failures(records: list[Mapping[str, Any]], rules: Rules) -> list[Anomaly]:
    """Devices whose PIN was refused in `rules.pin_failures` or more requests: each burns a try."""
    by_device: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for r in records:
        if r.get("error_code") in PIN_ERRORS and r.get("device_id"):
            by_device[r["device_id"]].setdefault(r.get("request_id") or str(r.get("record_id")), r)
    found = []
    for device_id, failures in sorted(by_device.items()):
        if len(failures) >= rules.pin_failures:
            rows = sorted(failures.values(), key=_at)
            found.append(Anomaly(
                "pin_failures",
                f"device {device_id}: the certificate PIN was refused in {len(rows)} requests; "
                "each used one of the device's few tries — correct the PIN on record",
                _at(rows[0]).isoformat(), device_id=device_id, branch_id=rows[0].get("branch_id"),
                seqs=[s for r in rows for s in _seq(r)]))
    return found


def _requests(records: list[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The accepted (or authorized) record of each request: its period and mode are in `detail`."""
    found: dict[str, Mapping[str, Any]] = {}
    for r in records:
        if r.get("action") not in ("clear.accepted", "clear.authorized") or not r.get("request_id"):
            continue
        if r["action"] == "clear.accepted" or r["request_id"] not in found:
            found[r["request_id"]] = r
    return found


def outside_window(records: list[Mapping[str, Any]], rules: Rules) -> list[Anomaly]:
    """Write-backs applied after the window closed, or for a period that is not the one just closed."""
    requests = _requests(records)
    found = []
    for r in records:
        if r.get("action") != "step.written_back":
            continue
        day = _at(r).astimezone(CHINA).date()
        accepted = requests.get(r.get("request_id") or "")
        period = ((accepted or {}).get("detail") or {}).get("period")
        reasons = []
        if day.day > rules.window_end_day:
            reasons.append(f"on day {day.day}, after the window closed on the {rules.window_end_day}th")
        if period and period != _closed_period(day):
            reasons.append(f"for period {period}, while the period open for reporting was {_closed_period(day)}")
        if reasons:
            found.append(Anomaly(
                "outside_reporting_window",
                f"device {r.get('device_id')} was cleared {' and '.join(reasons)}",
                _at(r).isoformat(), subject=r.get("subject"), device_id=r.get("device_id"),
                request_id=r.get("request_id"), branch_id=r.get("branch_id"), seqs=_seq(r)))
    return found


def manual_at_night(records: list[Mapping[str, Any]], rules: Rules) -> list[Anomaly]:
    """Manual clears accepted between 22:00 and 06:00 China time."""
    found = []
    for request_id, r in sorted(_requests(records).items()):
        detail = r.get("detail") or {}
        if detail.get("mode") != "manual" or detail.get("preview"):
            continue
        local = _at(r).astimezone(CHINA)
        if local.hour >= rules.night_start_hour or local.hour < rules.night_end_hour:
            found.append(Anomaly(
                "manual_clear_at_night",
                f"{r.get('subject')} started manual clear {request_id} at {local:%H:%M} China time",
                _at(r).isoformat(), subject=r.get("subject"), request_id=request_id,
                branch_id=r.get("branch_id"), seqs=_seq(r)))
    return found


def _is_refusal(r: Mapping[str, Any]) -> bool:
    if r.get("outcome") not in REFUSALS:
        return False
    return r.get("error_code") in AUTH_ERRORS or str(r.get("action", "")).startswith("auth.")


def rejection_bursts(records: list[Mapping[str, Any]], rules: Rules) -> list[Anomaly]:
    """Subjects refused `burst_count` times within `burst_window` (guessing passwords or tokens,
    probing branches). One anomaly per burst; the burst ends where the gap exceeds the window."""
    by_subject: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if _is_refusal(r):
            by_subject[str(r.get("subject"))].append(r)
    found = []
    for subject, rows in sorted(by_subject.items()):
        rows.sort(key=_at)
        start = 0
        while start < len(rows):
            end = start
            while end + 1 < len(rows) and _at(rows[end + 1]) - _at(rows[start]) <= rules.burst_window:
                end += 1
            count = end - start + 1
            if count >= rules.burst_count:
                span = _at(rows[end]) - _at(rows[start])
                found.append(Anomaly(
                    "rejection_burst",
                    f"{subject} was refused {count} times within {int(span.total_seconds())} s",
                    _at(rows[start]).isoformat(), subject=subject,
                    seqs=[s for r in rows[start:end + 1] for s in _seq(r)]))
                start = end + 1
            else:
                start += 1
    return found


def anomalies(records: Iterable[Mapping[str, Any]], rules: Rules | None = None) -> list[Anomaly]:
    """Every anomaly in the records, ordered by time."""
    rows = list(records)
    rules = rules or Rules()
    found = (pin_failures(rows, rules) + outside_window(rows, rules) + manual_at_night(rows, rules)
             + rejection_bursts(rows, rules))
    return sorted(found, key=lambda a: (a.at, a.kind))
