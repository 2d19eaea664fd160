"""What to tell people, from events (pure): failures of a clear and devices nearing their lock date."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Notice:
    key: str  # identifies the notification whatever channel carries it (dedupe)
    branch_id: str
    subject: str
    text: str
    payload: dict[str, Any] = field(default_factory=dict)


def failure_notices(event: dict[str, Any], branch_id: str) -> list[Notice]:
    """One notice per device that failed in a finished clear."""
    notices = []
    for result in event.get("results", []):
        if result.get("outcome") != "failed":
            continue
        error = result.get("error") or {}
        device_id = result["device_id"]
        notices.append(Notice(
            key=f"failed:{event['request_id']}:{device_id}", branch_id=branch_id,
            subject=f"[ClearCard] Clear failed for device {device_id} ({branch_id})",
            text=(f"The clear request {event['request_id']} could not clear device {device_id} of branch "
                  f"{branch_id}.\n\n{error.get('message', '')}\n\nError code: {error.get('code', '')}\n"
                  f"Trace id: {event.get('trace_id', '')}\n"),
            payload={"kind": "clear.failed", "request_id": event["request_id"], "branch_id": branch_id,
                     "device_id": device_id, "error": error, "trace_id": event.get("trace_id")}))
    return notices


def lock_notice(event: dict[str, Any]) -> Notice:
    """A device nears its lock date uncleared."""
    device_id, level = event["device_id"], event["level"]
    days = event["days_left"]
    return Notice(
        key=f"lock:{device_id}:{event['lock_date']}:{level}", branch_id=event["branch_id"],
        subject=f"[ClearCard] {level.upper()}: device {device_id} locks on {event['lock_date']}",
        text=(f"Device {device_id} of branch {event['branch_id']} is not cleared and locks on "
              f"{event['lock_date']} ({days} day(s) left). Once locked, only the tax office can unlock it.\n"
              f"Last result: {event.get('last_result') or 'none'}\n"),
        payload={"kind": "device.lock_warning", **{k: event[k] for k in
                 ("device_id", "branch_id", "lock_date", "days_left", "level")}})
