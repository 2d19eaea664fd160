"""What to tell people, from events (pure): a summary per request, failures, lock-date escalation
and abandoned devices.

A notice names the channels it goes to: the summary reaches email and webhooks; each failed
device also reaches webhooks as its own `clear.failed` (contract §2), and email too when the
branch takes no summaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Summaries = Literal["all", "problems", "none"]
BOTH = frozenset({"email", "webhook"})
WEBHOOK = frozenset({"webhook"})
AWAITING = "COMPARISON_PENDING"  # not a failure of the return: the bureau is still comparing


@dataclass(frozen=True)
class Notice:
    key: str  # identifies the notification whatever channel carries it (dedupe)
    branch_id: str
    subject: str
    text: str
    payload: dict[str, Any] = field(default_factory=dict)
    channels: frozenset[str] = BOTH


def _line(result: dict[str, Any]) -> str:
    error = result.get("error") or {}
    if result.get("outcome") == "failed" and error.get("code") == AWAITING:
        return f"  {result['device_id']}: awaiting the bureau's comparison — {error.get('message', '')}"
    if error:
        return f"  {result['device_id']}: {result['outcome']} — {error.get('code')}: {error.get('message', '')}"
    return f"  {result['device_id']}: {result['outcome']}"


def summary_notice(event: dict[str, Any], branch_id: str, period: str, summaries: Summaries) -> Notice | None:
    """One summary of a finished request, or None when the branch does not take this one."""
    results = event.get("results", [])
    if summaries == "none" or (summaries == "problems" and event.get("status") == "succeeded") or not results:
        return None
    counts: dict[str, int] = {}
    for r in results:
        word = "awaiting" if (r.get("error") or {}).get("code") == AWAITING else str(r.get("outcome"))
        counts[word] = counts.get(word, 0) + 1
    tally = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
    request_id = event["request_id"]
    return Notice(
        key=f"summary:{request_id}", branch_id=branch_id,
        subject=f"[ClearCard] {branch_id} {period}: {tally}",
        text=(f"Clear request {request_id} for branch {branch_id}, period {period}, finished "
              f"{event.get('status')}.\n\n" + "\n".join(_line(r) for r in results)
              + f"\n\nTrace id: {event.get('trace_id', '')}\n"),
        payload={"kind": "clear.summary", "request_id": request_id, "branch_id": branch_id, "period": period,
                 "status": event.get("status"), "counts": counts, "results": results,
                 "trace_id": event.get("trace_id")})


def failure_notices(event: dict[str, Any], branch_id: str, summaries: Summaries = "none") -> list[Notice]:
    """One notice per device that failed (or awaits the bureau) in a finished clear."""
    notices = []
    for result in event.get("results", []):
        if result.get("outcome") != "failed":
            continue
        error = result.get("error") or {}
        device_id = result["device_id"]
        awaiting = error.get("code") == AWAITING
        kind = "clear.awaiting" if awaiting else "clear.failed"
        notices.append(Notice(
            key=f"{'awaiting' if awaiting else 'failed'}:{event['request_id']}:{device_id}", branch_id=branch_id,
            subject=(f"[ClearCard] Awaiting the bureau for device {device_id} ({branch_id})" if awaiting
                     else f"[ClearCard] Clear failed for device {device_id} ({branch_id})"),
            text=(f"The clear request {event['request_id']} could not clear device {device_id} of branch "
                  f"{branch_id}.\n\n{error.get('message', '')}\n\nError code: {error.get('code', '')}\n"
                  f"Trace id: {event.get('trace_id', '')}\n"),
            payload={"kind": kind, "request_id": event["request_id"], "branch_id": branch_id,
                     "device_id": device_id, "error": error, "trace_id": event.get("trace_id")},
            # with summaries the email carries every device already; webhooks get each failure
            channels=BOTH if summaries == "none" else WEBHOOK))
    return notices


def lock_notice(event: dict[str, Any]) -> Notice:
    """A device nears its lock date uncleared: `warning` first, then `critical` (shared/deadlines.py)."""
    device_id, level = event["device_id"], event["level"]
    days = event["days_left"]
    urgency = ("This is the second and last warning." if level == "critical"
               else "A critical alarm follows if it is still not cleared closer to the date.")
    return Notice(
        key=f"lock:{device_id}:{event['lock_date']}:{level}", branch_id=event["branch_id"],
        subject=f"[ClearCard] {level.upper()}: device {device_id} locks on {event['lock_date']} ({days} day(s) left)",
        text=(f"Device {device_id} of branch {event['branch_id']} is not cleared and locks on "
              f"{event['lock_date']} ({days} day(s) left). Once locked, only the tax office can unlock it.\n"
              f"{urgency}\nLast result: {event.get('last_result') or 'none'}\n"),
        payload={"kind": "device.lock_warning", **{k: event[k] for k in
                 ("device_id", "branch_id", "lock_date", "days_left", "level")},
                 "last_result": event.get("last_result")})


def abandoned_notice(event: dict[str, Any]) -> Notice:
    """A device has not been reported for ~90 days: someone must find it, or retire it."""
    device_id = event["device_id"]
    return Notice(
        key=f"abandoned:{device_id}:{event['last_report']}", branch_id=event["branch_id"],
        subject=f"[ClearCard] Device {device_id} looks abandoned (no report for {event['days_since']} days)",
        text=(f"Device {device_id} of branch {event['branch_id']} has not been reported since "
              f"{event['last_report']} ({event['days_since']} days; open period {event.get('open_period')}). "
              "It is treated as abandoned: it is locked at the tax office's side if it passed its lock date. "
              "Find it and have the tax office unlock it, or retire it (`clearcard device retire`).\n"),
        payload={"kind": "device.abandoned", **{k: event.get(k) for k in
                 ("device_id", "branch_id", "open_period", "last_report", "days_since", "lock_date")}})
