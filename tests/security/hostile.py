"""Malformed, oversized and hostile message bodies and headers, and the queues they go to."""

from __future__ import annotations

import json
from typing import Any

from shared.bus.topology import AUDIT, AUTH_REQUESTS, AUTHORITY, BACKUP, COORDINATOR_REQUESTS, gateway_queue
from shared.messages.codec import MAX_MESSAGE_BYTES

QUEUES = (AUTH_REQUESTS.name, COORDINATOR_REQUESTS.name, gateway_queue("default").name, BACKUP.name,
          AUTHORITY.name, AUDIT.name)
# the routing key each queue's consumer reads its operation from
ROUTING_KEYS = {
    AUTH_REQUESTS.name: "clear.request",
    COORDINATOR_REQUESTS.name: "clear.authorized",
    gateway_queue("default").name: "gateway.default.writeback",
    BACKUP.name: "backup.take",
    AUTHORITY.name: "authority.writeback_package",
    AUDIT.name: "audit.record",
}

_VALID_SHAPE: dict[str, Any] = {"request_id": "hostile-1", "branch_id": "wuhan-hankou", "period": "2026-10"}

BODIES: dict[str, bytes] = {
    "empty": b"",
    "not-json": b"\x00\xff\xfe garbage {",
    "invalid-utf8": b'{"request_id": "\xff\xfe"}',
    "json-array": b"[1, 2, 3]",
    "json-null": b"null",
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "oversized": json.dumps({**_VALID_SHAPE, "pad": "x" * (MAX_MESSAGE_BYTES + 10)}).encode(),
    "huge-number": b'{"request_id": "n", "branch_id": "b", "period": 1' + b"9" * 5000 + b"}",
    "wrong-types": json.dumps({"request_id": ["x"], "branch_id": {"$ne": 1}, "period": 202610,
                               "device_id": 123, "record_id": None, "backup_id": []}).encode(),
    "sql-injection": json.dumps({"request_id": "x'; DROP TABLE audit_log; --",
                                 "branch_id": "' OR '1'='1", "period": "2026-10",
                                 "device_id": "1' OR '1'='1", "record_id": "'); DELETE FROM devices; --",
                                 "service": "x", "subject": "x", "action": "x"}).encode(),
    "nul-and-surrogates": b'{"record_id": "a\\u0000b", "service": "\\ud800", "subject": "s", "action": "a",'
                          b' "request_id": "r\\u0000", "branch_id": "b", "period": "2026-10"}',
    "bad-period": json.dumps({**_VALID_SHAPE, "period": "2026-13"}).encode(),
    "bad-request-id": json.dumps({**_VALID_SHAPE, "request_id": "../../etc/passwd" + "x" * 80}).encode(),
    "bad-branch-id": json.dumps({**_VALID_SHAPE, "branch_id": "wuhan\nhankou\u202e"}).encode(),
    "too-many-devices": json.dumps({**_VALID_SHAPE, "device_ids": ["661500000001"] * 20_001}).encode()[:60_000],
    "unknown-invoice-type": json.dumps({**_VALID_SHAPE, "invoice_types": ["999"], "mode": "sideways"}).encode(),
    "duplicate-keys": b'{"request_id": "dup", "request_id": "dup2", "branch_id": "b", "period": "2026-10",'
                      b' "mode": "auto", "mode": "manual"}',
}

# headers a hostile publisher might send along (the consumer must not trip over their types)
HEADERS: list[dict[str, Any]] = [
    {},
    {"authorization": 12345},
    {"authorization": "Bearer " + "A" * 5000},
    {"authorization": "Bearer eyJhbGciOiJub25lIiwia2lkIjoiLi4vLi4vZXRjL3Bhc3N3ZCJ9.eyJzdWIiOiJ4In0."},
    {"authorization": "Basic Zm9vOmJhcg==", "traceparent": "00-zz-zz-zz"},
    {"x-delivery-count": "many", "traceparent": 7},
]


def messages() -> list[tuple[str, str, bytes, dict[str, Any]]]:
    """(queue, case name, body, headers) for every queue and body, headers varied."""
    found = []
    for q in QUEUES:
        for n, (name, body) in enumerate(sorted(BODIES.items())):
            found.append((q, name, body, HEADERS[n % len(HEADERS)]))
    return found
